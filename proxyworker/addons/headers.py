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


class ForwardingHeaders:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        request_id = request_id_of(flow)
        if flow.response or flow.error:
            return
        headers = req.headers
        client_ip = flow.client_conn.peername[0]
        chain = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{chain}, {client_ip}" if chain else client_ip
        headers["x-forwarded-proto"] = "https" if flow.client_conn.tls else "http"
        headers["x-forwarded-host"] = req.host_header or ""
        headers["x-request-id"] = request_id

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        assert resp is not None
        headers = resp.headers
        site: SiteTable | None = flow.metadata.get("portico.site")
        if site is not None:
            for name in site.hide_headers:
                if name in headers:
                    del headers[name]
            if site.hsts and flow.client_conn.tls:
                headers["strict-transport-security"] = site.hsts
        request_id = flow.metadata.get("portico.request_id")
        if request_id:
            headers["x-request-id"] = request_id

    def response(self, flow: http.HTTPFlow) -> None:
        # A retried response replaced the one responseheaders cleaned: clean the new one too.
        if flow.metadata.get("portico.retried_on") is not None:
            self.responseheaders(flow)
