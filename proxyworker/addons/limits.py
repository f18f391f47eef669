"""Limits against abuse: connections per client IP, header-read and idle deadlines, header and
body sizes, and malformed requests (folded or NUL-bearing headers, non-token methods) refused.

mitmproxy itself never times out a half-sent request (its inactivity watchdog is reset by every
trickled byte), so each connection carries a deadline: the next request's headers must be complete
within ``header_timeout`` of connecting, and within ``idle_timeout`` of the previous response.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict

from mitmproxy import connection, ctx, http

from proxyworker import pages
from proxyworker.cidr import CidrSet

# RFC 9110 §5.6.2: methods and header names are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Limits:
    def __init__(
        self,
        *,
        max_conns_per_ip: int = 256,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_header_bytes: int = 32 * 1024,
        trusted_proxies: CidrSet | None = None,
    ):
        self.max_conns_per_ip = max_conns_per_ip
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_header_bytes = max_header_bytes
        # A load balancer in front carries many clients' connections: no per-address cap for it.
        self.uncapped = trusted_proxies
        self._per_ip: defaultdict[str, int] = defaultdict(int)
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        # client connection id -> ids of its flows still waiting for their answer (a flow can end
        # twice, in error and then response, when a retry replaces an error: a set forgives that)
        self._in_progress: defaultdict[str, set[str]] = defaultdict(set)

    # --- connections ------------------------------------------------------------------------

    def _capped(self, ip: str) -> bool:
        return bool(self.max_conns_per_ip) and (self.uncapped is None or ip not in self.uncapped)

    def client_connected(self, client: connection.Client) -> None:
        ip = client.peername[0]
        if self._capped(ip):
            self._per_ip[ip] += 1
            if self._per_ip[ip] > self.max_conns_per_ip:
                client.error = "too many connections from this address"
                return
        self._arm(client, self.header_timeout)

    def client_disconnected(self, client: connection.Client) -> None:
        ip = client.peername[0]
        if self._capped(ip):
            left = self._per_ip[ip] - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)
        handle = self._deadlines.pop(client.id, None)
        if handle is not None:
            handle.cancel()
        self._in_progress.pop(client.id, None)

    def _arm(self, client: connection.Client, seconds: float) -> None:
        old = self._deadlines.pop(client.id, None)
        if old is not None:
            old.cancel()
        if seconds > 0:
            loop = asyncio.get_running_loop()
            self._deadlines[client.id] = loop.call_later(seconds, self._expire, client)

    def _expire(self, client: connection.Client) -> None:
        self._deadlines.pop(client.id, None)
        handler = ctx.master.addons.get("proxyserver").connections.get(client.id)
        if handler is not None:
            asyncio.ensure_future(handler.on_timeout())

    # --- requests ---------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        self._in_progress[client.id].add(flow.id)
        handle = self._deadlines.pop(client.id, None)
        if handle is not None:
            handle.cancel()
        if flow.response or flow.error:
            return
        req = flow.request
        if not _TOKEN.fullmatch(req.method):
            return self._refuse(flow, "The request method is not valid.")
        size = len(req.method) + len(req.path) + 12
        for name, value in req.headers.fields:
            size += len(name) + len(value) + 4
            # mitmproxy unfolds obsolete line folding into "\r\n " inside the value and passes NUL
            # bytes on; a backend may read either differently (request smuggling). RFC 9112 §5.2
            # allows rejecting folded lines with a 400.
            if b"\r" in value or b"\n" in value or b"\x00" in value or not _TOKEN_BYTES.fullmatch(name):
                return self._refuse(flow, "A request header is malformed.")
        if size > self.max_header_bytes:
            flow.response = pages.error_response(431)
            flow.metadata["portico.local"] = True
            return
        site = flow.metadata.get("portico.site")
        if site is None or not site.max_body:
            return
        length = req.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > site.max_body:
            flow.response = pages.error_response(413)
            flow.metadata["portico.local"] = True

    @staticmethod
    def _refuse(flow: http.HTTPFlow, detail: str) -> None:
        flow.response = pages.error_response(400, detail)
        flow.metadata["portico.local"] = True

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        site = flow.metadata.get("portico.site")
        # Chunked bodies have no Content-Length: check what was buffered.
        if site is not None and site.max_body and not flow.request.stream:
            if len(flow.request.raw_content or b"") > site.max_body:
                flow.response = pages.error_response(413)
                flow.metadata["portico.local"] = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def _done(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        waiting = self._in_progress.get(client.id)
        if waiting is not None:
            waiting.discard(flow.id)
            if waiting:
                return
        self._in_progress.pop(client.id, None)
        if flow.websocket is None and client.id in ctx.master.addons.get("proxyserver").connections:
            self._arm(client, self.idle_timeout)
