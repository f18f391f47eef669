"""Routing by Host and path, the platform's own pages, ACME HTTP-01, HTTPS redirect and HSTS."""

from __future__ import annotations

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import get, site, snapshot


def test_requests_reach_the_site_of_their_host(backend_factory, worker_factory):
    a, b = backend_factory("alpha"), backend_factory("beta")
    w = worker_factory(snapshot(site("alpha.test", [a]), site("beta.test", [b])))
    assert get(w, "alpha.test").backend == "alpha"
    assert get(w, "beta.test").backend == "beta"
    assert get(w, "BETA.test:8080").backend == "beta"  # case and port do not matter


def test_wildcard_hostname_matches_one_label(backend_factory, worker_factory):
    wild, exact = backend_factory("wild"), backend_factory("exact")
    w = worker_factory(snapshot(site(["*.apps.test"], [wild]), site("www.apps.test", [exact])))
    assert get(w, "one.apps.test").backend == "wild"
    assert get(w, "www.apps.test").backend == "exact"  # exact beats wildcard
    assert get(w, "a.b.apps.test").status == 404  # a wildcard covers a single label
    assert get(w, "apps.test").status == 404


def test_unknown_host_gets_the_platform_404_not_a_backend(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("known.test", [a])))
    r = get(w, "unknown.test")
    assert r.status == 404
    assert b"Portico" in r.body
    assert r.backend is None
    assert a.hits == 0


def test_path_prefix_routes_to_its_pool_longest_prefix_first(backend_factory, worker_factory):
    web, api, v2 = backend_factory("web"), backend_factory("api"), backend_factory("v2")
    pools = [
        snap.Pool(name="api", backends=[snap.Backend(id="api", address="127.0.0.1", port=api.port)]),
        snap.Pool(name="v2", backends=[snap.Backend(id="v2", address="127.0.0.1", port=v2.port)]),
    ]
    routes = [
        snap.Route(path_prefix="/"),
        snap.Route(path_prefix="/api/", pool="api", strip_prefix=True),
        snap.Route(path_prefix="/api/v2/", pool="v2"),
    ]
    w = worker_factory(snapshot(site("r.test", [web], pools=pools, routes=routes)))
    assert get(w, "r.test", "/index.html").backend == "web"
    r = get(w, "r.test", "/api/users?x=1")
    assert r.backend == "api"
    assert r.json()["path"] == "/users?x=1"  # prefix stripped, query kept
    r = get(w, "r.test", "/api/v2/users")
    assert r.backend == "v2"
    assert r.json()["path"] == "/api/v2/users"


def test_host_header_reaches_the_backend_unchanged(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("keep.test", [a])))
    assert get(w, "keep.test").json()["headers"]["host"] == "keep.test"


def test_two_host_headers_are_a_400(backend_factory, worker_factory):
    import socket

    a = backend_factory()
    w = worker_factory(snapshot(site("dup.test", [a])))
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: dup.test\r\nHost: other.test\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    assert a.hits == 0


def test_acme_challenge_is_answered_by_the_worker_for_its_hostname_only(backend_factory, worker_factory):
    a = backend_factory()
    token, key_auth = "tok_123-abc", "tok_123-abc.thumbprint"
    w = worker_factory(snapshot(
        site("acme.test", [a], force_https=True), site("other.test", [a]),
        acme=[snap.AcmeChallenge(hostname="acme.test", token=token, key_authorization=key_auth)],
    ))
    r = get(w, "acme.test", f"/.well-known/acme-challenge/{token}")
    assert r.status == 200  # before the HTTPS redirect
    assert r.body.decode() == key_auth
    assert r.headers["content-type"].startswith("text/plain")
    assert get(w, "other.test", f"/.well-known/acme-challenge/{token}").backend is not None  # not this host's
    assert get(w, "acme.test", "/.well-known/acme-challenge/unknown").status == 301  # falls through
    assert a.hits == 1


def test_force_https_redirects_plain_http_to_the_https_port(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("secure.test", [a], force_https=True)))
    r = get(w, "secure.test", "/a/b?c=d")
    assert r.status == 301
    assert r.headers["location"] == f"https://secure.test:{w.https_port}/a/b?c=d"
    assert get(w, "secure.test", "/form", method="POST", body=b"x").status == 308
    assert a.hits == 0


def test_both_event_loops_serve(backend_factory, worker_factory):
    a = backend_factory("alpha")
    default = worker_factory(snapshot(site("alpha.test", [a])))
    plain = worker_factory(snapshot(site("alpha.test", [a])), event_loop="asyncio")
    for w, loop in ((default, "uvloop"), (plain, "asyncio")):
        assert get(w, "alpha.test").backend == "alpha"
        assert f"event loop: {loop}" in w.log()
