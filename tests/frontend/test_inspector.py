"""The request inspector pages: the list with its filters, one request's details with secrets shown
as masked, replay from the page against a real backend, and who may do what."""

from __future__ import annotations

import datetime as dt

import pytest
from audit.models import AuditEvent
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from edge.models import Backend as BackendRow
from traffic.models import RequestSample

from ..proxyworker.conftest import Backend
from .conftest import WHO


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    cache.clear()
    yield
    cache.clear()


def make_sample(site, *, minutes_ago=0, **fields) -> RequestSample:
    values = dict(
        organization=site.organization, site=site, at=timezone.now() - dt.timedelta(minutes=minutes_ago),
        kind="sample", worker="edge-1", method="GET", host="shop.acme.test", path="/", status=200,
        request_headers=[["Host", "shop.acme.test"]], response_headers=[], timing={"total": 12.5},
    )
    values.update(fields)
    return RequestSample.objects.create(**values)


@pytest.fixture
def samples(cast):
    s = cast.site
    return {
        "ok": make_sample(s, minutes_ago=3, path="/products/42", backend_id=str(cast.backend.pk), cache="hit",
                          request_headers=[["Host", "shop.acme.test"], ["Authorization", "***"], ["Cookie", "***"],
                                           ["Accept", "text/html"]],
                          response_headers=[["Content-Type", "text/html"], ["Set-Cookie", "***"]],
                          timing={"receive": 0.4, "connect": 1.2, "upstream_wait": 9.0, "send": 0.9, "total": 10.5}),
        "blocked": make_sample(s, minutes_ago=2, kind="blocked", path="/wp-login.php", status=403,
                               blocked_reason="waf", blocked_rule="wp-probe"),
        "failed": make_sample(s, minutes_ago=1, kind="failed", path="/checkout", status=502,
                              backend_id="0d5ab6a2-7b8e-4b1c-9d55-3f1f3c1a0b77", error="connection refused"),
    }


def inspector(cast, **query) -> str:
    base = reverse("frontend:inspector", kwargs={"org_slug": cast.org.slug, "site_id": cast.site.pk})
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def detail(cast, sample) -> str:
    return reverse("frontend:sample", kwargs={"org_slug": cast.org.slug, "site_id": cast.site.pk, "sample_id": sample.pk})


def replay_url(cast, sample) -> str:
    return reverse("frontend:sample_replay", kwargs={"org_slug": cast.org.slug, "site_id": cast.site.pk, "sample_id": sample.pk})


def test_the_site_page_links_to_its_inspector(cast):
    body = cast.client("viewer").get(reverse("frontend:site", kwargs={"org_slug": "acme", "site_id": cast.site.pk})).content.decode()
    assert inspector(cast) in body


def test_newest_first_with_rule_backend_cache_and_time(cast, samples):
    body = cast.client("viewer").get(inspector(cast)).content.decode()
    assert body.index("/checkout") < body.index("/wp-login.php") < body.index("/products/42")
    assert "waf: <code>wp-probe</code>" in body
    assert "http://10.0.0.1:8080" in body  # the backend the worker chose, by address
    assert "deleted backend" in body  # the failed request's backend is gone
    assert ">hit<" in body and "10.5 ms" in body
    assert 'class="badge blocked"' in body and 'class="badge failed"' in body
    assert "style=" not in body


@pytest.mark.parametrize(("query", "shown"), [
    ({"kind": "blocked"}, {"/wp-login.php"}),
    ({"kind": "failed"}, {"/checkout"}),
    ({"kind": "sample"}, {"/products/42"}),
    ({"status": "4"}, {"/wp-login.php"}),
    ({"status": "5"}, {"/checkout"}),
    ({"path": "product"}, {"/products/42"}),
    ({}, {"/wp-login.php", "/checkout", "/products/42"}),
])
def test_filters(cast, samples, query, shown):
    body = cast.client("viewer").get(inspector(cast, **query)).content.decode()
    for path in ("/wp-login.php", "/checkout", "/products/42"):
        assert (path in body) is (path in shown), path


def test_pages_of_fifty(cast):
    for i in range(55):
        make_sample(cast.site, minutes_ago=i, path=f"/p{i:02d}")
    first = cast.client("viewer").get(inspector(cast)).content.decode()
    assert "/p00" in first and "/p49" in first and "/p50" not in first and "Page 1 of 2" in first
    second = cast.client("viewer").get(inspector(cast, page=2)).content.decode()
    assert "/p50" in second and "/p00" not in second


def test_the_detail_shows_headers_with_secrets_masked_rule_backend_and_timing(cast, samples):
    body = cast.client("viewer").get(detail(cast, samples["ok"])).content.decode()
    assert body.count('class="badge masked"') == 3  # Authorization, Cookie, Set-Cookie
    assert "***" not in body
    assert "text/html" in body and "http://10.0.0.1:8080" in body
    # the timing bar: one rect per phase, widths in SVG attributes (no inline style under the CSP)
    assert body.count('<rect class="') == 5 and "style=" not in body
    assert "upstream wait 7.80 ms" in body and "total 10.50 ms" in body

    failed = cast.client("viewer").get(detail(cast, samples["failed"])).content.decode()
    assert "connection refused" in failed and "deleted backend" in failed
    blocked = cast.client("viewer").get(detail(cast, samples["blocked"])).content.decode()
    assert "wp-probe" in blocked


def test_a_secret_a_worker_failed_to_mask_is_still_shown_masked(cast):
    sample = make_sample(cast.site, request_headers=[["Host", "shop.acme.test"], ["Authorization", "Bearer abc123"],
                                                     ["X-Session-Token", "tok-987"]],
                         response_headers=[["Set-Cookie", "sid=zzz"]])
    body = cast.client("owner").get(detail(cast, sample)).content.decode()
    assert "abc123" not in body and "tok-987" not in body and "sid=zzz" not in body
    assert body.count('class="badge masked"') == 3


@pytest.mark.parametrize("who", WHO)
def test_members_see_samples_and_strangers_get_404(cast, samples, who):
    assert cast.client(who).get(inspector(cast)).status_code == (404 if who == "outsider" else 200)
    assert cast.client(who).get(detail(cast, samples["ok"])).status_code == (404 if who == "outsider" else 200)


def test_another_tenants_sample_is_404_under_my_site(cast, samples):
    theirs = make_sample(cast.other_site, path="/secret")
    response = cast.client("owner").get(detail(cast, theirs))
    assert response.status_code == 404
    assert b"/secret" not in cast.client("owner").get(inspector(cast)).content


def test_viewers_see_no_replay_form_and_cannot_post_one(cast, samples):
    body = cast.client("viewer").get(detail(cast, samples["ok"])).content.decode()
    assert "Replay GET" not in body and "needs the editor role" in body
    response = cast.client("viewer").post(replay_url(cast, samples["ok"]), {"backend": str(cast.backend.pk)})
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="request.replay").exists()


def test_an_editor_replays_against_a_real_backend_from_the_page(cast, samples):
    origin = Backend("origin", headers={"Set-Cookie": "sid=s3cr3t"}).start()
    try:
        local = BackendRow.objects.create(organization=cast.org, site=cast.site, address="127.0.0.1", port=origin.port)
        page = cast.client("editor").get(detail(cast, samples["ok"])).content.decode()
        assert f'<option value="{cast.backend.pk}" selected>' in page  # default: the backend the worker chose
        response = cast.client("editor").post(replay_url(cast, samples["ok"]), {"backend": str(local.pk)})
    finally:
        origin.stop()
    assert response.status_code == 200
    body = response.content.decode()
    method, target, headers = origin.requests[-1]
    assert (method, target, headers["host"]) == ("GET", "/products/42", "shop.acme.test")
    assert "authorization" not in headers and "cookie" not in headers
    assert "200 X" in body and "Left out" in body and "<code>Authorization</code>: masked on the worker" in body
    assert "s3cr3t" not in body  # the answer's Set-Cookie is masked too
    assert "style=" not in body and '<rect class="wait"' in body  # the replay's timing bar
    assert "&quot;backend&quot;: &quot;origin&quot;" in body  # the body, escaped, never rendered
    assert AuditEvent.objects.filter(action="request.replay", actor_name="editor@acme.test").count() == 1


def test_a_post_needs_the_confirmation_box(cast):
    origin = Backend("origin").start()
    try:
        local = BackendRow.objects.create(organization=cast.org, site=cast.site, address="127.0.0.1", port=origin.port)
        sample = make_sample(cast.site, method="POST", path="/orders", backend_id=str(local.pk))
        page = cast.client("editor").get(detail(cast, sample)).content.decode()
        assert "I understand this can change data" in page
        refused = cast.client("editor").post(replay_url(cast, sample), {"backend": str(local.pk)}).content.decode()
        assert "POST can change data on the origin" in refused and origin.requests == []
        cast.client("editor").post(replay_url(cast, sample), {"backend": str(local.pk), "confirm": "on"})
    finally:
        origin.stop()
    assert origin.requests[-1][:2] == ("POST", "/orders")


def test_a_backend_in_a_denied_network_is_refused_with_a_message(cast, samples, settings):
    import ipaddress

    settings.BACKEND_DENY_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    body = cast.client("editor").post(replay_url(cast, samples["ok"]), {"backend": str(cast.backend.pk)}).content.decode()
    assert "in 10.0.0.0/8, which replays may not reach" in body
    assert not AuditEvent.objects.filter(action="request.replay").exists()
