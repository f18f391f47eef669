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


# Every field that holds ``encrypt()`` output, as (app_label.Model, field). ``rotate_data_keys``
# re-encrypts all of them; an app that stores another secret adds its field here.
ENCRYPTED_FIELDS: list[tuple[str, str]] = [
    ("certs.Certificate", "key_encrypted"),
    ("certs.AcmeAccount", "key_encrypted"),
    ("certs.InternalCA", "root_key_encrypted"),
    ("certs.InternalCA", "intermediate_key_encrypted"),
]


def rotate_all() -> dict[str, int]:
    """Re-encrypt every registered field under the newest key. Returns rows rewritten per field.

    Each row is rewritten in its own short transaction, so a rotation over many rows never holds
    long locks; re-running is harmless (rotating a current token gives a current token).
    """
    from django.apps import apps
    from django.db import transaction

    done: dict[str, int] = {}
    for label, field in ENCRYPTED_FIELDS:
        model = apps.get_model(label)
        count = 0
        for pk in model._default_manager.exclude(**{field: ""}).values_list("pk", flat=True).iterator():
            with transaction.atomic():
                row = model._default_manager.select_for_update().filter(pk=pk).values_list(field, flat=True).first()
                if not row:
                    continue
                model._default_manager.filter(pk=pk).update(**{field: rotate(row)})
                count += 1
        done[f"{label}.{field}"] = count
    return done
