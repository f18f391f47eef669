"""Response compression: zstd, brotli or gzip, negotiated from ``Accept-Encoding`` (q-values).

Runs in ``response`` (the whole body is in hand), after the other response addons and before the
cache stores the result: a compressed variant is stored per coding and later hits cost nothing
here (``portico.cache_hit``). Never compressed: bodies that already carry a coding, types outside
the site's allowlist (images, video, archives are compressed already), bodies under
``min_bytes``, ``Cache-Control: no-transform`` (RFC 9110 §7.7), streamed bodies, HEAD, 1xx/204/206/
304. A response that would be compressed for some client gets ``Vary: Accept-Encoding`` even when
this client takes identity, so shared caches keep the variants apart. A strong ETag becomes weak
on a compressed body (RFC 9110 §8.8.3: a different representation).

Bodies above ``THREAD_BYTES`` are compressed in a thread, so one large response does not stall the
process's other connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mitmproxy import http

from proxyworker import compression
from proxyworker import snapshot as snap

THREAD_BYTES = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 206, 304})


class SiteCompression:
    """One site's CompressionPolicy, precompiled."""

    __slots__ = ("codings", "min_bytes", "type_prefixes", "encoders", "_types")

    def __init__(self, policy: snap.CompressionPolicy):
        self.codings = tuple(policy.encodings)
        self.min_bytes = max(1, policy.min_bytes)
        self.type_prefixes = tuple(t.lower() for t in policy.content_types)
        levels = {"gzip": policy.gzip_level, "br": policy.brotli_level, "zstd": policy.zstd_level}
        self.encoders: dict[str, Callable[[bytes], bytes]] = {c: compression.encoder(c, levels[c]) for c in self.codings}
        self._types: dict[str, bool] = {}

    def compressible_type(self, content_type: str) -> bool:
        known = self._types.get(content_type)
        if known is None:
            mime = content_type.partition(";")[0].strip().lower()
            # "text/" is a prefix; "application/json" also matches "application/json; charset=..."
            known = bool(mime) and any(mime.startswith(t) if t.endswith("/") else mime == t for t in self.type_prefixes)
            if len(self._types) < 1024:
                self._types[content_type] = known
        return known


def compression_for(site) -> SiteCompression | None:
    """Compiled on first use per snapshot, kept in the SiteTable's ``extra``."""
    try:
        return site.extra["compress"]
    except KeyError:
        pass
    policy = site.spec.policies.compression
    compiled = SiteCompression(policy) if policy is not None and policy.enabled and policy.encodings else None
    site.extra["compress"] = compiled
    return compiled


def add_vary(headers: http.Headers, name: str) -> None:
    existing = [v.strip().lower() for value in headers.get_all("vary") for v in value.split(",")]
    if name not in existing and "*" not in existing:
        headers.add("vary", name.title())


class Compress:
    async def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or flow.metadata.get("portico.cache_hit"):
            return
        site = flow.metadata.get("portico.site")
        if site is None:
            return
        policy = compression_for(site)
        if policy is None or resp.stream or flow.request.method == "HEAD":
            return
        if resp.status_code < 200 or resp.status_code in _NO_BODY_STATUSES:
            return
        headers = resp.headers
        coding = headers.get("content-encoding")
        if coding is not None and coding.strip().lower() not in ("", "identity"):
            return  # never twice
        if not policy.compressible_type(headers.get("content-type", "")):
            return
        body = resp.raw_content
        if body is None or len(body) < policy.min_bytes:
            return
        cache_control = headers.get("cache-control")
        if cache_control is not None and "no-transform" in cache_control.lower():
            return
        add_vary(headers, "accept-encoding")
        chosen = compression.negotiate(flow.request.headers.get("accept-encoding"), policy.codings)
        if chosen is None:
            return
        encode = policy.encoders[chosen]
        encoded = await asyncio.to_thread(encode, body) if len(body) > THREAD_BYTES else encode(body)
        if len(encoded) >= len(body):
            return  # incompressible after all: identity is smaller
        resp.raw_content = encoded
        headers["content-encoding"] = chosen
        if "transfer-encoding" not in headers:
            headers["content-length"] = str(len(encoded))
        etag = headers.get("etag")
        if etag is not None and not etag.startswith("W/"):
            headers["etag"] = "W/" + etag
