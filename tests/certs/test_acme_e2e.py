"""Automatic HTTPS end to end: real pebble, real Celery, real workers. Pebble resolves every
test name to 127.0.0.1 and fetches each token over HTTP from whichever worker the round-robin
front hands its connection to."""

from __future__ import annotations

import pytest
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
