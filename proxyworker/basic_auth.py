"""HTTP Basic authentication (RFC 7617) against the control plane's pbkdf2_sha256 hashes.

A stored hash is ``pbkdf2_sha256$<iterations>$<salt>$<base64 digest>`` (100k iterations: tens of
milliseconds of CPU). Running that per request would cap a site at a few dozen requests per second
per core, so a successful check is remembered in memory, keyed by SHA-256 of (stored hash, the
``Authorization`` value): a changed password changes the stored hash and so the key, and the
plaintext is never kept. Failures are remembered too (in a smaller table), so a client repeating
a wrong password does not cost a pbkdf2 run each time. Only new credentials pay; that work runs in
a thread (hashlib releases the GIL), off the event loop.

A user name the realm does not know is checked against a decoy hash with the realm's iteration
count, which no password matches: it costs what a wrong password costs (and is remembered the same
way), so response times do not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable

MAX_REMEMBERED = 10_000
MAX_REMEMBERED_FAILURES = 1_000


class Realm:
    """One BasicAuth policy compiled: who may enter under ``prefix``."""

    __slots__ = ("prefix", "realm", "users", "challenge", "decoy")

    def __init__(self, prefix: str, realm: str, users: dict[str, str]):
        self.prefix = prefix
        self.realm = realm
        self.users = users
        quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
        self.challenge = f'Basic realm="{quoted}", charset="UTF-8"'
        self.decoy = decoy_hash(users.values())

    def stored_hash(self, user: str) -> str:
        """The user's stored hash, or the decoy for a name the realm does not know."""
        return self.users.get(user, self.decoy)


DEFAULT_ITERATIONS = 100_000


def decoy_hash(stored: Iterable[str]) -> str:
    """A pbkdf2_sha256 hash as slow to check as the slowest of ``stored``, matched by no password
    (its digest field is not base64, so it never equals a computed one)."""
    iterations = [int(parts[1]) for h in stored if len(parts := h.split("$", 3)) == 4 and parts[1].isdigit()]
    return f"pbkdf2_sha256${max(iterations, default=DEFAULT_ITERATIONS)}$decoy$!"


def parse_authorization(value: str | None) -> tuple[str, str] | None:
    """``Basic dXNlcjpwYXNz`` -> ("user", "pass"); None when absent or malformed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def check_password(password: str, stored: str) -> bool:
    """The slow part: one pbkdf2 run. Call it off the event loop."""
    try:
        algorithm, iterations, salt, expected = stored.split("$", 3)
        if algorithm != "pbkdf2_sha256":
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations))
    except (ValueError, OverflowError):
        return False
    return hmac.compare_digest(base64.b64encode(digest).decode(), expected)


class VerificationCache:
    """Remembered outcomes of pbkdf2 checks; bounded, oldest forgotten first. One per process."""

    def __init__(self, size: int = MAX_REMEMBERED, failures: int = MAX_REMEMBERED_FAILURES):
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._bad: OrderedDict[bytes, None] = OrderedDict()
        self._size = size
        self._failures = failures

    @staticmethod
    def key(stored: str, authorization: str) -> bytes:
        return hashlib.sha256(stored.encode() + b"\0" + authorization.encode()).digest()

    def lookup(self, key: bytes) -> bool | None:
        if key in self._ok:
            return True
        if key in self._bad:
            return False
        return None

    def remember(self, key: bytes, ok: bool) -> None:
        table, limit = (self._ok, self._size) if ok else (self._bad, self._failures)
        table[key] = None
        if len(table) > limit:
            table.popitem(last=False)
