"""``python -m proxyworker --snapshot FILE [--http-port 8080] [--https-port 8443] [--processes N]``

The worker runs with Python's ``-O``: mitmproxy type-checks every request and response it builds,
and decorates every task it creates, under ``if __debug__``, which costs about a fifth of a
worker's throughput. Started without ``-O``, the module re-executes itself with it (same process
id, same arguments) before importing mitmproxy; ``PORTICO_WORKER_DEBUG=1`` keeps the checks.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not sys.flags.optimize and not os.environ.get("PORTICO_WORKER_DEBUG"):
    os.execv(sys.executable, [sys.executable, "-O", *sys.orig_argv[1:]])

import argparse  # noqa: E402
import ipaddress  # noqa: E402

from mitmproxy.utils import human  # noqa: E402

from proxyworker.server import Settings, serve  # noqa: E402


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m proxyworker",
        description="Portico proxy worker: serves every site of a config snapshot file.",
    )
    p.add_argument("--snapshot", required=True, help="snapshot file (plain JSON or signed envelope); re-read on change")
    p.add_argument("--http-port", type=int, default=8080, help="plain HTTP listener (TLS is accepted here too)")
    p.add_argument("--https-port", type=int, default=8443, help="TLS listener (plain HTTP is accepted here too)")
    p.add_argument("--listen-host", default="", help="address to bind; default all interfaces")
    p.add_argument("--processes", type=int, default=0, help="worker processes sharing the ports; 0: one per core")
    p.add_argument(
        "--public-https-port", type=int, default=None, help="port used in HTTP->HTTPS redirects (default: --https-port)"
    )
    p.add_argument("--status-file", default=None, help="where to report the served version (default <snapshot>.status.json)")
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between checks of the snapshot file (a stat call)")
    p.add_argument("--max-conns-per-ip", type=int, default=256, help="concurrent connections per client IP; 0: no limit")
    p.add_argument("--max-header-bytes", type=int, default=32 * 1024, help="request line + headers; larger: 431")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds to receive a request's headers")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="seconds a keep-alive connection may stay idle")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to connect to a backend")
    p.add_argument("--upstream-timeout", type=float, default=60.0, help="seconds to wait for a backend's response")
    p.add_argument("--stream-bodies-over", default="1m", help="stream bodies larger than this instead of buffering")
    p.add_argument("--drain-seconds", type=float, default=5.0, help="on SIGTERM, wait this long for open connections")
    p.add_argument(
        "--ratelimit-file", default=None, help="shared token-bucket file (default: /dev/shm/portico-ratelimit-<id>)"
    )
    p.add_argument("--cache-dir", default=None, help="response cache shared by the node's processes (default <snapshot dir>/cache)")
    p.add_argument("--cache-max-bytes", type=human.parse_size, default="1g", help="cache size on disk (LRU eviction), e.g. 512m")
    p.add_argument("--cache-memory-bytes", type=human.parse_size, default="64m", help="hot cache entries kept in each process")
    p.add_argument(
        "--ratelimit-redis", default=None, help="redis:// URL: rate limits shared by every node (default: per node)"
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-metrics", action="store_true", help="count no traffic, keep no samples, ship nothing")
    p.add_argument("--ship-interval", type=float, default=5.0, help="seconds between traffic spool files")
    p.add_argument("--sample-every", type=int, default=100, help="keep 1 in N ordinary requests for the inspector")
    p.add_argument("--admin-port", type=int, default=0, help="Prometheus /metrics on this port + process slot; 0: off")
    p.add_argument("--admin-host", default="127.0.0.1", help="address of the admin listener")
    p.add_argument("--access-log", default=None, metavar="FILE|-", help="JSON access log lines to FILE, or - for stdout")
    p.add_argument("--anonymize-ip", action="store_true", help="truncate client IPs (IPv4 /24, IPv6 /48) in logs and samples")
    p.add_argument(
        "--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"],
        help="auto: uvloop when installed, else asyncio's own loop",
    )
    p.add_argument(
        "--cpu-affinity", action="store_true",
        help="pin process i to core i and give it the connections whose packets arrive on that core "
             "(for nodes whose NIC spreads flows over the cores: RSS or RPS)",
    )
    p.add_argument("--no-cpu-affinity", action="store_true", help=argparse.SUPPRESS)  # the default since --cpu-affinity
    p.add_argument(
        "--trusted-proxies", type=_cidrs, default=(), metavar="CIDR[,CIDR...]",
        help="load balancers in front of this worker: for their requests, the client address comes from "
             "X-Forwarded-For and the scheme from X-Forwarded-Proto",
    )
    a = p.parse_args(argv)
    return Settings(
        snapshot=a.snapshot,
        http_port=a.http_port,
        https_port=a.https_port,
        listen_host=a.listen_host,
        processes=a.processes,
        public_https_port=a.public_https_port,
        status_file=a.status_file,
        poll_interval=a.poll_interval,
        max_conns_per_ip=a.max_conns_per_ip,
        max_header_bytes=a.max_header_bytes,
        header_timeout=a.header_timeout,
        idle_timeout=a.idle_timeout,
        connect_timeout=a.connect_timeout,
        upstream_timeout=a.upstream_timeout,
        stream_bodies_over=a.stream_bodies_over,
        drain_seconds=a.drain_seconds,
        log_level=a.log_level,
        metrics=not a.no_metrics,
        ship_interval=a.ship_interval,
        sample_every=a.sample_every,
        admin_port=a.admin_port,
        admin_host=a.admin_host,
        access_log=a.access_log,
        anonymize_ip=a.anonymize_ip,
        cache_dir=a.cache_dir,
        cache_max_bytes=a.cache_max_bytes,
        cache_memory_bytes=a.cache_memory_bytes,
        ratelimit_file=a.ratelimit_file,
        ratelimit_redis=a.ratelimit_redis,
        event_loop=a.event_loop,
        cpu_affinity=a.cpu_affinity,
        trusted_proxies=a.trusted_proxies,
    )


def _cidrs(text: str) -> tuple[str, ...]:
    networks = tuple(part.strip() for part in text.split(",") if part.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an address or network: {network!r}") from None
    return networks


def main(argv: list[str] | None = None) -> int:
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
