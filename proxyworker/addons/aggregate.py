"""API gateway aggregation: one GET fans out to several backend paths and is answered with one JSON
document merging their bodies under named keys.

A route with ``aggregate`` parts is never proxied. For a GET, every part is fetched concurrently
from its pool (the route's, or the part's own; a backend per part, chosen by the pool's own ``pick_backend``, so health
checks, ejection and weights apply; a backend that refuses the connection is marked and the part
tries another one), each bounded by its own timeout; so the whole answer takes at most the largest
part timeout. The answer::

    200 {"user": {...}, "orders": [...], "stock": {"error": "timeout"}}
    X-Portico-Aggregate-Failed: stock

A part that failed carries ``{"error": "timeout" | "unavailable" | "status 503"}`` and is listed in
the header; a JSON body is merged parsed, any other body as text. When every part failed the
status is 502. The client's query string is passed to every part; other methods get 405.

Placed right before the balancer: after every addon that may refuse the request (IP rules, rate
limits, WAF) and after the cache, and with the balancer skipping the flow because it is answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from mitmproxy import http

from proxyworker import pages
from proxyworker.addons.headers import request_id_of
from proxyworker.balancer import BackendState, Pool
from proxyworker.forwarded import client_https, client_ip
from proxyworker.snapshot import AggregatePart
from proxyworker.tables import RouteTable
from proxyworker.upstream import UpstreamError, fetch

logger = logging.getLogger(__name__)

FAILED_HEADER = "x-portico-aggregate-failed"
MAX_PART_BYTES = 4 * 1024 * 1024  # a part's body is buffered whole, and so is the merged answer
# Not forwarded to parts: hop-by-hop headers (RFC 9110 §7.6.1), the client's body framing (a GET
# sends none), and Accept-Encoding: bodies are parsed here, so parts must answer uncompressed.
_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                   b"proxy-connection", b"content-length", b"accept-encoding"})


class Aggregate:
    def requestheaders(self, flow: http.HTTPFlow):
        if flow.response or flow.error:
            return None
        route: RouteTable | None = flow.metadata.get("portico.route")
        if route is None or not route.aggregate:
            return None
        if flow.request.method != "GET":
            flow.response = pages.error_response(405, "This address combines several answers and only accepts GET.")
            flow.response.headers["allow"] = "GET"
            flow.metadata["portico.local"] = True
            return None
        # A coroutine only for aggregation routes: mitmproxy awaits what a hook returns.
        return self._answer(flow, route)

    async def _answer(self, flow: http.HTTPFlow, route: RouteTable) -> None:
        req = flow.request
        _, _, query = req.path.partition("?")
        headers = [(k, v) for k, v in req.headers.fields if k.lower() not in _DROP and not k.lower().startswith(b"x-forwarded-")]
        peer = flow.client_conn.peername[0]  # the next hop appends the address it saw
        chain = req.headers.get("x-forwarded-for")
        headers += [
            (b"x-forwarded-for", (f"{chain}, {peer}" if chain else peer).encode()),
            (b"x-forwarded-proto", b"https" if client_https(flow) else b"http"),
            (b"x-forwarded-host", (req.host_header or "").encode()),
            (b"x-request-id", request_id_of(flow).encode()),
        ]
        results = await asyncio.gather(
            *(self._part(pool, part, query, headers, client_ip(flow)) for part, pool in route.aggregate)
        )
        body: dict[str, object] = {}
        failed: list[str] = []
        for (part, _), (ok, value) in zip(route.aggregate, results, strict=True):
            body[part.key] = value
            if not ok:
                failed.append(part.key)
        status = 502 if failed and len(failed) == len(route.aggregate) else 200
        resp_headers = {"content-type": "application/json", "cache-control": "no-store"}
        if failed:
            resp_headers[FAILED_HEADER] = ", ".join(failed)
        flow.response = http.Response.make(status, json.dumps(body, separators=(",", ":")).encode(), resp_headers)
        flow.metadata["portico.local"] = True  # answered here, from several backends: no single upstream
        flow.metadata["portico.aggregate_failed"] = failed

    async def _part(
        self, pool: Pool, part: AggregatePart, query: str, headers: list[tuple[bytes, bytes]], ip: str
    ) -> tuple[bool, object]:
        target = part.path
        if query:
            target += ("&" if "?" in target else "?") + query
        deadline = time.monotonic() + part.timeout
        tried: list[BackendState] = []
        while True:
            now = time.monotonic()
            backend = pool.pick_backend(ip, now, exclude=tried)
            if backend is None:
                return False, {"error": "unavailable"}
            remaining = deadline - now
            if remaining <= 0:
                return False, {"error": "timeout"}
            tried.append(backend)
            backend.active += 1
            started = time.monotonic()
            try:
                status, resp_headers, data = await fetch(
                    backend, "GET", target, headers, timeout=remaining, max_body=MAX_PART_BYTES
                )
            except UpstreamError as exc:
                timed_out = time.monotonic() >= deadline - 0.001
                backend.record_failure(time.monotonic(), pool.passive)
                if timed_out:
                    return False, {"error": "timeout"}
                # Refused or reset: like the balancer's failover, try another backend in the time left.
                logger.info("aggregate part %s on backend %s failed: %s", part.key, backend.id, exc)
                continue
            finally:
                backend.active -= 1
            backend.record_latency(time.monotonic() - started)
            if status >= 500:
                backend.record_failure(time.monotonic(), pool.passive)
            else:
                backend.record_success()
            if not 200 <= status < 300:
                return False, {"error": f"status {status}"}
            return True, _decode(resp_headers, data)


def _decode(headers: list[tuple[bytes, bytes]], data: bytes) -> object:
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"").decode("latin-1").lower()
    if "json" in content_type:
        try:
            return json.loads(data)
        except ValueError:
            pass
    return data.decode("utf-8", "replace")
