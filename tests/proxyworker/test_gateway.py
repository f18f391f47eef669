"""API gateway: path rewrites on routes, and aggregation routes fanning out to several backends."""

from __future__ import annotations

import time

from proxyworker import snapshot as snap

from .conftest import backend_spec, get, site, snapshot


def test_routes_strip_or_replace_their_prefix(backend_factory, worker_factory):
    origin = backend_factory()
    routes = [
        snap.Route(path_prefix="/api/", rewrite_prefix="/internal/v2/"),
        snap.Route(path_prefix="/legacy", rewrite_prefix="/v1"),
        snap.Route(path_prefix="/strip/", strip_prefix=True),
        snap.Route(path_prefix="/"),
    ]
    w = worker_factory(snapshot(site("gw.test", [origin], routes=routes)))
    assert get(w, "gw.test", "/api/users/7?full=1").json()["path"] == "/internal/v2/users/7?full=1"
    assert get(w, "gw.test", "/api/").json()["path"] == "/internal/v2/"
    assert get(w, "gw.test", "/legacy/orders").json()["path"] == "/v1/orders"
    assert get(w, "gw.test", "/legacy").json()["path"] == "/v1"
    assert get(w, "gw.test", "/strip/a/b").json()["path"] == "/a/b"
    assert get(w, "gw.test", "/other/x").json()["path"] == "/other/x"


def test_a_rewrite_that_does_not_start_with_a_slash_is_rejected():
    bad = snapshot(site("gw.test", [], routes=[snap.Route(path_prefix="/api/", rewrite_prefix="internal/")]))
    try:
        snap.validate(bad)
    except snap.SnapshotError as exc:
        assert "rewrite" in str(exc)
    else:
        raise AssertionError("accepted a relative rewrite")


def _aggregate_site(fast, slow, down, timeout=1.0):
    pools = [snap.Pool(name=n, backends=[backend_spec(b)]) for n, b in (("users", fast), ("orders", slow), ("stock", down))]
    parts = [
        snap.AggregatePart(key="user", path="/users/7", pool="users", timeout=timeout),
        snap.AggregatePart(key="orders", path="/orders?user=7", pool="orders", timeout=timeout),
        snap.AggregatePart(key="stock", path="/stock", pool="stock", timeout=timeout),
    ]
    routes = [snap.Route(path_prefix="/dashboard", pool="users", aggregate=parts), snap.Route(path_prefix="/")]
    return site("gw.test", [fast], routes=routes, pools=pools)


def test_an_aggregation_route_merges_three_backends_one_slow_one_down_within_the_timeout(backend_factory, worker_factory):
    fast = backend_factory("users")
    slow = backend_factory("orders", delay=3.0)  # well beyond the 1 s part timeout
    down = backend_factory("stock")
    w = worker_factory(snapshot(_aggregate_site(fast, slow, down)))
    down.stop()  # the port now refuses connections

    started = time.monotonic()
    reply = get(w, "gw.test", "/dashboard?lang=en", headers={"X-Trace": "abc"})
    elapsed = time.monotonic() - started

    assert elapsed < 2.0, elapsed  # bounded by the largest part timeout, not by the slow backend
    assert reply.status == 200
    doc = reply.json()
    assert set(doc) == {"user", "orders", "stock"}
    assert doc["user"]["backend"] == "users"
    assert doc["user"]["path"] == "/users/7?lang=en"  # the client's query goes to every part
    assert doc["user"]["headers"]["x-trace"] == "abc" and doc["user"]["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert doc["orders"] == {"error": "timeout"}
    assert doc["stock"] == {"error": "unavailable"}
    assert reply.headers["x-portico-aggregate-failed"] == "orders, stock"
    assert reply.headers["content-type"] == "application/json"
    assert slow.requests[0][1] == "/orders?user=7&lang=en"


def test_an_aggregation_part_answering_an_error_status_is_marked_and_all_failed_is_a_502(backend_factory, worker_factory):
    fast = backend_factory("users")
    broken = backend_factory("orders", status=503)
    text = backend_factory("stock", body=b"42 left", content_type="text/plain")
    w = worker_factory(snapshot(_aggregate_site(fast, broken, text)))
    doc = get(w, "gw.test", "/dashboard").json()
    assert doc["orders"] == {"error": "status 503"} and doc["stock"] == "42 left"

    fast.stop()
    text.stop()
    reply = get(w, "gw.test", "/dashboard")
    assert reply.status == 502
    assert reply.json() == {"user": {"error": "unavailable"}, "orders": {"error": "status 503"}, "stock": {"error": "unavailable"}}
    assert get(w, "gw.test", "/dashboard", method="POST", body=b"{}").status == 405


def test_an_aggregation_part_fails_over_to_another_backend_of_its_pool(backend_factory, worker_factory):
    first, second = backend_factory("a1"), backend_factory("a2")
    pool = snap.Pool(name="default", backends=[backend_spec(first), backend_spec(second)])
    parts = [snap.AggregatePart(key=f"p{i}", path=f"/p{i}") for i in range(4)]
    routes = [snap.Route(path_prefix="/all", aggregate=parts), snap.Route(path_prefix="/")]
    spec = site("gw.test", [first, second], routes=routes)
    spec.pools = [pool]
    w = worker_factory(snapshot(spec))
    first.stop()
    doc = get(w, "gw.test", "/all").json()
    assert {doc[f"p{i}"]["backend"] for i in range(4)} == {"a2"}
