"""Writing traffic: ingesting what workers report, downsampling, retention.

``ingest`` takes one ``traffic.ingest`` message (all the processes of one worker, one interval) and
costs a handful of statements whatever the number of sites: one lookup of the sites, multi-row
upserts of the minutes, one bulk insert of samples, and backend health written only where it changed.

The minute upsert keeps the report with the highest ``seq`` per (site, minute, worker, process):
counts are cumulative per minute, so a message delivered twice, or two deliveries racing in two
Celery threads, end with the newest numbers, never a sum.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from edge.models import Site
from fleet.models import Worker

from .models import BackendHealth, RequestSample, TrafficHour, TrafficMinute

log = logging.getLogger(__name__)

_COUNT_COLUMNS = ("requests", "s1xx", "s2xx", "s3xx", "s4xx", "s5xx", "bytes_in", "bytes_out", "cache_hit", "cache_miss",
                  "cache_stale", "cache_bypass", "cache_revalidated", "blocked", "blocked_by", "latency",
                  "latency_sum_ms", "backends")
_JSON_COLUMNS = frozenset({"blocked_by", "latency", "backends"})
_MINUTE_COLUMNS = ("organization_id", "site_id", "minute", "worker", "process", "seq", *_COUNT_COLUMNS)
_UPSERT_ROWS = 500  # rows per statement: 24 parameters each, far below Postgres' 65,535
SAMPLES_KEPT_PER_SITE = 1000


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _minute_row(worker: str, org_id, m: dict) -> tuple:
    status = (list(m.get("status") or []) + [0] * 5)[:5]
    cache = m.get("cache") or {}
    blocked_by = [list(b) for b in m.get("blocked") or []]
    minute = dt.datetime.fromtimestamp(int(m["minute"]) * 60, tz=dt.UTC)
    return (
        org_id, _uuid(m["site"]), minute, worker, str(m["process"])[:40], int(m["seq"]),
        int(m.get("requests", 0)), *map(int, status), int(m.get("bytes_in", 0)), int(m.get("bytes_out", 0)),
        int(cache.get("hit", 0)), int(cache.get("miss", 0)), int(cache.get("stale", 0)), int(cache.get("bypass", 0)),
        int(cache.get("revalidated", 0)), sum(int(b[2]) for b in blocked_by), blocked_by,
        [int(n) for n in m.get("latency") or []], float(m.get("latency_sum_ms", 0.0)), m.get("backends") or {},
    )


# Postgres types of the minute columns, for reading a message's rows out of one JSON parameter.
_PG_TYPES = {"organization_id": "uuid", "site_id": "uuid", "minute": "timestamptz", "worker": "text", "process": "text",
             "latency_sum_ms": "double precision", **dict.fromkeys(_JSON_COLUMNS, "jsonb")}


def _sql_value(column: str, value):
    """A value as the database without a JSON parameter path (SQLite) stores it: JSON as text,
    UUIDs as Django keeps them there (32 hex digits)."""
    if column in _JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, uuid.UUID) and not connection.features.has_native_uuid_field:
        return value.hex
    return value


def _upsert_minutes(rows: list[tuple]) -> None:
    table = TrafficMinute._meta.db_table
    cols = ", ".join(_MINUTE_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ("seq", *_COUNT_COLUMNS))
    # Postgres refuses one statement touching a row twice; the agent already keeps one report
    # per (process, site, minute), so a message never holds duplicates.
    upsert = (f"ON CONFLICT (site_id, minute, worker, process) DO UPDATE SET {updates} "
              f"WHERE {table}.seq < EXCLUDED.seq")
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            # All rows in one JSON parameter: a multi-row VALUES list has 24 placeholders a row,
            # and the driver's parsing of such a statement cost more than Postgres' work.
            record = ", ".join(f"{c} {_PG_TYPES.get(c, 'bigint')}" for c in _MINUTE_COLUMNS)
            payload = [dict(zip(_MINUTE_COLUMNS, row, strict=True)) for row in rows]
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM jsonb_to_recordset(%s::jsonb) AS r({record}) {upsert}",
                        [json.dumps(payload, default=str)])
            return
        one = "(" + ", ".join(["%s"] * len(_MINUTE_COLUMNS)) + ")"
        for start in range(0, len(rows), _UPSERT_ROWS):
            chunk = rows[start:start + _UPSERT_ROWS]
            params = [_sql_value(c, v) for row in chunk for c, v in zip(_MINUTE_COLUMNS, row, strict=True)]
            cur.execute(f"INSERT INTO {table} ({cols}) VALUES {', '.join([one] * len(chunk))} {upsert}", params)


def ingest(*, worker: str, minutes: Iterable[dict] = (), samples: Iterable[dict] = (),
           backends: Iterable[dict] = ()) -> dict[str, int]:
    """Store one worker's report. Unknown sites (deleted since the snapshot) are skipped."""
    minutes, samples, backends = list(minutes), list(samples), list(backends)
    site_ids = {_uuid(x["site"]) for x in (*minutes, *samples, *backends)} - {None}
    orgs = dict(Site.objects.filter(pk__in=site_ids).values_list("pk", "organization_id"))
    rows = [_minute_row(worker, orgs[sid], m) for m in minutes if (sid := _uuid(m["site"])) in orgs]
    with transaction.atomic():
        if rows:
            _upsert_minutes(rows)
        stored_samples = _store_samples(worker, orgs, samples)
    changes = _store_backend_health(worker, orgs, backends) if backends else []
    if changes:
        from . import alerts

        alerts.backend_health_changed(changes)
    return {"minutes": len(rows), "samples": stored_samples, "health_changes": len(changes)}


def _store_samples(worker: str, orgs: dict, samples: list[dict]) -> int:
    objs = []
    for s in samples:
        sid = _uuid(s.get("site"))
        if sid not in orgs:
            continue
        blocked = s.get("blocked") or {}
        status = int(s.get("status", 0))
        kind = RequestSample.Kind.BLOCKED if blocked else RequestSample.Kind.FAILED if status >= 500 else RequestSample.Kind.SAMPLE
        objs.append(RequestSample(
            organization_id=orgs[sid], site_id=sid, worker=worker, kind=kind,
            at=dt.datetime.fromtimestamp(float(s.get("at", 0)), tz=dt.UTC),
            request_id=str(s.get("request_id", ""))[:128], client_ip=str(s.get("client_ip", ""))[:64],
            method=str(s.get("method", ""))[:16], host=str(s.get("host", ""))[:255], path=str(s.get("path", "")),
            status=status, request_headers=s.get("request_headers") or [], response_headers=s.get("response_headers") or [],
            blocked_reason=str(blocked.get("reason", ""))[:30], blocked_rule=str(blocked.get("rule", ""))[:200],
            backend_id=str(s.get("backend") or "")[:64], cache=str(s.get("cache") or "")[:20],
            error=str(s.get("error", "")), timing=s.get("timing") or {},
        ))
    RequestSample.objects.bulk_create(objs)
    return len(objs)


def _store_backend_health(worker_name: str, orgs: dict, backends: list[dict]) -> list[BackendHealth]:
    """Write what changed; return the rows whose up/down state changed (for alerts)."""
    worker = Worker.objects.filter(name=worker_name).first()
    if worker is None:  # not said hello yet: its next report will do
        return []
    now = timezone.now()
    existing = {str(h.backend_id): h for h in BackendHealth.objects.filter(worker=worker)}
    create, update, changed = [], [], []
    for b in backends:
        sid, bid = _uuid(b.get("site")), _uuid(b.get("backend"))
        if sid not in orgs or bid is None:
            continue
        up, procs, procs_up = bool(b["up"]), int(b.get("processes", 1)), int(b.get("processes_up", 1))
        row = existing.get(str(bid))
        if row is None:
            row = BackendHealth(organization_id=orgs[sid], site_id=sid, backend_id=bid, worker=worker, up=up,
                                processes=procs, processes_up=procs_up, since=now, updated_at=now)
            create.append(row)
            if not up:
                changed.append(row)
        elif (row.up, row.processes, row.processes_up) != (up, procs, procs_up) or now - row.updated_at > dt.timedelta(minutes=1):
            if row.up != up:
                row.since = now
                changed.append(row)
            row.up, row.processes, row.processes_up, row.updated_at = up, procs, procs_up, now
            update.append(row)
    BackendHealth.objects.bulk_create(create, ignore_conflicts=True)
    _update_health(update)
    return changed


def _update_health(rows: list[BackendHealth]) -> None:
    fields = ["up", "processes", "processes_up", "since", "updated_at"]
    if connection.vendor != "postgresql":
        BackendHealth.objects.bulk_update(rows, fields)
        return
    if not rows:
        return
    # One JSON parameter rather than bulk_update's CASE per field and row (thousands of placeholders).
    payload = [{"id": r.pk, "up": r.up, "processes": r.processes, "processes_up": r.processes_up,
                "since": r.since.isoformat(), "updated_at": r.updated_at.isoformat()} for r in rows]
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {BackendHealth._meta.db_table} AS h SET {', '.join(f'{f} = r.{f}' for f in fields)} "
            "FROM jsonb_to_recordset(%s::jsonb) AS r(id bigint, up boolean, processes integer, processes_up integer, "
            "since timestamptz, updated_at timestamptz) WHERE h.id = r.id",
            [json.dumps(payload)],
        )


# --- downsampling and retention -------------------------------------------------------------------


def merge_counts(total: dict, row: dict) -> None:
    """Add one row's counters (a dict of Counts fields) into ``total``."""
    for c in _COUNT_COLUMNS:
        if c in _JSON_COLUMNS:
            continue
        total[c] = total.get(c, 0) + (row.get(c) or 0)
    lat = total.setdefault("latency", [])
    for i, n in enumerate(row.get("latency") or []):
        if i < len(lat):
            lat[i] += n
        else:
            lat.append(n)
    blocked = total.setdefault("_blocked", {})
    for reason, rule, n in row.get("blocked_by") or []:
        blocked[(reason, rule)] = blocked.get((reason, rule), 0) + n
    backends = total.setdefault("backends", {})
    for bid, (req, err) in (row.get("backends") or {}).items():
        t = backends.setdefault(bid, [0, 0])
        t[0] += req
        t[1] += err


def downsample(*, now: dt.datetime | None = None, hours: int = 3) -> int:
    """(Re)compute the hour rows of the last ``hours`` complete hours from their minutes.
    Idempotent: an hour is replaced as a whole."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(hours=hours)
    fields = ["organization_id", "site_id", "minute", *_COUNT_COLUMNS]
    buckets: dict[tuple, dict] = {}
    for row in TrafficMinute.objects.filter(minute__gte=start, minute__lt=end).values(*fields).iterator(chunk_size=5000):
        hour = row["minute"].replace(minute=0)
        total = buckets.setdefault((row["site_id"], hour), {"organization_id": row["organization_id"]})
        merge_counts(total, row)
    objs = []
    for (site_id, hour), t in buckets.items():
        blocked = t.pop("_blocked", {})
        objs.append(TrafficHour(site_id=site_id, hour=hour, blocked_by=[[r, ru, n] for (r, ru), n in blocked.items()], **t))
    with transaction.atomic():
        TrafficHour.objects.filter(hour__gte=start, hour__lt=end).delete()
        TrafficHour.objects.bulk_create(objs)
    return len(objs)


def apply_retention(*, now: dt.datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    minutes, _ = TrafficMinute.objects.filter(
        minute__lt=now - dt.timedelta(hours=settings.TRAFFIC_MINUTE_HOURS)).delete()
    hours, _ = TrafficHour.objects.filter(hour__lt=now - dt.timedelta(days=settings.TRAFFIC_RETENTION_DAYS)).delete()
    samples, _ = RequestSample.objects.filter(at__lt=now - dt.timedelta(days=settings.TRAFFIC_SAMPLE_DAYS)).delete()
    # And no more than SAMPLES_KEPT_PER_SITE per site: the inspector is a rolling window.
    for site_id in RequestSample.objects.values_list("site_id", flat=True).distinct():
        beyond = list(RequestSample.objects.filter(site_id=site_id).order_by("-at")
                      .values_list("at", flat=True)[SAMPLES_KEPT_PER_SITE:SAMPLES_KEPT_PER_SITE + 1])
        if beyond:
            samples += RequestSample.objects.filter(site_id=site_id, at__lte=beyond[0]).delete()[0]
    return {"minutes": minutes, "hours": hours, "samples": samples}
