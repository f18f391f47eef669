"""Secrets never enter the audit log: any field whose name looks secret is replaced."""

from __future__ import annotations

import re

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"(pass(word)?|secret|token|private|key_pem|key_enc|api_?key|credential|authorization)", re.I)


def redact(value, key: str = ""):
    if key and _SECRET_NAME.search(key):
        return REDACTED if value not in (None, "", [], {}) else value
    if isinstance(value, str) and (value.startswith("pbkdf2_sha256$") or "PRIVATE KEY-----" in value):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
