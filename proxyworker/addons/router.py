"""Routing: Host -> site (exact, then wildcard), path -> route (longest prefix first) -> pool.

Requests for hosts the platform does not serve get the platform's own page (404, or 421 when a TLS
connection asks for a host its certificate was not chosen for), never a backend's. Sites with
``force_https`` redirect plain HTTP. The chosen site and route ride in ``flow.metadata`` for the
addons after this one.
"""

from __future__ import annotations

from mitmproxy import http

from proxyworker import pages
from proxyworker.forwarded import client_https
from proxyworker.tables import Live


def hostname_of(authority: str) -> str:
    """``Example.COM:8080`` -> ``example.com``; ``[::1]:80`` -> ``[::1]``."""
    if authority.startswith("["):
        return authority.partition("]")[0].lower() + "]"
    return authority.partition(":")[0].rstrip(".").lower()


class Router:
    def __init__(self, live: Live, https_port: int = 443):
        self.live = live
        self.https_port = https_port
        self.https_suffix = "" if https_port == 443 else f":{https_port}"

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        req = flow.request
        authority = req.host_header
        # RFC 9112 §3.2: a request without Host, or with more than one, is a 400. Tenants are
        # routed by Host, so an ambiguous one must never reach a backend.
        if not authority or (not req.is_http2 and len(req.headers.get_all("host")) != 1):
            return self._answer(flow, pages.error_response(400, "The request needs exactly one Host header."))
        host = hostname_of(authority)
        tables = self.live.tables
        site = tables.site_for_host(host)
        client = flow.client_conn
        if client.tls:
            sni = (client.sni or "").lower()
            if sni != host and tables.ssl_context_for(host) is not tables.ssl_context_for(sni):
                return self._answer(flow, pages.error_response(421))
        if site is None:
            return self._answer(flow, pages.error_response(404))
        if site.force_https and not client_https(flow):
            location = f"https://{host}{self.https_suffix}{req.path}"
            status = 301 if req.method in ("GET", "HEAD") else 308
            return self._answer(flow, pages.redirect_response(location, status))
        route = site.route_for(req.path)
        if route is None:
            return self._answer(flow, pages.error_response(404, "No route of this site matches the path."))
        flow.metadata["portico.client_path"] = req.path  # as sent, before a route strips its prefix
        if route.rewrite is not None:
            req.path = route.rewrite_path(req.path)
        flow.metadata["portico.site"] = site
        flow.metadata["portico.route"] = route

    @staticmethod
    def _answer(flow: http.HTTPFlow, response: http.Response) -> None:
        flow.response = response
        flow.metadata["portico.local"] = True
