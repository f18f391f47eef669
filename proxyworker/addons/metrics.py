"""Metrics, request samples and access logs: the last addon, reading what the others decided.

Per answered request (``response``, or ``error`` when no answer could be made) it reads the outcome
the addons before it left in ``flow.metadata``:

- ``portico.site``: the router's site (requests without a site are only counted as unrouted);
- ``portico.blocked``: ``{"reason": ..., "rule": ...}`` from access, ratelimit and waf;
- ``portico.cache``: the cache's decision (its ``status``: HIT, MISS, STALE, BYPASS, REVALIDATED),
  counted in lower case; the cache's writer runs before this addon and settles it;
- ``portico.local``: answered by the platform itself (no upstream latency);
- the backend: ``portico.retried_on`` (the balancer's retry), else the backend of the server
  connection, else the one chosen in ``requestheaders`` (the balancer forgets its choice in its own
  ``response`` hook, before this one runs).

and adds it to ``traffic.Recorder`` (dict lookups and additions). A background task ships the
counters, the new samples and the backends' health to the spool every ``interval`` seconds and
flushes the access log; nothing here does I/O per request except appending a line to the access
log's buffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import IO

import msgspec
from mitmproxy import http

from proxyworker import traffic
from proxyworker.forwarded import client_ip
from proxyworker.tables import Live

logger = logging.getLogger(__name__)

_json = msgspec.json.Encoder()


class Metrics:
    def __init__(self, live: Live, recorder: traffic.Recorder, *, spool: traffic.Spool | None = None,
                 interval: float = 5.0, access_log: IO[bytes] | None = None, anonymize_ip: bool = False):
        self.live = live
        self.recorder = recorder
        self.spool = spool
        self.interval = interval
        self.access_log = access_log
        self.anonymize = anonymize_ip
        self._task: asyncio.Task | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def running(self) -> None:
        if self._task is None and (self.spool is not None or self.access_log is not None):
            self._task = asyncio.create_task(self._ship_loop(), name="traffic shipping")

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.ship()  # the last partial interval of a stopping process

    async def _ship_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.ship()
            except Exception:  # shipping must never stop serving
                logger.exception("could not write traffic counters")

    def ship(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        if self.spool is None:
            return
        now = time.time()
        minutes, samples = self.recorder.drain(now)
        self.spool.write({
            "version": self.live.tables.version,
            "minutes": minutes,
            "samples": samples,
            "backends": self.backend_health(time.monotonic()),
        })

    def backend_health(self, now: float) -> list[dict]:
        return [
            {"backend": b.id, "site": key[0], "up": b.healthy and now >= b.ejected_until,
             "healthy": b.healthy, "ejected": now < b.ejected_until}
            for key, b in self.live.tables.backends.items()
        ]

    # --- per request ------------------------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is not None:
            self._record(flow, resp.status_code, resp)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and "portico.replacement" not in flow.metadata:
            self._record(flow, 502, None)  # mitmproxy answers its (our) 502 page, or the client left

    def _record(self, flow: http.HTTPFlow, status: int, resp: http.Response | None) -> None:
        md = flow.metadata
        site = md.get("portico.site")
        if site is None:
            self.recorder.unrouted += 1
            if self.access_log is not None:
                self._log(flow, status, resp, None, None, None, None)
            return
        req = flow.request
        raw = req.raw_content
        bytes_in = len(raw) if raw is not None else int(req.headers.get("content-length") or 0)
        bytes_out = 0
        latency = None
        if resp is not None:
            raw = resp.raw_content
            bytes_out = len(raw) if raw is not None else int(resp.headers.get("content-length") or 0)
            if not md.get("portico.local") and req.timestamp_end and resp.timestamp_start:
                latency = max(0.0, resp.timestamp_start - req.timestamp_end)
        backend = None
        if not md.get("portico.local"):
            backend = md.get("portico.retried_on")
            if backend is None and flow.server_conn is not None:
                backend = self.live.server_backend.get(flow.server_conn.id)
            if backend is None:
                backend = md.get("portico.chosen")
        blocked_md = md.get("portico.blocked")
        blocked = (blocked_md.get("reason", ""), str(blocked_md.get("rule", ""))) if blocked_md else None
        decision = md.get("portico.cache")
        cache = None
        if decision is not None:
            cache = (decision if isinstance(decision, str) else decision.status).lower()
        backend_id = backend.id if backend is not None else None
        rec = self.recorder
        rec.count(site.id, site.spec.organization, req.timestamp_start, status, bytes_in, bytes_out, cache, blocked,
                  latency, backend_id)
        if rec.wants_sample(status, blocked is not None):
            rec.sample(self._sample(flow, site, status, resp, blocked, cache, backend_id))
        if self.access_log is not None:
            self._log(flow, status, resp, site, blocked, cache, backend_id, bytes_in, bytes_out, latency)

    def _client_ip(self, flow: http.HTTPFlow) -> str:
        ip = client_ip(flow) if flow.client_conn.peername else ""
        return traffic.anonymize_ip(ip) if self.anonymize else ip

    def _sample(self, flow: http.HTTPFlow, site, status: int, resp: http.Response | None,
                blocked: tuple[str, str] | None, cache: str | None, backend_id: str | None) -> dict:
        req = flow.request
        md = flow.metadata
        return {
            "at": req.timestamp_start,
            "request_id": md.get("portico.request_id", ""),
            "site": site.id,
            "organization": site.spec.organization,
            "client_ip": self._client_ip(flow),
            "method": req.method,
            "host": req.host_header or "",
            "path": traffic.mask_path(md.get("portico.client_path") or req.path),
            "status": status,
            "request_headers": traffic.mask_headers(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.fields]),
            "response_headers": traffic.mask_headers(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.fields]) if resp else [],
            "blocked": {"reason": blocked[0], "rule": blocked[1]} if blocked else None,
            "backend": backend_id,
            "cache": cache,
            "error": flow.error.msg if flow.error else "",
            "timing": timing(flow),
        }

    def _log(self, flow: http.HTTPFlow, status: int, resp, site, blocked, cache, backend_id,
             bytes_in: int = 0, bytes_out: int = 0, latency: float | None = None) -> None:
        req = flow.request
        md = flow.metadata
        end = (resp.timestamp_end if resp is not None and resp.timestamp_end else None) or time.time()
        line = {
            "ts": round(req.timestamp_start, 3),
            "request_id": md.get("portico.request_id", ""),
            "site": site.id if site is not None else None,
            "client_ip": self._client_ip(flow),
            "method": req.method,
            "host": req.host_header or "",
            "path": traffic.mask_path(md.get("portico.client_path") or req.path),
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "upstream": backend_id,
            "duration_ms": round((end - req.timestamp_start) * 1000, 2),
            "upstream_ms": round(latency * 1000, 2) if latency is not None else None,
            "cache": cache,
            "blocked": {"reason": blocked[0], "rule": blocked[1]} if blocked else None,
        }
        self.access_log.write(_json.encode(line) + b"\n")  # type: ignore[union-attr]


def timing(flow: http.HTTPFlow) -> dict[str, float | None]:
    """Where a request's time went, in ms: receiving it, connecting upstream, waiting for the
    first byte of the answer, and sending the answer."""
    req, resp, server = flow.request, flow.response, flow.server_conn

    def ms(a: float | None, b: float | None) -> float | None:
        return round((b - a) * 1000, 2) if a and b and b >= a else None

    return {
        "receive": ms(req.timestamp_start, req.timestamp_end),
        "connect": ms(server.timestamp_start, server.timestamp_tcp_setup) if server else None,
        "upstream_wait": ms(req.timestamp_end, resp.timestamp_start) if resp else None,
        "send": ms(resp.timestamp_start, resp.timestamp_end) if resp else None,
        "total": ms(req.timestamp_start, (resp.timestamp_end if resp else None) or time.time()),
    }


def metrics_addon(settings, live: Live) -> Metrics | None:
    """The addon as the worker's settings ask for it; None when both metrics and access logs are off."""
    if not settings.metrics and not settings.access_log:
        return None
    recorder = traffic.Recorder(sample_every=settings.sample_every)
    spool = None
    if settings.metrics:
        folder = os.path.join(os.path.dirname(os.path.abspath(settings.snapshot)), traffic.SPOOL_FOLDER)
        spool = traffic.Spool(folder, traffic.process_id())
    log = None
    if settings.access_log == "-":
        log = sys.stdout.buffer
    elif settings.access_log:
        log = open(settings.access_log, "ab", buffering=256 * 1024)  # flushed by the shipping task
    return Metrics(live, recorder, spool=spool, interval=settings.ship_interval, access_log=log,
                   anonymize_ip=settings.anonymize_ip)
