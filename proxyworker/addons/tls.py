"""TLS termination by SNI, and TLS to backends.

Placed before anything else that could answer ``tls_start_client``: the worker never mints a
certificate. A ClientHello for a name the snapshot has no certificate for gets a context without any
certificate, so the handshake fails with an alert; the client is refused, never answered.
"""

from __future__ import annotations

from mitmproxy import tls
from OpenSSL import SSL

from proxyworker.tables import Live
from proxyworker.upstream import start_upstream_tls


def _refusing_context() -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    return ctx


class TlsTermination:
    def __init__(self, live: Live):
        self.live = live
        self._refuse = _refusing_context()

    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        if tls_start.ssl_conn is not None:
            return
        sni = tls_start.conn.sni
        ctx = self.live.tables.ssl_context_for(sni.lower()) if sni else None
        conn = SSL.Connection(ctx or self._refuse)
        conn.set_accept_state()
        tls_start.ssl_conn = conn

    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        if tls_start.ssl_conn is not None:
            return
        backend = self.live.server_backend.get(tls_start.conn.id)
        if backend is None or backend.upstream_tls is None:
            return  # not a backend connection we know: mitmproxy fails it (no context)
        tls_start.conn.alpn_offers = [b"http/1.1"]
        tls_start.ssl_conn = start_upstream_tls(backend)
