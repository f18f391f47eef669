"""Rate limiting: a token bucket per client (IP, or the value of a header such as an API key) per
``RateLimit`` policy whose ``path_prefix`` matches, shared by every process of the node
(``proxyworker.ratelimit.SharedBuckets``).

A bucket holds ``requests + burst`` tokens and refills at ``requests / per_seconds`` per second;
each request takes one. With ``action: block`` a request finding its bucket empty gets 429 and
``Retry-After`` (seconds until the next token); with ``action: log`` it goes through and the
worker logs it. Every answer of a limited path carries the IETF draft headers
(draft-ietf-httpapi-ratelimit-headers): ``RateLimit-Limit`` (the bucket's size),
``RateLimit-Remaining`` (whole tokens left), ``RateLimit-Reset`` (seconds until the bucket is full
again) and ``RateLimit-Policy`` (``<requests>;w=<seconds>``). When several limits apply, the headers
describe the one with the fewest tokens left. A header-keyed limit falls back to the client IP when
the request lacks the header (a client cannot escape its limit by leaving the key out).

With ``--ratelimit-redis URL`` the buckets live in Redis and hold across nodes; each limited
request awaits one Redis round trip. If Redis fails or is slow (50 ms), the node's own buckets
decide and Redis is retried after 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from mitmproxy import http

from proxyworker import pages
from proxyworker.addons.headers import request_id_of
from proxyworker.filtering import SiteFilters, log_event
from proxyworker.forwarded import client_ip
from proxyworker.ratelimit import Limit, RedisBuckets, SharedBuckets, Verdict

logger = logging.getLogger("proxyworker.ratelimit")


class RateLimiter:
    def __init__(self, buckets_path: str, redis_url: str | None = None):
        self.buckets = SharedBuckets(buckets_path)
        self.redis = RedisBuckets(redis_url) if redis_url else None

    def done(self) -> None:
        self.buckets.close()  # the Redis connections close with the process

    def requestheaders(self, flow: http.HTTPFlow):
        if flow.response or flow.error:
            return None
        site = flow.metadata.get("portico.site")
        if site is None:
            return None
        filters: SiteFilters | None = site.extra.get("filters")
        if filters is None or not filters.rate_limits:
            return None
        path = flow.metadata.get("portico.client_path", flow.request.path)
        matching = []
        for limit in filters.rate_limits:
            if path.startswith(limit.prefix):
                client = flow.request.headers.get(limit.header) if limit.header else None
                key = limit.key_prefix + (b"h:" + client.encode() if client else b"ip:" + client_ip(flow).encode())
                matching.append((limit, key))
        if not matching:
            return None
        now = time.monotonic()
        if self.redis is not None and self.redis.usable(now):
            return self._across_nodes(flow, matching)  # a coroutine: mitmproxy awaits it
        self._decide(flow, [(limit, self.buckets.take(key, limit.capacity, limit.rate, now)) for limit, key in matching])
        return None

    async def _across_nodes(self, flow: http.HTTPFlow, matching: list[tuple[Limit, bytes]]) -> None:
        redis = self.redis
        assert redis is not None
        results = []
        for limit, key in matching:
            verdict = None
            if redis.usable(time.monotonic()):
                try:
                    verdict = await asyncio.wait_for(redis.take(key, limit.capacity, limit.rate), redis.timeout)
                except Exception as exc:  # any Redis trouble: limit on this node instead, for a while
                    redis.down_until = time.monotonic() + redis.retry_after
                    logger.warning("rate-limit Redis %s unavailable (%s); limiting per node for %.0f s",
                                   redis.url, exc.__class__.__name__, redis.retry_after)
            if verdict is None:
                verdict = self.buckets.take(key, limit.capacity, limit.rate, time.monotonic())
            results.append((limit, verdict))
        self._decide(flow, results)

    def _decide(self, flow: http.HTTPFlow, results: list[tuple[Limit, Verdict]]) -> None:
        shown: tuple[Limit, Verdict] | None = None
        refused: tuple[Limit, Verdict] | None = None
        for limit, verdict in results:
            if shown is None or verdict.remaining < shown[1].remaining:
                shown = (limit, verdict)
            if not verdict.allowed:
                if limit.action == "block":
                    if refused is None:
                        refused = (limit, verdict)
                else:
                    request_id_of(flow)
                    log_event(logger, logging.WARNING, "ratelimit", flow, action="log", rule=limit.name)
                    flow.metadata.setdefault("portico.logged", []).append({"reason": "ratelimit", "rule": limit.name})
        if shown is None:
            return
        if refused is not None:
            limit, verdict = refused
            headers = _headers(limit, verdict)
            headers["retry-after"] = str(max(1, math.ceil(verdict.retry_after)))
            request_id_of(flow)
            flow.response = pages.error_response(429, None, headers)
            flow.metadata["portico.local"] = True
            flow.metadata["portico.blocked"] = {"reason": "ratelimit", "rule": limit.name}
            log_event(logger, logging.WARNING, "ratelimit", flow, action="block", rule=limit.name, status=429)
            return
        flow.metadata["portico.ratelimit_headers"] = tuple((k.encode(), v.encode()) for k, v in _headers(*shown).items())

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        fields = flow.metadata.get("portico.ratelimit_headers")
        if fields is not None and flow.response is not None:
            headers = flow.response.headers
            # One tuple rebuild instead of four Headers.__setitem__ calls (each re-scans the
            # fields); an origin's own RateLimit-* fields are replaced by the platform's.
            headers.fields = tuple(f for f in headers.fields if not f[0].lower().startswith(b"ratelimit")) + fields

    def response(self, flow: http.HTTPFlow) -> None:
        # A retried response replaced the one responseheaders saw (see the balancer).
        if flow.metadata.get("portico.retried_on") is not None:
            self.responseheaders(flow)


def _headers(limit: Limit, verdict: Verdict) -> dict[str, str]:
    return {
        "ratelimit-limit": str(limit.limit),
        "ratelimit-remaining": str(verdict.remaining),
        "ratelimit-reset": str(math.ceil(verdict.reset)),
        "ratelimit-policy": limit.policy,
    }
