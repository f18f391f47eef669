"""certificate_upload: a PEM chain and key are checked before anything is stored, and each
problem is reported on the field to fix, in words a person can act on."""

from __future__ import annotations

import datetime as dt

import pytest
from audit.models import AuditEvent
from certs import services
from certs.models import Certificate
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from edge import services as edge

from .minica import MiniCA, key_pem, pem, weak_rsa_key


@pytest.fixture(scope="module")
def ca() -> MiniCA:
    return MiniCA()


@pytest.fixture
def shop(cast):
    return edge.site_create(
        actor=cast.editor, org=cast.org, name="Shop", hostnames=["shop.example.com", "www.example.com"], tls_mode="custom"
    )


def upload(cast, chain_pem, key, actor=None):
    return services.certificate_upload(actor=actor or cast.editor, org=cast.org, chain_pem=chain_pem, key_pem=key)


def problem(cast, chain_pem, key) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        upload(cast, chain_pem, key)
    assert not Certificate.objects.exists()
    return info.value.message_dict


def test_a_valid_chain_is_stored_and_served_for_the_names_it_covers(cast, shop, ca):
    chain, key = ca.bundle("shop.example.com", "other.example.org")

    cert = upload(cast, chain, key)

    assert cert.status == Certificate.Status.ISSUED and cert.source == Certificate.Source.UPLOADED
    assert cert.hostnames == ["shop.example.com"]  # www is not in the certificate; other.example.org is not ours
    assert cert.names == ["shop.example.com", "other.example.org"]
    assert cert.chain_pem == chain
    assert cert.private_key() == key
    assert cert.issuer == "Upload Test Intermediate"
    event = AuditEvent.objects.get(action="certificate.upload")
    assert "PRIVATE KEY" not in str(event.changes) and key.splitlines()[1] not in str(event.changes)


def test_a_wildcard_covers_one_label(cast, shop, ca):
    cert = upload(cast, *ca.bundle("*.example.com"))
    assert cert.hostnames == ["shop.example.com", "www.example.com"]


def test_a_newer_upload_replaces_the_one_it_covers(cast, shop, ca):
    first = upload(cast, *ca.bundle("shop.example.com"))
    second = upload(cast, *ca.bundle("shop.example.com", "www.example.com"))
    first.refresh_from_db()
    assert (first.status, second.status) == (Certificate.Status.REPLACED, Certificate.Status.ISSUED)


def test_a_key_that_does_not_match(cast, shop, ca):
    chain, _ = ca.bundle("shop.example.com")
    _, other_key = ca.bundle("shop.example.com")
    assert problem(cast, chain, other_key) == {
        "key_pem": ["This private key does not belong to the certificate CN=shop.example.com (the first in the chain)."]
    }


def test_a_chain_in_the_wrong_order(cast, shop, ca):
    leaf, key = ca.leaf("shop.example.com")
    errors = problem(cast, pem(ca.intermediate) + pem(leaf), key_pem(key))
    assert errors == {
        "chain_pem": [
            "The chain is in the wrong order: the key belongs to certificate #2 (CN=shop.example.com). "
            "Put the site's certificate first, then each intermediate."
        ]
    }


def test_an_intermediate_that_did_not_issue_the_leaf(cast, shop, ca):
    stranger = MiniCA("Other")
    leaf, key = ca.leaf("shop.example.com")
    errors = problem(cast, pem(leaf) + pem(stranger.intermediate), key_pem(key))
    assert errors["chain_pem"][0].startswith("Certificate #2 (CN=Other Intermediate) did not issue certificate #1 (CN=shop.example.com).")


def test_intermediates_out_of_order(cast, shop, ca):
    leaf, key = ca.leaf("shop.example.com")
    errors = problem(cast, pem(leaf) + pem(ca.root) + pem(ca.intermediate), key_pem(key))
    assert errors["chain_pem"][0].endswith("It was issued by certificate #3: the chain is out of order.")


def test_an_expired_certificate(cast, shop, ca):
    now = dt.datetime.now(dt.UTC)
    chain, key = ca.bundle("shop.example.com", not_before=now - dt.timedelta(days=100), not_after=now - dt.timedelta(days=2))
    (message,) = problem(cast, chain, key)["chain_pem"]
    assert message.startswith("The certificate expired on ")


def test_a_certificate_not_valid_yet(cast, shop, ca):
    now = dt.datetime.now(dt.UTC)
    chain, key = ca.bundle("shop.example.com", not_before=now + dt.timedelta(days=2), not_after=now + dt.timedelta(days=90))
    (message,) = problem(cast, chain, key)["chain_pem"]
    assert message.startswith("The certificate is not valid until ")


def test_names_that_cover_none_of_the_sites(cast, shop, ca):
    chain, key = ca.bundle("elsewhere.example.org")
    assert problem(cast, chain, key) == {
        "chain_pem": ["The certificate is for elsewhere.example.org, which covers none of your sites' hostnames."]
    }


def test_another_organizations_hostname_is_not_covered(cast, shop, ca):
    edge.site_create(actor=cast.outsider, org=cast.other_org, name="Theirs", hostnames=["theirs.example.net"], tls_mode="custom")
    chain, key = ca.bundle("theirs.example.net")
    assert "covers none of your sites' hostnames" in problem(cast, chain, key)["chain_pem"][0]


def test_a_ca_certificate_is_not_a_site_certificate(cast, shop, ca):
    leaf, key = ca.leaf("shop.example.com", ca=True)
    (message,) = problem(cast, pem(leaf), key_pem(key))["chain_pem"]
    assert message == "The first certificate (CN=shop.example.com) is a CA certificate, not a site's certificate."


@pytest.mark.parametrize(
    ("chain", "key", "field", "says"),
    [
        ("", "k", "chain_pem", "Paste the certificate chain in PEM form"),
        ("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", "k", "chain_pem", "No readable certificate found"),
        ("hello", "k", "chain_pem", "No readable certificate found"),
    ],
)
def test_unreadable_input(cast, shop, chain, key, field, says):
    (message,) = problem(cast, chain, key)[field]
    assert says in message


def test_unreadable_and_unsuitable_keys(cast, shop, ca):
    chain, key = ca.bundle("shop.example.com")
    assert "No readable private key" in problem(cast, chain, "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----")["key_pem"][0]
    assert "Paste the private key" in problem(cast, chain, "")["key_pem"][0]
    leaf, k = ca.leaf("shop.example.com")
    encrypted = key_pem(k, password=b"secret")
    assert "protected by a passphrase" in problem(cast, pem(leaf), encrypted)["key_pem"][0]
    weak = weak_rsa_key()
    leaf, _ = ca.leaf("shop.example.com", key=weak)
    assert problem(cast, pem(leaf), key_pem(weak)) == {"key_pem": ["An RSA key of 1024 bits is too weak; use at least 2048 bits."]}


def test_a_key_pasted_into_the_chain_field_is_refused(cast, shop, ca):
    chain, key = ca.bundle("shop.example.com")
    assert "contains a private key" in problem(cast, chain + key, key)["chain_pem"][0]


def test_a_viewer_cannot_upload_and_a_stranger_gets_404(cast, shop, ca):
    chain, key = ca.bundle("shop.example.com")
    with pytest.raises(PermissionDenied):
        upload(cast, chain, key, actor=cast.viewer)
    with pytest.raises(Http404):
        upload(cast, chain, key, actor=cast.outsider)
    assert not Certificate.objects.exists()
