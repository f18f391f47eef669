"""Traffic through a real worker node reaches the control plane's rollups with the right counts."""

from __future__ import annotations

import pytest
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from edge import services as edge
from edge.models import Backend as BackendRow
from fleet.models import Worker
from tenancy.access import Actor
from tenancy.models import Membership, Organization, Role, User
from traffic import selectors
from traffic.models import BackendHealth, RequestSample, TrafficMinute

from ..proxyworker.conftest import Backend
from .conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def origins():
    started = [Backend("origin-ok").start(), Backend("origin-broken", status=500).start()]
    yield started
    for b in started:
        b.stop()


def counts(site) -> dict:
    return TrafficMinute.objects.filter(site=site).aggregate(requests=Sum("requests"), ok=Sum("s2xx"), errors=Sum("s5xx"))


def test_requests_through_a_worker_show_up_in_the_rollups(transactional_db, origins, node_factory):
    ok, broken = origins
    org = Organization.objects.create(name="Acme", slug="acme")
    node = node_factory("node-1", proxy=True)
    wait_for(lambda: Worker.objects.filter(name="node-1").exists(), what="hello")
    shop = edge.site_create(actor=Actor.system("test"), org=org, name="shop", hostnames=["shop.example.com"],
                            backends=[{"address": "127.0.0.1", "port": ok.port}], hc_enabled=False)
    blog = edge.site_create(actor=Actor.system("test"), org=org, name="blog", hostnames=["blog.example.com"],
                            backends=[{"address": "127.0.0.1", "port": broken.port}], hc_enabled=False)
    wait_for(lambda: node.get("blog.example.com")[0] == 500, timeout=20, what="the sites to be served")
    for _ in range(12):
        assert node.get("shop.example.com")[0] == 200
    for _ in range(3):
        node.get("blog.example.com")  # 500, then the platform's 503 once the backend is ejected

    wait_for(lambda: counts(shop)["requests"] == 12 and counts(blog)["requests"] == 4, timeout=30,
             what="the worker's counts to reach the rollups")
    assert counts(shop) == {"requests": 12, "ok": 12, "errors": 0}
    assert counts(blog)["errors"] == 4
    backend = BackendRow.objects.get(site=shop)
    assert selectors.summary(shop, "1h")["backends"] == {str(backend.pk): {"requests": 12, "errors": 0}}
    assert selectors.summary(shop, "1h")["latency_ms"]["p50"] is not None
    # every failed request is in the inspector; the health of the shop's backend is known
    assert RequestSample.objects.filter(site=blog, kind="failed").count() == 4
    wait_for(lambda: BackendHealth.objects.filter(backend_id=backend.pk, up=True).exists(), what="backend health")
    assert str(selectors.backend_health(shop)[str(backend.pk)]) == "up on 1 of 1 workers"

    # The inspector page shows the failed requests, with the backend the worker chose; an editor
    # replays one from the page against that backend, which answers it again.
    editor = User.objects.create_user(email="editor@acme.test", password="x")
    Membership.objects.create(organization=org, user=editor, role=Role.EDITOR)
    client = Client()
    client.force_login(editor)
    page = client.get(reverse("frontend:inspector", kwargs={"org_slug": "acme", "site_id": blog.pk}) + "?kind=failed")
    body = page.content.decode()
    assert body.count('class="badge failed"') == 4
    blog_backend = BackendRow.objects.get(site=blog)
    assert str(blog_backend) in body
    sample = RequestSample.objects.filter(site=blog, backend_id=str(blog_backend.pk)).first()
    hits = broken.hits
    result = client.post(reverse("frontend:sample_replay", kwargs={"org_slug": "acme", "site_id": blog.pk, "sample_id": sample.pk}),
                         {"backend": str(blog_backend.pk)}).content.decode()
    assert "500 X" in result and f"from {blog_backend}" in result
    assert broken.hits == hits + 1 and broken.requests[-1][2]["host"] == "blog.example.com"
