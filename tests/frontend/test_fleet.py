"""The fleet page: workers, config versions with their rollout, and the diff between two
versions, which shows only the organization's own sites."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from edge import services as edge
from fleet.models import Worker
from fleet.publisher import publish
from tenancy.access import Actor

URL = reverse("frontend:fleet", kwargs={"org_slug": "acme"})


@pytest.fixture
def versions(cast):
    first = publish(force=True)
    edge.site_update(actor=Actor.for_user(cast.users["editor"]), org=cast.org, site=cast.site, balancing="ip_hash")
    edge.site_update(actor=Actor.for_user(cast.users["outsider"]), org=cast.other_org, site=cast.other_site, balancing="ip_hash")
    second = publish(force=True)
    Worker.objects.create(name="edge-1", version=second.number, last_heartbeat=timezone.now())
    Worker.objects.create(name="edge-2", version=first.number, last_heartbeat=timezone.now())
    Worker.objects.create(name="edge-old", version=first.number, last_heartbeat=timezone.now() - dt.timedelta(hours=1))
    return first, second


def test_workers_with_status_version_and_heartbeat(cast, versions):
    body = cast.client("viewer").get(URL).content.decode()
    for name in ("edge-1", "edge-2", "edge-old"):
        assert name in body
    assert body.count(">Online<") == 2 and body.count(">Offline<") == 1


def test_versions_show_their_rollout(cast, versions):
    first, second = versions
    body = cast.client("viewer").get(URL).content.decode()
    assert "1 of 2 online workers" in body  # the newest version: edge-1 only
    assert "2 of 2 online workers" in body  # the first: both online workers


def test_diff_shows_only_my_sites(cast, versions):
    first, second = versions
    body = cast.client("viewer").get(URL, {"from": first.number, "to": second.number}).content.decode()
    assert "<h3>Shop</h3>" in body and "balancing" in body and "&quot;ip_hash&quot;" in body
    assert "Secret" not in body


def test_diff_of_unknown_versions_says_so(cast, versions):
    body = cast.client("viewer").get(URL, {"from": "999", "to": "x"}).content.decode()
    assert "Choose two existing versions." in body
