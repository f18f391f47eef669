"""Forwarding headers in, origin-revealing headers out.

Requests gain ``X-Forwarded-For`` (the client address appended to any chain it sent),
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and an ``X-Request-ID`` (the client's, when it is a
sane token, else a new one). Responses lose the site's ``hide_response_headers`` (``Server``,
``X-Powered-By`` ... so the origin stays hidden), gain HSTS on TLS for sites that ask for it, and
echo the request id.
"""

from __future__ import annotations

import random
import re

from mitmproxy import http

from proxyworker.forwarded import client_https
from proxyworker.tables import SiteTable

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_of(flow: http.HTTPFlow) -> str:
    """The request's id, chosen once: the filtering addons quote it on their pages before this
    addon runs. New ids come from ``random`` (no system call); they trace, they do not protect."""
    request_id = flow.metadata.get("portico.request_id")
    if request_id is None:
        incoming = flow.request.headers.get("x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else f"{random.getrandbits(128):032x}"
        flow.metadata["portico.request_id"] = request_id
    return request_id


def rewrite(headers: http.Headers, remove: tuple[bytes, ...], add: list[tuple[bytes, str]]) -> None:
    """Drop every field named in ``remove`` or ``add`` (lower-case names), then append ``add``:
    one new field tuple instead of one per header set or deleted."""
    names = {*remove, *(name for name, _ in add)}
    fields = [field for field in headers.fields if field[0].lower() not in names]
    fields += [(name, value.encode("utf-8", "surrogateescape")) for name, value in add]
    headers.fields = tuple(fields)


class ForwardingHeaders:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        request_id = request_id_of(flow)
        if flow.response or flow.error:
            return
        headers = req.headers
        peer = flow.client_conn.peername[0]  # the next hop appends the address it saw
        chain = headers.get("x-forwarded-for")
        rewrite(headers, (), [
            (b"x-forwarded-for", f"{chain}, {peer}" if chain else peer),
            (b"x-forwarded-proto", "https" if client_https(flow) else "http"),
            (b"x-forwarded-host", req.host_header or ""),
            (b"x-request-id", request_id),
        ])

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        assert resp is not None
        headers = resp.headers
        site: SiteTable | None = flow.metadata.get("portico.site")
        add = []
        if site is not None and site.hsts and client_https(flow):
            add.append((b"strict-transport-security", site.hsts))
        request_id = flow.metadata.get("portico.request_id")
        if request_id:
            add.append((b"x-request-id", request_id))
        rewrite(headers, site.hide_header_keys if site is not None else (), add)

    def response(self, flow: http.HTTPFlow) -> None:
        # A retried response replaced the one responseheaders cleaned: clean the new one too.
        if flow.metadata.get("portico.retried_on") is not None:
            self.responseheaders(flow)
