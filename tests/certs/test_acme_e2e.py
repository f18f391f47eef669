"""Automatic HTTPS end to end: real pebble, real Celery, real workers. Pebble resolves every
test name to 127.0.0.1 and fetches each token over HTTP from whichever worker the round-robin
front hands its connection to."""

from __future__ import annotations

import datetime as dt

import pytest
from audit.models import AuditEvent
from certs import services
from certs.models import Certificate, PendingChallenge
from edge import services as edge
from tenancy.access import Actor
from tenancy.models import Organization

from tests.e2e.processes import wait_for

pytestmark = pytest.mark.e2e

ACTOR = Actor.system("test")


@pytest.fixture
def org(transactional_db):
    return Organization.objects.create(name="Acme", slug="acme")


def settled(hostname: str):
    cert = Certificate.objects.filter(hostnames__contains=[hostname]).exclude(status__in=Certificate.IN_FLIGHT).first()
    return cert


def test_a_new_site_gets_certificates_that_every_worker_serves(org, acme_fleet_factory):
    fleet = acme_fleet_factory(nodes=2)  # pebble rejects 5 % of nonces, as it does by default

    edge.site_create(actor=ACTOR, org=org, name="shop", hostnames=["shop.example.com", "www.shop.example.com"])

    for name in ("shop.example.com", "www.shop.example.com"):
        cert = wait_for(lambda n=name: settled(n), timeout=60, what=f"the certificate for {name}")
        assert cert.status == Certificate.Status.ISSUED, cert.failure_reason
        assert cert.source == Certificate.Source.ACME
    assert not PendingChallenge.objects.exists()
    # the CA's validation requests reached both workers
    assert set(fleet.front.asked) == {"edge-1", "edge-2"}, fleet.front.asked

    for node in fleet.nodes:
        for name in ("shop.example.com", "www.shop.example.com"):
            peer = wait_for(lambda n=node, h=name: _try_handshake(fleet, n, h), timeout=20, what=f"{node.name} to serve {name}")
            assert ("DNS", name) in peer["subjectAltName"]
            served = Certificate.objects.get(hostnames=[name], status=Certificate.Status.ISSUED)
            assert int(peer["serialNumber"], 16) == int(served.serial, 16)


def _try_handshake(fleet, node, hostname):
    try:
        return fleet.handshake(node, hostname)
    except (OSError, ValueError):
        return None


def issued(cert_id):
    cert = Certificate.objects.get(pk=cert_id)
    return cert if cert.status not in Certificate.IN_FLIGHT else None


def serial_served(fleet, node, hostname) -> int | None:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(fleet.served_pem(node, hostname).encode()).serial_number
    except (OSError, ValueError):
        return None


def test_one_certificate_for_two_names_renews_and_revokes(org, acme_fleet_factory):
    fleet = acme_fleet_factory(nodes=1)
    (node,) = fleet.nodes
    # "custom": no automatic request, so this test decides what is ordered
    edge.site_create(actor=ACTOR, org=org, name="api", hostnames=["api.example.com", "cdn.example.com"], tls_mode="custom")

    first = services.certificate_request(actor=ACTOR, org=org, hostnames=["api.example.com", "cdn.example.com"])
    first = wait_for(lambda: issued(first.pk), timeout=60, what="the first certificate")
    assert first.status == Certificate.Status.ISSUED, first.failure_reason
    assert sorted(first.names) == ["api.example.com", "cdn.example.com"]
    for name in ("api.example.com", "cdn.example.com"):
        wait_for(lambda h=name: _try_handshake(fleet, node, h), timeout=20, what=f"{name} served")

    # renewal comes from the beat task once a third of the lifetime remains
    assert services.renew_due() == []  # not due yet
    renewals = services.renew_due(now=first.renew_after + dt.timedelta(seconds=1))
    assert [r.replaces_id for r in renewals] == [first.pk]
    second = wait_for(lambda: issued(renewals[0].pk), timeout=60, what="the renewal")
    assert second.status == Certificate.Status.ISSUED, second.failure_reason
    assert second.serial != first.serial
    first.refresh_from_db()
    assert first.status == Certificate.Status.REPLACED
    wait_for(lambda: serial_served(fleet, node, "cdn.example.com") == int(second.serial, 16), timeout=20, what="the renewed chain served")
    assert "DNS" in dict(fleet.handshake(node, "api.example.com")["subjectAltName"])

    revoked = services.certificate_revoke(actor=ACTOR, org=org, certificate=second)
    assert revoked.status == Certificate.Status.REVOKED
    assert fleet.pebble.cert_status(second.serial)["Status"] == "Revoked"
    # no longer served: the worker refuses a name it has no certificate for
    wait_for(lambda: _try_handshake(fleet, node, "api.example.com") is None, timeout=20, what="the revoked certificate withdrawn")


def test_a_name_not_pointing_at_the_fleet_fails_with_a_reason_then_succeeds_once_it_does(org, acme_fleet_factory):
    fleet = acme_fleet_factory(nodes=1)
    fleet.pebble.set_a("broken.example.com", "127.0.0.2")  # DNS points somewhere else

    edge.site_create(actor=ACTOR, org=org, name="broken", hostnames=["broken.example.com"])
    cert = wait_for(lambda: settled("broken.example.com"), timeout=60, what="the order to fail")

    assert cert.status == Certificate.Status.FAILED
    assert cert.failure_reason.startswith("broken.example.com does not resolve to the fleet: the CA connected to 127.0.0.2")
    assert "Retrying at" in cert.failure_reason and cert.next_attempt_at is not None
    assert not PendingChallenge.objects.exists()  # tokens withdrawn
    assert AuditEvent.objects.filter(action="certificate.fail", target_id=str(cert.pk)).exists()

    fleet.pebble.clear_a("broken.example.com")  # DNS fixed: back to the fleet (127.0.0.1)
    assert services.retry_due(now=cert.next_attempt_at + dt.timedelta(seconds=1)) == 1
    cert = wait_for(lambda: issued(cert.pk), timeout=60, what="the retry")
    assert cert.status == Certificate.Status.ISSUED, cert.failure_reason
    assert cert.failure_reason == ""
    wait_for(lambda: _try_handshake(fleet, fleet.nodes[0], "broken.example.com"), timeout=20, what="the certificate served")


def test_rejected_nonces_are_retried(org, acme_fleet_factory, tmp_path):
    fleet = acme_fleet_factory(nodes=1, nonce_reject=40)  # 40 % of good nonces refused

    edge.site_create(actor=ACTOR, org=org, name="nonce", hostnames=["nonce.example.com"])
    cert = wait_for(lambda: settled("nonce.example.com"), timeout=90, what="the certificate")

    assert cert.status == Certificate.Status.ISSUED, cert.failure_reason
    log = (tmp_path / "celery.log").read_text()
    assert "rejected a nonce (badNonce); retrying" in log
    wait_for(lambda: _try_handshake(fleet, fleet.nodes[0], "nonce.example.com"), timeout=20, what="the certificate served")
