"""The worker's addons, in the order mitmproxy calls them.

Order matters: each hook runs addon by addon in this list. TLS comes first (certificates are chosen
before anything else runs); behind trusted proxies, the client's address and scheme are resolved
next, before any addon reads them; the ACME responder answers before the router can redirect to HTTPS;
the router resolves site and route, which every later addon reads from ``flow.metadata``; limits
need the site; the balancer picks a backend last, after every addon that may answer on its own;
headers run after the balancer so that they also clean a retried response.

Later issues add their addons at the marked places.
"""

from __future__ import annotations

from proxyworker.addons.access import Access
from proxyworker.addons.acme import AcmeChallenges
from proxyworker.addons.aggregate import Aggregate
from proxyworker.addons.balancer import Balancer
from proxyworker.addons.cache import Cache, CacheWriter
from proxyworker.addons.compress import Compress
from proxyworker.addons.header_rules import HeaderRules
from proxyworker.addons.headers import ForwardingHeaders
from proxyworker.addons.limits import Limits
from proxyworker.addons.ratelimit import RateLimiter
from proxyworker.addons.router import Router
from proxyworker.addons.tls import TlsTermination
from proxyworker.addons.waf import WebFirewall
from proxyworker.cidr import CidrSet
from proxyworker.forwarded import ClientAddress
from proxyworker.tables import Live


def portico_addons(live: Live, settings, metrics=None) -> list:
    cache = Cache.from_settings(live, settings)
    trusted = CidrSet(settings.trusted_proxies) if settings.trusted_proxies else None
    return [
        TlsTermination(live),
        *([ClientAddress(trusted)] if trusted is not None else []),  # before anything reads the client
        AcmeChallenges(live),
        Router(live, https_port=settings.public_https_port),
        Limits(
            max_conns_per_ip=settings.max_conns_per_ip,
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
            max_header_bytes=settings.max_header_bytes,
            trusted_proxies=trusted,
        ),
        Access(),  # IP rules first, then basic auth
        RateLimiter(settings.ratelimit_file, settings.ratelimit_redis),
        WebFirewall(),
        cache,  # hits are answered here, before a backend is chosen
        Aggregate(),  # aggregation routes are answered here, from several backends, never proxied
        Balancer(live, connect_timeout=settings.connect_timeout, upstream_timeout=settings.upstream_timeout),
        ForwardingHeaders(),
        HeaderRules(),
        Compress(),
        CacheWriter(cache),  # after compression: stores each coding as its own variant
        *([metrics] if metrics is not None else []),  # last: it reads what every other addon decided
    ]
