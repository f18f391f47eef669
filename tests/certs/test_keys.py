"""Data-key rotation: ``manage.py rotate_data_keys`` re-encrypts every stored secret so the old
key can be dropped."""

from __future__ import annotations

import io

from certs import acme_client, internal_ca, services
from certs.models import AcmeAccount, Certificate, InternalCA
from django.core.management import call_command
from edge import services as edge

OLD, NEW = "old-data-key-0123456789abcdef", "new-data-key-0123456789abcdef"


def test_rotation_re_encrypts_every_secret_so_the_old_key_can_go(cast, settings):
    settings.DATA_KEYS = [OLD]
    settings.ACME_DIRECTORY = "https://acme.invalid/directory"
    edge.site_create(actor=cast.editor, org=cast.org, name="app", hostnames=["app.test"], tls_mode="internal")
    cert = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["app.test"])
    account = acme_client.account_for(cast.org, "https://acme.invalid/directory")
    before = {
        "cert": cert.private_key(),
        "account": account.private_key(),
        "root": InternalCA.objects.get().root_key_encrypted,
    }

    settings.DATA_KEYS = [NEW, OLD]
    out = io.StringIO()
    call_command("rotate_data_keys", stdout=out)
    assert "certs.Certificate.key_encrypted: 1 re-encrypted" in out.getvalue()
    assert "certs.InternalCA.intermediate_key_encrypted: 1 re-encrypted" in out.getvalue()

    settings.DATA_KEYS = [NEW]  # the old key is gone
    assert Certificate.objects.get(pk=cert.pk).private_key() == before["cert"]
    assert AcmeAccount.objects.get(pk=account.pk).private_key() == before["account"]
    assert InternalCA.objects.get().root_key_encrypted != before["root"]
    assert internal_ca.issue(["other.test"]).chain_pem  # the CA's keys still work


def test_the_root_can_be_printed_for_a_trust_store(cast):
    out = io.StringIO()
    call_command("internal_ca_root", stdout=out)
    assert out.getvalue() == internal_ca.root_pem()
    assert out.getvalue().startswith("-----BEGIN CERTIFICATE-----")
