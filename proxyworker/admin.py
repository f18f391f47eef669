"""The worker's admin listener: Prometheus ``/metrics`` for one proxy process.

It binds ``--admin-host`` (127.0.0.1 unless told otherwise: the counters name every site) on
``--admin-port`` + the process's slot (0 .. processes-1), so that each process can be scraped:
processes share the proxy ports through SO_REUSEPORT, but a scrape must reach a known one.

The exposition is built at scrape time from ``traffic.Recorder.totals()`` by a custom collector:
requests cost nothing extra for Prometheus, and prometheus-client writes the text format.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proxyworker import traffic
from proxyworker.tables import Live

logger = logging.getLogger(__name__)


class RecorderCollector:
    def __init__(self, recorder: traffic.Recorder, live: Live):
        self.recorder = recorder
        self.live = live

    def collect(self):
        requests = CounterMetricFamily("portico_requests", "Requests answered, by site and status class",
                                       labels=["site", "status_class"])
        bytes_in = CounterMetricFamily("portico_request_body_bytes", "Request body bytes received", labels=["site"])
        bytes_out = CounterMetricFamily("portico_response_body_bytes", "Response body bytes sent", labels=["site"])
        cache = CounterMetricFamily("portico_cache_results", "Cache outcomes", labels=["site", "result"])
        blocked = CounterMetricFamily("portico_blocked_requests", "Requests refused by a policy",
                                      labels=["site", "reason", "rule"])
        backend_req = CounterMetricFamily("portico_backend_requests", "Requests sent to a backend",
                                          labels=["site", "backend"])
        backend_err = CounterMetricFamily("portico_backend_errors", "Backend answers of 5xx or failures",
                                          labels=["site", "backend"])
        latency = HistogramMetricFamily("portico_upstream_latency_seconds", "Time to the backend's first byte",
                                        labels=["site"])
        for site, t in self.recorder.totals().items():
            for i, n in enumerate(t.status[1:], start=1):
                requests.add_metric([site, f"{i}xx"], n)
            bytes_in.add_metric([site], t.bytes_in)
            bytes_out.add_metric([site], t.bytes_out)
            for result, n in t.cache.items():
                cache.add_metric([site, result], n)
            for (reason, rule), n in t.blocked.items():
                blocked.add_metric([site, reason, rule], n)
            for backend, (req, err) in t.backends.items():
                backend_req.add_metric([site, backend], req)
                backend_err.add_metric([site, backend], err)
            cumulative, buckets = 0, []
            for bound, n in zip((*traffic.LATENCY_BOUNDS_MS, None), t.latency, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
            latency.add_metric([site], buckets, sum_value=t.latency_sum_ms / 1000)
        up = GaugeMetricFamily("portico_backend_up", "1 if the backend takes traffic (healthy, not ejected)",
                               labels=["site", "backend"])
        now = time.monotonic()
        for key, b in self.live.tables.backends.items():
            up.add_metric([key[0], b.id], 1.0 if b.healthy and now >= b.ejected_until else 0.0)
        unrouted = CounterMetricFamily("portico_unrouted_requests", "Requests for hosts no site serves")
        unrouted.add_metric([], self.recorder.unrouted)
        version = GaugeMetricFamily("portico_snapshot_version", "Config snapshot version served")
        version.add_metric([], self.live.tables.version)
        yield from (requests, bytes_in, bytes_out, cache, blocked, backend_req, backend_err, latency, up, unrouted,
                    version)


def registry_for(recorder: traffic.Recorder, live: Live) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(recorder, live))
    return registry


async def serve_admin(host: str, port: int, registry: CollectorRegistry) -> asyncio.base_events.Server:
    """A minimal HTTP/1.0 responder: GET /metrics, everything else 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method == b"GET" and path == b"/metrics":
                # Built in the event loop on purpose: the recorder has no lock, and this is the only
                # thread that may read it.
                body, status, ctype = generate_latest(registry), b"200 OK", CONTENT_TYPE_LATEST.encode()
            else:
                body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    logger.info("admin listener (metrics) on %s:%d", host, port)
    return server
