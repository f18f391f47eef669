"""A snapshot compiled into the lookup tables the hot path reads.

``compile_snapshot`` runs once per snapshot, off the request path. It builds:

- ``hosts``: hostname -> SiteTable, and ``wildcards``: parent domain -> SiteTable (``*.example.com``
  is stored under ``example.com`` and matches exactly one more label);
- per site, routes sorted longest prefix first, each pointing at a compiled ``balancer.Pool``;
- ``sni`` / ``sni_wildcards``: server name -> pyOpenSSL context (certificate, full chain, key, ALPN,
  minimum TLS version), built once per (certificate, minimum version);
- ``acme``: (hostname, token) -> key authorization.

The result is immutable after compilation; the worker swaps one reference (``Live.tables``) between
requests. Backend runtime state is carried over from the previous tables by key.
"""

from __future__ import annotations

import os
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from proxyworker import snapshot as snap
from proxyworker.balancer import BackendState, PassivePolicy, Pool
from proxyworker.filtering import compile_filters
from proxyworker.upstream import make_client_ssl, make_upstream_tls

# Modern server ciphers for TLS 1.2 (TLS 1.3 suites are always on in OpenSSL 3).
_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS"
_TLS_MIN = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


class RouteTable:
    __slots__ = ("prefix", "pool", "strip_prefix", "rewrite", "aggregate")

    def __init__(self, prefix: str, pool: Pool, strip_prefix: bool, rewrite: str | None = None,
                 aggregate: tuple[tuple[snap.AggregatePart, Pool], ...] = ()):
        self.prefix = prefix
        self.pool = pool
        self.strip_prefix = strip_prefix
        # What replaces the matched prefix upstream; None: the path goes as sent.
        self.rewrite = rewrite if rewrite is not None else ("/" if strip_prefix and prefix != "/" else None)
        self.aggregate = aggregate

    def rewrite_path(self, path: str) -> str:
        """``/api/v1/x?q`` under prefix ``/api/`` rewritten to ``/internal/``: ``/internal/v1/x?q``."""
        assert self.rewrite is not None
        rest = path[len(self.prefix):]
        if self.rewrite.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        elif not self.rewrite.endswith("/") and rest and not rest.startswith(("/", "?")):
            rest = "/" + rest
        return (self.rewrite + rest) or "/"


class SiteTable:
    """Everything the hot path needs about one site, precomputed."""

    __slots__ = (
        "id",
        "name",
        "spec",
        "routes",
        "pools",
        "force_https",
        "hsts",
        "max_body",
        "hide_headers",
        "hide_header_keys",
        "sticky_cookie",
        "health",
        "extra",
    )

    def __init__(self, site: snap.Site, pools: dict[str, Pool]):
        self.id = site.id
        self.name = site.name
        self.spec = site  # the full Site struct, for addons that compile their own parts
        self.pools = pools
        routes = [
            RouteTable(r.path_prefix, pools[r.pool], r.strip_prefix, r.rewrite_prefix,
                       tuple((part, pools[part.pool or r.pool]) for part in r.aggregate))
            for r in site.routes
        ]
        routes.sort(key=lambda r: len(r.prefix), reverse=True)
        self.routes = tuple(routes)
        self.force_https = site.force_https
        self.hsts: str | None = None
        if site.hsts is not None:
            value = f"max-age={site.hsts.max_age}"
            if site.hsts.include_subdomains:
                value += "; includeSubDomains"
            if site.hsts.preload:
                value += "; preload"
            self.hsts = value
        self.max_body = site.max_body_bytes
        self.hide_headers = tuple(h.lower() for h in site.hide_response_headers)
        self.hide_header_keys = tuple(h.encode("utf-8", "surrogateescape") for h in self.hide_headers)
        self.sticky_cookie = site.sticky_cookie
        self.health = site.health_check
        self.extra: dict[str, Any] = {}  # per-site compiled data of later addons (rate limits, WAF...)

    def route_for(self, path: str) -> RouteTable | None:
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None


class Tables:
    """One compiled snapshot. Never mutated after compile_snapshot returns."""

    def __init__(self, snapshot: snap.Snapshot):
        self.snapshot = snapshot
        self.version = snapshot.version
        self.hosts: dict[str, SiteTable] = {}
        self.wildcards: dict[str, SiteTable] = {}
        self.sites: list[SiteTable] = []
        self.sni: dict[str, SSL.Context] = {}
        self.sni_wildcards: dict[str, SSL.Context] = {}
        self.contexts: dict[tuple, SSL.Context] = {}  # (cert id, min TLS, chain, key) -> context
        self.acme: dict[tuple[str, str], str] = {}
        self.backends: dict[tuple, BackendState] = {}
        self.compiled_at = time.time()

    def site_for_host(self, host: str) -> SiteTable | None:
        site = self.hosts.get(host)
        if site is None:
            _, _, parent = host.partition(".")
            site = self.wildcards.get(parent)
        return site

    def ssl_context_for(self, server_name: str) -> SSL.Context | None:
        ctx = self.sni.get(server_name)
        if ctx is None:
            _, _, parent = server_name.partition(".")
            ctx = self.sni_wildcards.get(parent)
        return ctx


def empty_tables() -> Tables:
    return Tables(snap.Snapshot(version=0))


def _alpn_select(conn: SSL.Connection, offers: list[bytes]) -> bytes:
    if b"h2" in offers:
        return b"h2"
    if b"http/1.1" in offers:
        return b"http/1.1"
    return SSL.NO_OVERLAPPING_PROTOCOLS


def server_context(chain_pem: str, key_pem: str, min_version: str = "1.2") -> SSL.Context:
    """A TLS server context for one certificate: leaf + intermediates sent, h2 and http/1.1 offered."""
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(_TLS_MIN[min_version])
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION
    )
    ctx.set_cipher_list(_CIPHERS)
    ctx.use_certificate(certs[0])
    for intermediate in certs[1:]:
        ctx.add_extra_chain_cert(intermediate)
    ctx.use_privatekey(key)  # type: ignore[arg-type]
    ctx.check_privatekey()
    ctx.set_alpn_select_callback(_alpn_select)
    return ctx


def _wildcard_parent(name: str) -> str | None:
    return name[2:] if name.startswith("*.") else None


def compile_snapshot(
    snapshot: snap.Snapshot, previous: Tables | None = None, fleet_key: snap.FleetKey | None = None
) -> Tables:
    """Compile a validated snapshot. Raises SnapshotError for content that cannot be served."""
    t = Tables(snapshot)
    old = previous.backends if previous else {}
    min_version_by_host: dict[str, str] = {}

    for site in snapshot.sites:
        hc = site.health_check
        passive = PassivePolicy(hc.passive_failures, hc.eject_seconds, hc.eject_max_seconds)
        pools: dict[str, Pool] = {}
        for pool in site.pools:
            states = []
            for b in pool.backends:
                key = (site.id, pool.name, b.id, b.address, b.port, b.scheme)
                state = old.get(key)
                if state is None:
                    state = BackendState(key, b.id, b.address, b.port, b.scheme, b.weight, b.state == "draining")
                else:
                    state.weight = b.weight
                    state.draining = b.state == "draining"
                if not hc.enabled:
                    state.healthy = True
                if b.scheme == "https":
                    try:
                        state.upstream_tls = make_upstream_tls(verify=b.tls_verify, ca_pem=b.ca_pem)
                        state.client_ssl = make_client_ssl(verify=b.tls_verify, ca_pem=b.ca_pem)
                    except Exception as exc:
                        raise snap.SnapshotError(f"site {site.name!r}: backend {b.id}: bad TLS settings ({exc})")
                    state.sni = b.sni
                t.backends[key] = state
                states.append(state)
            pools[pool.name] = Pool(pool.name, states, site.balancing, passive)
        table = SiteTable(site, pools)
        table.extra["filters"] = compile_filters(site)  # IP rules, auth, rate limits, WAF, header rules
        t.sites.append(table)
        for host in site.hostnames:
            parent = _wildcard_parent(host)
            if parent is None:
                t.hosts[host] = table
            else:
                t.wildcards[parent] = table
            min_version_by_host[host] = site.tls_min_version

    # A TLS context costs about half a millisecond to build: one that serves the same certificate,
    # key and minimum version as in the previous tables is taken over, so a change to one site
    # does not rebuild a thousand of them while the loop waits.
    reusable = previous.contexts if previous else {}
    for cert in snapshot.certificates:
        key_pem: str | None = cert.key_pem
        for name in cert.hostnames:
            name = name.lower()
            min_version = min_version_by_host.get(name, "1.2")
            ckey = (cert.id, min_version, cert.chain_pem, cert.key_pem or cert.key_enc)
            ctx = t.contexts.get(ckey) or reusable.get(ckey)
            if ctx is None:
                if key_pem is None:
                    if fleet_key is None:
                        raise snap.SnapshotError(f"certificate {cert.id}: encrypted key but no fleet key (PORTICO_FLEET_KEY)")
                    key_pem = fleet_key.decrypt_key(cert.id, cert.key_enc or "")
                try:
                    ctx = server_context(cert.chain_pem, key_pem, min_version)
                except Exception as exc:
                    raise snap.SnapshotError(f"certificate {cert.id}: cannot be loaded ({exc})")
            t.contexts[ckey] = ctx
            parent = _wildcard_parent(name)
            if parent is None:
                t.sni[name] = ctx
            else:
                t.sni_wildcards[parent] = ctx

    for ch in snapshot.acme_challenges:
        t.acme[(ch.hostname.lower(), ch.token)] = ch.key_authorization
    return t


class Live:
    """The one mutable reference: the tables being served. Replaced whole, never edited."""

    def __init__(self) -> None:
        self.tables: Tables = empty_tables()
        self.fleet_key: snap.FleetKey | None = None
        # mitmproxy server connection id -> the backend it is connected to (set by the balancer
        # when it connects, read by the TLS addon and by response accounting).
        self.server_backend: dict[str, BackendState] = {}
        secret = os.environ.get("PORTICO_FLEET_KEY")
        if secret:
            self.fleet_key = snap.FleetKey(secret)
