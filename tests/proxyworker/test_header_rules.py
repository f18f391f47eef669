"""Header rules: add, set and remove, on requests to the backend and responses to the client."""

from __future__ import annotations

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import get, site, snapshot


def test_request_and_response_header_rules(backend_factory, worker_factory):
    a = backend_factory()
    rules = [
        snap.HeaderRule(direction="request", op="set", name="X-Tenant", value="acme"),
        snap.HeaderRule(direction="request", op="add", name="X-Tag", value="edge"),
        snap.HeaderRule(direction="request", op="remove", name="X-Debug"),
        snap.HeaderRule(direction="response", op="set", name="Cache-Control", value="no-store"),
        snap.HeaderRule(direction="response", op="add", name="Link", value="</a.css>; rel=preload"),
        snap.HeaderRule(direction="response", op="add", name="Link", value="</b.js>; rel=preload"),
        snap.HeaderRule(direction="response", op="remove", name="X-Backend"),
    ]
    w = worker_factory(snapshot(
        site("hr.test", [a], policies=snap.Policies(headers=rules, ip_rules=snap.IpRules(deny=["127.0.0.77"]))),
        site("plain.test", [a]),
    ))
    reply = get(w, "hr.test", headers={"X-Tenant": "spoofed", "X-Debug": "1"})
    seen = reply.json()["headers"]
    assert seen["x-tenant"] == "acme" and "x-debug" not in seen
    assert seen["x-tag"] == "edge"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers.get_all("link") == ["</a.css>; rel=preload", "</b.js>; rel=preload"]  # add appends
    assert "x-backend" not in reply.headers
    untouched = get(w, "plain.test", headers={"X-Debug": "1"})
    assert untouched.json()["headers"]["x-debug"] == "1" and untouched.headers["x-backend"] == a.name
    # response rules also dress the platform's own pages for the site
    refused = get(w, "hr.test", source="127.0.0.77")
    assert refused.status == 403 and refused.headers["cache-control"] == "no-store" and refused.headers["link"]


def test_added_response_header_appears_once_on_a_cache_hit(backend_factory, worker_factory):
    a = backend_factory()
    policies = snap.Policies(
        cache=snap.CachePolicy(default_ttl=60),
        headers=[snap.HeaderRule(direction="response", op="add", name="X-Frame-Options", value="DENY")],
    )
    w = worker_factory(snapshot(site("hrc.test", [a], policies=policies)))
    first, second = get(w, "hrc.test", "/page"), get(w, "hrc.test", "/page")
    assert a.hits == 1  # the second answer came from the cache
    assert first.headers.get_all("x-frame-options") == ["DENY"]
    assert second.headers.get_all("x-frame-options") == ["DENY"]
