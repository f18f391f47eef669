"""ACME HTTP-01: answer ``/.well-known/acme-challenge/<token>`` from the snapshot's tokens.

Only on plain HTTP (that is where the CA validates), only for the hostname the token was issued
for, and before the router's HTTPS redirect. Unknown tokens fall through to the site as usual.
"""

from __future__ import annotations

from mitmproxy import http

from proxyworker import pages
from proxyworker.addons.router import hostname_of
from proxyworker.tables import Live

PREFIX = "/.well-known/acme-challenge/"


class AcmeChallenges:
    def __init__(self, live: Live):
        self.live = live

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        acme = self.live.tables.acme
        if not acme or flow.client_conn.tls:
            return
        path = flow.request.path
        if not path.startswith(PREFIX):
            return
        host = hostname_of(flow.request.host_header or "")
        token = path[len(PREFIX) :].partition("?")[0]
        key_authorization = acme.get((host, token))
        if key_authorization is not None:
            flow.response = pages.text_response(200, key_authorization)
            flow.metadata["portico.local"] = True
