"""Backend choice, failover, retry and passive health checks.

- ``requestheaders``: pick a backend of the route's pool (sticky cookie first, then the site's
  algorithm) and point the request at it; no backend available -> the platform's 503 page.
- ``server_connect`` (async): connect to the chosen backend ourselves, with a timeout; a backend
  that refuses is marked and the next one is tried, so the request fails over instead of failing.
  The open stream is handed to mitmproxy through ``patches.PRECONNECTED``.
- ``responseheaders``: latency (EWMA) and passive accounting: 5xx counts as a failure.
- ``response`` (async): an idempotent request answered 502/503 is retried once on another backend.
- ``error`` (async): the backend dropped the connection before answering (crash, reset, or cut
  off by the upstream timeout): it counts as a failure, and an idempotent request is retried once on
  another backend; the answer replaces mitmproxy's error page (see ``patches``). A timed-out request
  that cannot be retried gets the platform's 504.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import connection, ctx, http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from proxyworker import pages, patches
from proxyworker.balancer import BackendState, Pool
from proxyworker.forwarded import client_https, client_ip
from proxyworker.tables import Live, SiteTable
from proxyworker.upstream import UpstreamError, fetch

logger = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503})
# Hop-by-hop headers (RFC 9110 §7.6.1) are not copied onto a retried response.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"})


class Balancer:
    def __init__(self, live: Live, *, connect_timeout: float = 5.0, upstream_timeout: float = 60.0):
        self.live = live
        self.connect_timeout = connect_timeout
        self.upstream_timeout = upstream_timeout
        # client connection id -> {backend address -> (pool, client address)}: which pool a pending
        # upstream connection belongs to and for whom, so server_connect knows where to fail over.
        self._pending: dict[str, dict[tuple[str, int], tuple[Pool, str]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # --- choosing ---------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        route = flow.metadata.get("portico.route")
        if route is None:
            return
        site: SiteTable = flow.metadata["portico.site"]
        pool = route.pool
        now = time.monotonic()
        backend = None
        if site.sticky_cookie:
            token = flow.request.cookies.get(site.sticky_cookie)
            if token:
                backend = pool.by_token.get(token)
                if backend is not None and not backend.available(now):
                    backend = None
        if backend is None:
            backend = pool.pick_backend(client_ip(flow), now)
        if backend is None:
            flow.response = pages.error_response(503)
            flow.metadata["portico.local"] = True
            return
        self._assign(flow, pool, backend)

    def _assign(self, flow: http.HTTPFlow, pool: Pool, backend: BackendState) -> None:
        backend.active += 1
        flow.metadata["portico.backend"] = backend  # popped when the request is released
        flow.metadata["portico.chosen"] = backend  # kept: metrics and access logs name it after release
        flow.metadata["portico.pool"] = pool
        req = flow.request
        # Writing .data directly: the Host header stays the client's (keep_host_header).
        req.data.host = backend.address
        req.data.port = backend.port
        req.data.scheme = b"https" if backend.scheme == "https" else b"http"
        self._pending.setdefault(flow.client_conn.id, {})[(backend.address, backend.port)] = (pool, client_ip(flow))

    def _release(self, flow: http.HTTPFlow) -> None:
        backend = flow.metadata.pop("portico.backend", None)
        if backend is not None:
            backend.active -= 1
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    def client_disconnected(self, client: connection.Client) -> None:
        self._pending.pop(client.id, None)

    # --- connecting, with failover -----------------------------------------------------------

    async def server_connect(self, data: ServerConnectionHookData) -> None:
        server = data.server
        if server.error or server.address is None:
            return
        picked = self._pending.get(data.client.id, {}).get(server.address)
        if picked is None:
            return
        pool, ip = picked
        backend = next(
            (b for b in pool.backends if (b.address, b.port) == server.address and b.scheme == _scheme(server)),
            None,
        )
        tried: list[BackendState] = []
        while backend is not None:
            try:
                stream = await asyncio.wait_for(
                    asyncio.open_connection(backend.address, backend.port), self.connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                if backend.record_failure(time.monotonic(), pool.passive):
                    logger.warning("backend %s ejected after connect failures (%s)", backend.id, exc or "timeout")
                tried.append(backend)
                backend = pool.pick_backend(ip, time.monotonic(), exclude=tried)
                # A failover target must speak the scheme this connection was opened for.
                while backend is not None and backend.scheme != _scheme(server):
                    tried.append(backend)
                    backend = pool.pick_backend(ip, time.monotonic(), exclude=tried)
                continue
            server.address = (backend.address, backend.port)
            self.live.server_backend[server.id] = backend
            patches.PRECONNECTED.set((server.address, stream))
            return
        server.error = "no backend of this pool accepted the connection"

    def server_disconnected(self, data: ServerConnectionHookData) -> None:
        self.live.server_backend.pop(data.server.id, None)

    def server_connect_error(self, data: ServerConnectionHookData) -> None:
        self.live.server_backend.pop(data.server.id, None)

    # --- outcomes ---------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or "portico.backend" not in flow.metadata:
            return
        if self.upstream_timeout > 0:
            loop = asyncio.get_running_loop()
            self._timers[flow.id] = loop.call_later(self.upstream_timeout, self._upstream_timed_out, flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()
        backend = self._served_by(flow)
        if backend is None or flow.metadata.get("portico.local") or "portico.retried_on" in flow.metadata:
            return
        resp = flow.response
        assert resp is not None
        if flow.request.timestamp_end and resp.timestamp_start:
            backend.record_latency(max(0.0, resp.timestamp_start - flow.request.timestamp_end))
        pool: Pool = flow.metadata["portico.pool"]
        if resp.status_code >= 500:
            if backend.record_failure(time.monotonic(), pool.passive):
                logger.warning("backend %s ejected after %d responses", backend.id, resp.status_code)
        else:
            backend.record_success()

    async def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or flow.metadata.get("portico.local"):
            self._release(flow)
            return
        backend = self._served_by(flow)
        if (
            backend is not None
            and resp.status_code in RETRY_STATUSES
            and not flow.metadata.get("portico.retried")
            and flow.request.method in IDEMPOTENT
            and not flow.request.stream
            and not resp.stream
        ):
            retried = await self._retry(flow, exclude=backend)
            if retried is not None:
                flow.response = retried
        site: SiteTable | None = flow.metadata.get("portico.site")
        served = flow.metadata.get("portico.retried_on") or backend
        if site is not None and site.sticky_cookie and served is not None:
            if flow.request.cookies.get(site.sticky_cookie) != served.cookie_token:
                secure = "; Secure" if client_https(flow) else ""
                flow.response.headers.add(
                    "set-cookie", f"{site.sticky_cookie}={served.cookie_token}; Path=/; HttpOnly; SameSite=Lax{secure}"
                )
        self._release(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        backend = self._served_by(flow)
        if backend is not None and flow.response is None:
            if _client_gave_up(flow):
                # The client hung up: not the backend's fault. Counting it would let anyone eject
                # every backend by opening requests and closing them.
                self._release(flow)
                return
            pool: Pool = flow.metadata["portico.pool"]
            timed_out = flow.metadata.get("portico.timed_out", False)
            if not timed_out:  # a timeout was counted when it fired
                backend.record_failure(time.monotonic(), pool.passive)
            if flow.metadata.get("portico.can_replace"):
                replacement = None
                if flow.request.method in IDEMPOTENT and not flow.request.stream and not flow.metadata.get("portico.retried"):
                    replacement = await self._retry(flow, exclude=backend)
                if replacement is None and timed_out:
                    replacement = pages.error_response(504)
                    flow.metadata["portico.local"] = True
                if replacement is not None:
                    flow.metadata["portico.replacement"] = replacement
                    return  # the response hook releases the backend
        self._release(flow)

    def _served_by(self, flow: http.HTTPFlow) -> BackendState | None:
        chosen = flow.metadata.get("portico.backend")
        if chosen is None:
            return None
        server = flow.server_conn
        return self.live.server_backend.get(server.id, chosen) if server else chosen

    # --- retry ------------------------------------------------------------------------------

    async def _retry(self, flow: http.HTTPFlow, exclude: BackendState) -> http.Response | None:
        """Send the request once more to another backend of the pool; None if that is impossible."""
        flow.metadata["portico.retried"] = True
        pool: Pool = flow.metadata["portico.pool"]
        other = pool.pick_backend(client_ip(flow), time.monotonic(), exclude=(exclude,))
        if other is None:
            return None
        req = flow.request
        headers = [(k, v) for k, v in req.headers.fields if k.lower() not in _HOP_BY_HOP]
        if not any(k.lower() == b"host" for k, _ in headers):
            headers.insert(0, (b"host", (req.host_header or other.address).encode()))
        started = time.monotonic()
        other.active += 1
        try:
            status, resp_headers, body = await fetch(
                other, req.method, req.path, headers, req.raw_content or b"", timeout=self.upstream_timeout
            )
        except UpstreamError as exc:
            other.record_failure(time.monotonic(), pool.passive)
            logger.info("retry of %s %s on backend %s failed: %s", req.method, req.path, other.id, exc)
            return None
        finally:
            other.active -= 1
        other.record_latency(time.monotonic() - started)
        if status >= 500:
            other.record_failure(time.monotonic(), pool.passive)
        else:
            other.record_success()
        flow.metadata["portico.retried_on"] = other
        kept = [(k, v) for k, v in resp_headers if k.lower() not in _HOP_BY_HOP and k.lower() != b"content-length"]
        return http.Response.make(status, body, kept)

    def _upstream_timed_out(self, flow: http.HTTPFlow) -> None:
        self._timers.pop(flow.id, None)
        if flow.response is not None or flow.error is not None or not flow.live:
            return
        backend = self._served_by(flow)
        server = flow.server_conn
        if backend is None or server is None:
            return
        backend.record_failure(time.monotonic(), flow.metadata["portico.pool"].passive)
        flow.metadata["portico.timed_out"] = True
        handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
        if handler is not None and server in handler.transports:
            # Cutting the connection turns the wait into the error path: retry or 504 (see error()).
            handler.close_connection(server)


def _scheme(server: connection.Server) -> str:
    return "https" if server.tls else "http"


def _client_gave_up(flow: http.HTTPFlow) -> bool:
    """Whether a flow's error came from the client side (it disconnected or reset the stream)."""
    msg = flow.error.msg if flow.error else ""
    # mitmproxy reports a client that closes before its response as "Client disconnected." (HTTP/1)
    # and a reset HTTP/2 stream as a stream reset; its error codes do not reach the flow.
    return msg.startswith("Client disconnected") or ("stream reset" in msg.lower() and "client" in msg.lower())
