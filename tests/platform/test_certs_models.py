"""certs/models.py and certs/crypto.py: private keys are encrypted at rest, never stored as PEM."""

from __future__ import annotations

import json

import pytest
from certs import crypto
from certs.models import Certificate
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


@pytest.fixture(scope="module")
def key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def test_private_key_is_stored_encrypted(cast, key_pem):
    cert = Certificate(organization=cast.org, hostnames=["shop.acme.test"], source=Certificate.Source.UPLOADED)
    cert.set_private_key(key_pem)
    cert.save()
    row = json.dumps(list(Certificate.objects.filter(pk=cert.pk).values()), default=str)
    assert "PRIVATE KEY" not in row
    assert key_pem.splitlines()[1] not in row  # not even a line of the key's body
    assert Certificate.objects.get(pk=cert.pk).private_key() == key_pem


def test_the_same_key_encrypts_differently_each_time(key_pem):
    assert crypto.encrypt(key_pem) != crypto.encrypt(key_pem)


def test_a_key_encrypted_under_other_data_keys_does_not_decrypt(settings, key_pem):
    settings.DATA_KEYS = ["someone-elses-data-key-0123456789"]
    token = crypto.encrypt(key_pem)
    settings.DATA_KEYS = ["our-data-key-0123456789abcdef"]
    with pytest.raises(ValueError, match="none of PORTICO_DATA_KEYS matches"):
        crypto.decrypt(token)


def test_data_keys_rotate_newest_first(settings, key_pem):
    settings.DATA_KEYS = ["old-data-key-0123456789abcdef"]
    old_token = crypto.encrypt(key_pem)
    settings.DATA_KEYS = ["new-data-key-0123456789abcdef", "old-data-key-0123456789abcdef"]
    assert crypto.decrypt(old_token) == key_pem  # old ciphertext still readable during rotation
    new_token = crypto.rotate(old_token)
    settings.DATA_KEYS = ["new-data-key-0123456789abcdef"]
    assert crypto.decrypt(new_token) == key_pem  # the old key can be dropped afterwards
    with pytest.raises(ValueError):
        crypto.decrypt(old_token)
