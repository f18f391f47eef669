"""Certificates through the API: request issuance, upload your own, revoke, delete; the private
key goes in and never comes back out."""

from __future__ import annotations

import pytest
from audit.models import AuditEvent
from certs.models import Certificate
from tenancy.models import ApiToken

from tests.certs.minica import MiniCA

from .conftest import client_for, url


@pytest.fixture(scope="module")
def ca() -> MiniCA:
    return MiniCA(label="API Test")


def _no_key_anywhere(body, key: str = "") -> None:
    text = str(body)
    assert "key_encrypted" not in text and "key_pem" not in text and "PRIVATE KEY" not in text
    if key:
        assert key.splitlines()[1] not in text


def test_an_uploaded_certificate_keeps_its_key_to_itself(cast, world, ca):
    chain, key = ca.bundle("shop.acme.test")
    client = client_for(cast.acme.write_token)
    response = client.post(url("acme", "certificates/upload/"), {"chain_pem": chain, "key_pem": key})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["source"], body["status"], body["hostnames"]) == ("uploaded", "issued", ["shop.acme.test"])
    _no_key_anywhere(body, key)
    cert = Certificate.objects.get(pk=body["id"])
    assert cert.key_encrypted and cert.private_key() == key
    _no_key_anywhere(client.get(url("acme", f"certificates/{cert.pk}/")).json(), key)
    _no_key_anywhere(client.get(url("acme", "certificates/")).json(), key)
    token = ApiToken.objects.get(organization=cast.acme.org, name="write bot")
    event = AuditEvent.objects.get(organization=cast.acme.org, action="certificate.upload")
    assert event.actor_ref == f"token:{token.pk}"


def test_a_key_that_does_not_match_is_400_on_the_key(cast, world, ca):
    chain, _ = ca.bundle("shop.acme.test")
    _, other_key = ca.bundle("shop.acme.test")
    response = client_for(cast.acme.write_token).post(url("acme", "certificates/upload/"), {"chain_pem": chain, "key_pem": other_key})
    assert response.status_code == 400
    assert "does not belong to the certificate" in response.json()["key_pem"][0]
    assert not Certificate.objects.filter(source="uploaded").exists()


def test_a_certificate_for_another_tenants_names_is_refused(cast, world, other_world, ca):
    chain, key = ca.bundle("shop.globex.test")
    response = client_for(cast.acme.write_token).post(url("acme", "certificates/upload/"), {"chain_pem": chain, "key_pem": key})
    assert response.status_code == 400
    assert "covers none of your sites' hostnames" in response.json()["chain_pem"][0]


def test_issuance_is_requested_with_202(cast, world):
    response = client_for(cast.acme.write_token).post(url("acme", "certificates/"), {"hostnames": ["shop.acme.test"]}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["hostnames"] == ["shop.acme.test"]
    assert body["status"] in ("pending", "validating", "issued")
    _no_key_anywhere(body)
    assert AuditEvent.objects.filter(organization=cast.acme.org, target_id=body["id"]).exists()


def test_issuance_for_a_name_you_do_not_have_is_400(cast, world, other_world):
    response = client_for(cast.acme.write_token).post(url("acme", "certificates/"), {"hostnames": ["shop.globex.test"]}, format="json")
    assert response.status_code == 400
    assert "is not a hostname of any of your sites" in response.json()["hostnames"][0]


def test_revoking_needs_an_admin(cast, world):
    issued = client_for(cast.acme.write_token).post(url("acme", "certificates/"), {"hostnames": ["www.acme.test"]}, format="json").json()
    assert issued["status"] == "issued"  # *.test names come from the internal CA at once
    path = url("acme", f"certificates/{issued['id']}/revoke/")
    assert client_for(cast.acme.write_token).post(path).status_code == 403
    response = client_for(user=cast.acme.users["admin"]).post(path)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "revoked"


def test_a_certificate_can_be_deleted(cast, world):
    path = url("acme", f"certificates/{world.certificate.pk}/")
    assert client_for(cast.acme.write_token).delete(path).status_code == 204
    assert not Certificate.objects.filter(pk=world.certificate.pk).exists()
    assert client_for(cast.acme.write_token).get(path).status_code == 404
