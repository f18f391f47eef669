"""Active health checks, off the request path: one asyncio task per backend of each site.

A check is ``GET <path>`` over HTTP/1.1 (TLS and verification like the proxied path) with the site's
timeout. It passes when the status is expected (default 200-399). ``rise`` passes in a row bring an
unhealthy backend back, ``fall`` failures in a row take a healthy one out. The response may also
report the backend's load for resource-based balancing: a header (``x-backend-load``) or a JSON
field (``load``), a number in [0, 1] or a percentage.

``HealthChecker.reconcile`` is called after every snapshot swap: tasks of removed backends stop,
new ones start, changed check settings restart their task. Backend state objects survive swaps, so
a reconcile never resets what was learned.
"""

from __future__ import annotations

import asyncio
import logging
import random

import msgspec

from proxyworker import snapshot as snap
from proxyworker.balancer import BackendState
from proxyworker.tables import Tables
from proxyworker.upstream import UpstreamError, fetch

logger = logging.getLogger(__name__)


def parse_load(value: object) -> float | None:
    try:
        load = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if load != load or load < 0:  # NaN or negative
        return None
    if load > 1.0:
        load = load / 100.0  # a percentage
    return min(load, 1.0)


def read_load(hc: snap.HealthCheck, headers: list[tuple[bytes, bytes]], body: bytes) -> float | None:
    wanted = hc.load_header.lower().encode()
    for name, value in headers:
        if name.lower() == wanted:
            return parse_load(value.decode("latin-1").strip())
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        try:
            doc = msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            return None
        if isinstance(doc, dict):
            return parse_load(doc.get(hc.load_field))
    return None


async def check_once(backend: BackendState, hc: snap.HealthCheck, host: str) -> bool:
    """Run one check and record its result (health and reported load). Returns whether it passed."""
    headers = [(b"host", host.encode()), (b"user-agent", b"Portico-HealthCheck/1"), (b"accept", b"*/*")]
    try:
        status, resp_headers, body = await fetch(backend, "GET", hc.path, headers, timeout=hc.timeout, max_body=65536)
    except UpstreamError:
        ok = False
    else:
        ok = status in hc.expected_status if hc.expected_status else 200 <= status < 400
        load = read_load(hc, resp_headers, body)
        if load is not None:
            backend.load = load
    if backend.record_check(ok, hc.rise, hc.fall):
        logger.warning("backend %s is now %s", backend.id, "healthy" if backend.healthy else "unhealthy")
    return ok


class HealthChecker:
    def __init__(self) -> None:
        self._tasks: dict[tuple, tuple[object, asyncio.Task]] = {}

    def reconcile(self, tables: Tables) -> None:
        wanted: dict[tuple, tuple[object, BackendState, snap.HealthCheck, str]] = {}
        for site in tables.sites:
            hc = site.health
            if not hc.enabled:
                continue
            host = site.spec.hostnames[0].removeprefix("*.")
            for pool in site.pools.values():
                for backend in pool.backends:
                    signature = (msgspec.json.encode(hc), host)
                    wanted[backend.key] = (signature, backend, hc, host)
        for key in list(self._tasks):
            signature, task = self._tasks[key]
            if key not in wanted or wanted[key][0] != signature:
                task.cancel()
                del self._tasks[key]
        for key, (signature, backend, hc, host) in wanted.items():
            if key not in self._tasks:
                task = asyncio.create_task(self._run(backend, hc, host), name=f"health {backend.id}")
                self._tasks[key] = (signature, task)

    def stop(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    @staticmethod
    async def _run(backend: BackendState, hc: snap.HealthCheck, host: str) -> None:
        # Spread the first checks so that N workers x M backends do not fire in lockstep.
        await asyncio.sleep(random.uniform(0, min(hc.interval, 1.0)))
        while True:
            try:
                await check_once(backend, hc, host)
            except asyncio.CancelledError:
                raise
            except Exception:  # a check must never kill its loop
                logger.exception("health check of backend %s crashed", backend.id)
            await asyncio.sleep(hc.interval)
