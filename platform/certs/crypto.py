"""Secrets at rest in the database (private keys, ACME account keys) are encrypted with Fernet.

PORTICO_DATA_KEYS lists keys, newest first: the first encrypts, all decrypt. To rotate, put a new
key first and run ``manage.py rotate_data_keys``, then drop the old key.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _fernet(secret: str) -> Fernet:
    # Any passphrase works: derive the 32-byte Fernet key from it.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


@cache
def _multi(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet(k) for k in keys])


def _box() -> MultiFernet:
    return _multi(tuple(settings.DATA_KEYS))


def encrypt(plaintext: str) -> str:
    return _box().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _box().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("cannot decrypt: none of PORTICO_DATA_KEYS matches") from None


def rotate(token: str) -> str:
    """Re-encrypt under the newest key."""
    return _box().rotate(token.encode()).decode()
