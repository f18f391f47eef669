"""Who the client is when the worker sits behind a load balancer or CDN of the operator's.

By default the client is the TCP peer and the scheme is the connection's. With trusted proxies
configured (``--trusted-proxies``: CIDRs), a request whose TCP peer is one of them is taken at
their word, as nginx's ``real_ip_recursive`` and Caddy's ``trusted_proxies`` do:

- the client address is the rightmost ``X-Forwarded-For`` entry that is not itself a trusted
  proxy (entries left of it were written by the client and prove nothing); an entry that is not
  an address ends the walk, and the last address before it counts;
- the scheme is the last ``X-Forwarded-Proto`` value (``http`` or ``https``), so a site that forces
  HTTPS does not redirect requests the proxy in front already received over TLS.

IP rules, rate limits, IP-hash balancing, WAF conditions, logs and samples all read
``client_ip(flow)``; HTTPS redirects, HSTS, ``X-Forwarded-Proto``, secure sticky cookies and cache
keys read ``client_https(flow)``. A request from any other peer keeps its TCP peer and its
connection's scheme, whatever headers it sends. ``X-Forwarded-For`` is still appended with the TCP
peer, so the origin sees the whole chain.
"""

from __future__ import annotations

from mitmproxy import http

from proxyworker.cidr import CidrSet, parse_ip


def client_ip(flow: http.HTTPFlow) -> str:
    return flow.metadata.get("portico.client_ip") or flow.client_conn.peername[0]


def client_https(flow: http.HTTPFlow) -> bool:
    https = flow.metadata.get("portico.client_https")
    return bool(flow.client_conn.tls) if https is None else https


def _address(entry: str) -> str | None:
    """An ``X-Forwarded-For`` entry as an address (``[v6]:port`` and ``v4:port`` forms too)."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    return entry if parse_ip(entry) is not None else None


def forwarded_client(chain: str, peer: str, trusted: CidrSet) -> str:
    """The client address behind ``peer`` (a trusted proxy), from the ``X-Forwarded-For`` chain."""
    client = peer
    for entry in reversed(chain.split(",")):
        address = _address(entry)
        if address is None:
            break
        client = address
        if address not in trusted:
            break
    return client


class ClientAddress:
    """Resolves client address and scheme for requests that come through a trusted proxy."""

    def __init__(self, trusted: CidrSet):
        self.trusted = trusted

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        peer = flow.client_conn.peername[0]
        if peer not in self.trusted:
            return
        headers = flow.request.headers
        chain = headers.get("x-forwarded-for")
        if chain:
            flow.metadata["portico.client_ip"] = forwarded_client(chain, peer, self.trusted)
        proto = headers.get("x-forwarded-proto")
        if proto:
            last = proto.rpartition(",")[2].strip().lower()
            if last in ("http", "https"):
                flow.metadata["portico.client_https"] = last == "https"
