"""The shared cache: hits never reach the origin, RFC 9111 decides what is stored and for how long,
Vary splits entries, validators revalidate, stale responses cover a dead origin."""

from __future__ import annotations

import time

from proxyworker import snapshot as snap

from .conftest import get, site, snapshot


def cached_site(host, backends, **policy):
    return site(host, backends, policies=snap.Policies(cache=snap.CachePolicy(**policy)))


def test_cache_serves_hit_without_contacting_backend(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "public, max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    first = get(w, "c.test", "/page")
    assert first.status == 200 and first.headers["x-cache"] == "MISS"
    second = get(w, "c.test", "/page")
    assert second.headers["x-cache"] == "HIT"
    assert second.body == first.body
    assert int(second.headers["age"]) >= 0
    assert origin.hits == 1
    # The origin's identity stays hidden on hits too.
    assert "server" not in second.headers and "x-powered-by" not in second.headers


def test_head_is_answered_from_a_stored_get(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    body = get(w, "c.test", "/h").body
    head = get(w, "c.test", "/h", method="HEAD")
    assert head.headers["x-cache"] == "HIT" and head.body == b""
    assert int(head.headers["content-length"]) == len(body)
    assert origin.hits == 1


def test_uncacheable_responses_are_not_stored(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "private, max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    for _ in range(2):
        assert get(w, "c.test", "/p").headers["x-cache"] == "MISS"
    origin.headers["Cache-Control"] = "no-store"
    for _ in range(2):
        get(w, "c.test", "/ns")
    origin.headers["Cache-Control"] = "max-age=60"
    origin.status = 500
    for _ in range(2):
        get(w, "c.test", "/err")
    origin.status = 200
    origin.headers.pop("Cache-Control")  # no explicit freshness and no default TTL: not stored
    for _ in range(2):
        get(w, "c.test", "/plain")
    assert origin.hits == 8


def test_authorization_cookies_and_unsafe_methods_bypass(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin], bypass_paths=["/admin"])))
    get(w, "c.test", "/x")
    assert get(w, "c.test", "/x", headers={"Authorization": "Bearer t"}).headers["x-cache"] == "BYPASS"
    assert get(w, "c.test", "/x", headers={"Cookie": "session=1"}).headers["x-cache"] == "BYPASS"
    assert get(w, "c.test", "/admin/x").headers["x-cache"] == "BYPASS"
    assert get(w, "c.test", "/admin/x").headers["x-cache"] == "BYPASS"
    assert origin.hits == 5
    # RFC 9111 §4.4: a successful POST to the URL invalidates what is stored for it.
    assert get(w, "c.test", "/x", method="POST", body=b"{}").headers["x-cache"] == "BYPASS"
    assert get(w, "c.test", "/x").headers["x-cache"] == "MISS"


def test_cookies_do_not_bypass_when_the_site_says_so(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin], bypass_on_cookie=False)))
    get(w, "c.test", "/x", headers={"Cookie": "a=1"})
    assert get(w, "c.test", "/x", headers={"Cookie": "b=2"}).headers["x-cache"] == "HIT"


def test_vary_splits_entries(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"})
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    en = get(w, "c.test", "/v", headers={"Accept-Language": "en"})
    fr = get(w, "c.test", "/v", headers={"Accept-Language": "fr"})
    assert en.headers["x-cache"] == fr.headers["x-cache"] == "MISS"
    again_en = get(w, "c.test", "/v", headers={"Accept-Language": "en"})
    again_fr = get(w, "c.test", "/v", headers={"Accept-Language": "fr"})
    assert again_en.headers["x-cache"] == again_fr.headers["x-cache"] == "HIT"
    assert again_en.json()["headers"]["accept-language"] == "en"
    assert again_fr.json()["headers"]["accept-language"] == "fr"
    assert origin.hits == 2


def test_site_overrides_ttl_ignored_query_params_and_default_ttl(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=0"})
    w = worker_factory(snapshot(cached_site(
        "c.test", [origin], ttl_by_prefix={"/static/": 60}, ignore_query_params=["utm_*", "fbclid"],
    )))
    get(w, "c.test", "/static/a.css?v=1&utm_source=x")
    hit = get(w, "c.test", "/static/a.css?fbclid=9&v=1&utm_medium=y")
    assert hit.headers["x-cache"] == "HIT"
    assert get(w, "c.test", "/static/a.css?v=2").headers["x-cache"] == "MISS"
    origin.headers.pop("Cache-Control")
    w.swap(snapshot(cached_site("c.test", [origin], default_ttl=60), version=2))
    get(w, "c.test", "/d")
    assert get(w, "c.test", "/d").headers["x-cache"] == "HIT"


def test_expired_entry_is_revalidated_with_etag(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=1"}, etag='"v1"')
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    first = get(w, "c.test", "/e")
    time.sleep(1.2)
    again = get(w, "c.test", "/e")
    assert again.headers["x-cache"] == "REVALIDATED"
    assert again.status == 200 and again.body == first.body
    assert origin.not_modified == 1
    assert get(w, "c.test", "/e").headers["x-cache"] == "HIT"  # fresh again after the 304


def test_client_conditional_gets_304_from_the_cache(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"}, etag='"abc"')
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    get(w, "c.test", "/cond")
    reply = get(w, "c.test", "/cond", headers={"If-None-Match": '"abc"'})
    assert reply.status == 304 and reply.headers["x-cache"] == "HIT" and reply.body == b""
    assert reply.headers["etag"] == '"abc"'
    assert get(w, "c.test", "/cond", headers={"If-None-Match": '"other"'}).status == 200
    assert origin.hits == 1


def test_stale_if_error_serves_when_every_backend_is_down(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=1, stale-if-error=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    body = get(w, "c.test", "/sie").body
    origin.stop()
    time.sleep(1.2)
    for _ in range(4):  # refused connections, then the backend ejected (the balancer's own 503)
        reply = get(w, "c.test", "/sie")
        assert reply.status == 200 and reply.headers["x-cache"] == "STALE"
        assert reply.body == body
    assert get(w, "c.test", "/never-cached").status in (502, 503)


def test_stale_if_error_covers_origin_5xx_but_not_must_revalidate(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=1"})
    w = worker_factory(snapshot(cached_site("c.test", [origin], stale_if_error=60)))
    get(w, "c.test", "/a")
    origin.headers["Cache-Control"] = "max-age=1, must-revalidate"
    get(w, "c.test", "/b")
    time.sleep(1.2)
    origin.status = 500
    assert get(w, "c.test", "/a").headers["x-cache"] == "STALE"
    reply = get(w, "c.test", "/b")
    assert reply.status == 500 and reply.headers["x-cache"] == "MISS"


def test_stale_while_revalidate_answers_at_once_and_refreshes(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=1, stale-while-revalidate=30"}, etag='"s"')
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    get(w, "c.test", "/swr")
    time.sleep(1.2)
    origin.delay = 1.0  # a slow origin does not slow the stale answer
    started = time.monotonic()
    reply = get(w, "c.test", "/swr")
    assert reply.headers["x-cache"] == "STALE" and time.monotonic() - started < 0.8
    deadline = time.monotonic() + 5
    while origin.not_modified < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert origin.not_modified == 1
    time.sleep(0.1)
    assert get(w, "c.test", "/swr").headers["x-cache"] == "HIT"


def test_concurrent_requests_for_an_expired_entry_make_one_revalidation(backend_factory, worker_factory):
    from concurrent.futures import ThreadPoolExecutor

    origin = backend_factory(headers={"Cache-Control": "max-age=1"}, etag='"r"')
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    get(w, "c.test", "/herd")
    time.sleep(1.2)
    origin.delay = 0.5
    with ThreadPoolExecutor(30) as pool:
        replies = list(pool.map(lambda _: get(w, "c.test", "/herd"), range(30)))
    assert {r.status for r in replies} == {200}
    assert origin.not_modified == 1 and origin.hits == 2
    assert sorted(r.headers["x-cache"] for r in replies).count("REVALIDATED") == 1
