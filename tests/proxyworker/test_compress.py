"""Compression: negotiated from Accept-Encoding, round-trips in every coding, never where it must
not happen, and each coding is its own cached variant."""

from __future__ import annotations

import gzip

import pytest

from proxyworker import compression
from proxyworker import snapshot as snap

from .conftest import get, site, snapshot

PAGE = b"<html><body>" + b"".join(b"<p>Paragraph %d of a compressible page.</p>" % i for i in range(300)) + b"</body></html>"


def compressing_site(host, backends, cache=False, **policy):
    return site(host, backends, policies=snap.Policies(
        compression=snap.CompressionPolicy(**policy), cache=snap.CachePolicy() if cache else None,
    ))


@pytest.fixture
def page_worker(backend_factory, worker_factory):
    origin = backend_factory(body=PAGE, content_type="text/html; charset=utf-8",
                             headers={"Cache-Control": "max-age=60"}, etag='"page1"')
    return origin, worker_factory(snapshot(compressing_site("z.test", [origin], cache=True)))


def test_every_coding_round_trips_and_is_cached_as_its_own_variant(page_worker):
    origin, w = page_worker
    for coding in ("zstd", "br", "gzip"):
        for expected in ("MISS", "HIT"):
            reply = get(w, "z.test", "/page", headers={"Accept-Encoding": coding})
            assert reply.headers["content-encoding"] == coding
            assert reply.headers["x-cache"] == expected
            assert "accept-encoding" in reply.headers["vary"].lower()
            assert compression.decode(coding, reply.body) == PAGE
            assert len(reply.body) < len(PAGE) // 5
            assert int(reply.headers["content-length"]) == len(reply.body)
            assert reply.headers["etag"] == 'W/"page1"'  # another representation: a weak validator
    plain = get(w, "z.test", "/page")
    assert plain.body == PAGE and "content-encoding" not in plain.headers
    assert origin.hits == 4
    # Any header naming the same preferred coding shares the variant.
    assert get(w, "z.test", "/page", headers={"Accept-Encoding": "gzip;q=0.5, zstd"}).headers["x-cache"] == "HIT"


def test_q_values_and_server_preference_choose_the_coding(backend_factory, worker_factory):
    origin = backend_factory(body=PAGE, content_type="text/html")
    w = worker_factory(snapshot(compressing_site("z.test", [origin])))
    cases = {
        "gzip, deflate, br, zstd": "zstd",  # equal q: the site's order (zstd, br, gzip)
        "gzip;q=1.0, br;q=0.5": "gzip",
        "br;q=0, *": "zstd",
        "zstd;q=0, br;q=0, *;q=0.1": "gzip",
        "identity": None,
        "deflate": None,
    }
    for header, coding in cases.items():
        reply = get(w, "z.test", "/", headers={"Accept-Encoding": header})
        assert reply.headers.get("content-encoding") == coding, header


def test_nothing_is_compressed_twice_or_against_the_rules(backend_factory, worker_factory):
    already = gzip.compress(PAGE)
    origins = {
        "/encoded": backend_factory(body=already, content_type="text/html", headers={"Content-Encoding": "gzip"}),
        "/image": backend_factory(body=PAGE, content_type="image/png"),
        "/small": backend_factory(body=b"tiny body", content_type="text/plain"),
        "/no-transform": backend_factory(body=PAGE, content_type="text/html", headers={"Cache-Control": "no-transform"}),
    }
    routes = [snap.Route(path_prefix=path, pool=path.strip("/")) for path in origins]
    pools = [snap.Pool(name=path.strip("/"), backends=[snap.Backend(id=path.strip("/"), address="127.0.0.1", port=b.port)])
             for path, b in origins.items()]
    spec = compressing_site("z.test", [origins["/image"]])
    spec = snap.Site(**{**{f: getattr(spec, f) for f in spec.__struct_fields__}, "routes": routes,
                        "pools": [*spec.pools, *pools]})
    w = worker_factory(snapshot(spec))
    encoded = get(w, "z.test", "/encoded", headers={"Accept-Encoding": "gzip, br, zstd"})
    assert encoded.headers["content-encoding"] == "gzip" and encoded.body == already
    for path in ("/image", "/small", "/no-transform"):
        reply = get(w, "z.test", path, headers={"Accept-Encoding": "gzip, br, zstd"})
        assert "content-encoding" not in reply.headers, path
        assert reply.body == origins[path].body


def test_levels_come_from_the_policy(backend_factory, worker_factory):
    origin = backend_factory(body=PAGE, content_type="text/html")
    w = worker_factory(snapshot(compressing_site("z.test", [origin], gzip_level=1, brotli_level=11)))
    fast_gzip = get(w, "z.test", "/", headers={"Accept-Encoding": "gzip"}).body
    best_br = get(w, "z.test", "/", headers={"Accept-Encoding": "br"}).body
    assert fast_gzip == compression.encoder("gzip", 1)(PAGE)
    assert best_br == compression.encoder("br", 11)(PAGE)
    assert best_br != compression.encoder("br", 0)(PAGE)  # not mitmproxy's fastest level
