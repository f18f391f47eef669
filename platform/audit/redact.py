"""Secrets never enter the audit log: any field whose name looks secret is replaced."""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# Whole words only (``_`` and ``-`` separate words): ``db_password`` and ``X-Api-Key`` are secret,
# ``bypass_paths`` and ``passive_failures`` are not.
_SECRET_NAME = re.compile(
    r"(?<![a-z])(pass(word|wd|phrase)?|secrets?|tokens?|private|key_(pem|enc|encrypted)|api[_-]?key|credentials?|authorization)(?![a-z])",
    re.I,
)


def redact(value, key: str = ""):
    if key and _SECRET_NAME.search(key):
        return REDACTED if value not in (None, "", [], {}) else value
    if isinstance(value, str) and (value.startswith("pbkdf2_sha256$") or "PRIVATE KEY-----" in value):
        return REDACTED
    if isinstance(value, dict):
        out = {k: redact(v, str(k)) for k, v in value.items()}
        # A header rule names its header in a field: {"name": "Authorization", "value": "Bearer …"}.
        name = value.get("name")
        if "value" in value and isinstance(name, str) and _SECRET_NAME.search(name):
            out["value"] = redact(value["value"], name)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
