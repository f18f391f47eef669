"""Reading traffic: chart series, totals with latency percentiles, live backend health.

Windows: ``1h`` (minute points), ``24h`` (15-minute points) from the minute rollups; ``7d``
(hourly points) from the hour rollups plus the current, not yet downsampled, hours' minutes.
Percentiles come from the summed histogram buckets (``proxyworker.traffic.percentile``), never from
averaged percentiles, which would be meaningless.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone

from proxyworker.traffic import LATENCY_BOUNDS_MS, percentile

from .models import BackendHealth, TrafficHour, TrafficMinute
from .services import _COUNT_COLUMNS, merge_counts

WINDOWS = {
    "1h": (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    "24h": (dt.timedelta(hours=24), dt.timedelta(minutes=15)),
    "7d": (dt.timedelta(days=7), dt.timedelta(hours=1)),
}


@dataclass
class Point:
    at: dt.datetime
    counts: dict = field(default_factory=dict)

    def get(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def cache_hit_ratio(self) -> float | None:
        served = self.get("cache_hit") + self.get("cache_stale") + self.get("cache_revalidated")
        looked = served + self.get("cache_miss")
        return served / looked if looked else None

    def latency_ms(self, q: float) -> float | None:
        return percentile(self.counts.get("latency") or [], q)

    def as_dict(self) -> dict:
        c = self.counts
        return {
            "at": self.at.isoformat(),
            "requests": self.get("requests"),
            "status": {f"{i}xx": self.get(f"s{i}xx") for i in range(1, 6)},
            "bytes_in": self.get("bytes_in"),
            "bytes_out": self.get("bytes_out"),
            "cache": {k: self.get(f"cache_{k}") for k in ("hit", "miss", "stale", "bypass", "revalidated")},
            "cache_hit_ratio": self.cache_hit_ratio,
            "blocked": self.get("blocked"),
            "latency_ms": {"p50": self.latency_ms(0.5), "p95": self.latency_ms(0.95), "p99": self.latency_ms(0.99)},
            "_blocked_by": c.get("_blocked", {}),
        }


def _floor(at: dt.datetime, step: dt.timedelta) -> dt.datetime:
    seconds = int(step.total_seconds())
    return dt.datetime.fromtimestamp(int(at.timestamp()) // seconds * seconds, tz=dt.UTC)


def series(site, window: str = "1h", *, now: dt.datetime | None = None) -> list[Point]:
    """Points of ``window`` for ``site``, oldest first, with empty points where nothing happened."""
    span, step = WINDOWS[window]
    now = now or timezone.now()
    end = _floor(now, step) + step
    start = end - span
    points = {start + i * step: Point(start + i * step) for i in range(int(span / step))}
    fields = list(_COUNT_COLUMNS)
    minutes_from = start
    if window == "7d":
        hours = TrafficHour.objects.filter(site=site, hour__gte=start, hour__lt=end)
        covered = None
        for row in hours.values("hour", *fields):
            p = points.get(_floor(row["hour"], step))
            if p is not None:
                merge_counts(p.counts, row)
            covered = max(covered or row["hour"], row["hour"])
        minutes_from = covered + dt.timedelta(hours=1) if covered else start
    for row in TrafficMinute.objects.filter(site=site, minute__gte=minutes_from, minute__lt=end).values("minute", *fields):
        p = points.get(_floor(row["minute"], step))
        if p is not None:
            merge_counts(p.counts, row)
    return [points[k] for k in sorted(points)]


def summary(site, window: str = "1h", *, now: dt.datetime | None = None, points: list[Point] | None = None) -> dict:
    """Totals of the window: counts, hit ratio, percentiles, blocked by rule, per backend.
    ``points``: the window's series when the caller already has it (one query instead of two)."""
    total = Point(timezone.now())
    for p in points if points is not None else series(site, window, now=now):
        merge_counts(total.counts, {**p.counts, "blocked_by": [[r, ru, n] for (r, ru), n in p.counts.get("_blocked", {}).items()]})
    out = total.as_dict()
    out.pop("at")
    blocked = out.pop("_blocked_by")
    out["blocked_by"] = sorted(({"reason": r, "rule": ru, "count": n} for (r, ru), n in blocked.items()),
                               key=lambda b: -b["count"])
    out["backends"] = {bid: {"requests": req, "errors": err} for bid, (req, err) in total.counts.get("backends", {}).items()}
    out["latency_buckets_ms"] = list(LATENCY_BOUNDS_MS)
    out["window"] = window
    return out


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0  # 5xx
    blocked: int = 0

    def add(self, requests: int, errors: int, blocked: int) -> None:
        self.requests += requests
        self.errors += errors
        self.blocked += blocked

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass
class SiteTraffic(Tally):
    site_id: object = None
    name: str = ""
    latency: list = field(default_factory=list)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latency, 0.95)


@dataclass
class OrgTraffic(Tally):
    """One organization's traffic over a window: totals, per worker (by name), per site (busiest first)."""

    by_worker: dict[str, Tally] = field(default_factory=dict)
    sites: list[SiteTraffic] = field(default_factory=list)


def org_traffic(org, window: str = "1h", *, now: dt.datetime | None = None) -> OrgTraffic:
    """``org``'s traffic only, whichever workers served it: the fleet page's overview."""
    from edge.models import Site

    span, _ = WINDOWS[window]
    end = _floor(now or timezone.now(), dt.timedelta(minutes=1)) + dt.timedelta(minutes=1)
    rows = (TrafficMinute.objects.for_org(org).filter(minute__gte=end - span, minute__lt=end)
            .values_list("worker", "site_id", "requests", "s5xx", "blocked", "latency"))
    out = OrgTraffic()
    sites: dict = {}
    for worker, site_id, requests, errors, blocked, latency in rows.iterator(chunk_size=2000):
        site = sites.get(site_id) or sites.setdefault(site_id, SiteTraffic(site_id=site_id))
        for tally in (out, out.by_worker.setdefault(worker, Tally()), site):
            tally.add(requests, errors, blocked)
        for i, n in enumerate(latency or []):
            if i < len(site.latency):
                site.latency[i] += n
            else:
                site.latency.append(n)
    names = dict(Site.objects.for_org(org).filter(pk__in=sites).values_list("pk", "name"))
    for site in sites.values():
        site.name = names.get(site.site_id, "")
    out.sites = sorted((s for s in sites.values() if s.name), key=lambda s: (-s.requests, s.name))
    return out


@dataclass
class BackendView:
    up: int
    of: int
    workers: list[dict]

    def __str__(self) -> str:
        return f"up on {self.up} of {self.of} workers"


def backend_health(site) -> dict[str, BackendView]:
    """Per backend id (str): on how many online workers it is up."""
    from fleet.selectors import online_workers

    online = {w.pk: w.name for w in online_workers()}
    views: dict[str, BackendView] = {}
    for h in BackendHealth.objects.filter(site=site, worker_id__in=online).order_by("worker__name"):
        v = views.setdefault(str(h.backend_id), BackendView(0, 0, []))
        v.of += 1
        v.up += 1 if h.up else 0
        v.workers.append({"worker": online[h.worker_id], "up": h.up, "since": h.since.isoformat(),
                          "processes_up": h.processes_up, "processes": h.processes})
    return views


def backends_with_health(site, backends) -> list:
    """The site's backends, each with ``.health`` (a BackendView, or None before any report)."""
    views = backend_health(site)
    out = list(backends)
    for b in out:
        b.health = views.get(str(b.pk))
    return out
