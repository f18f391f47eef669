"""Worker reports become minute rollups: idempotent, newest wins, summed over workers."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from traffic import selectors, services
from traffic.models import RequestSample, TrafficHour, TrafficMinute

from .conftest import minute_of, report


def test_the_same_report_twice_counts_once(shop):
    m = minute_of(timezone.now())
    services.ingest(worker="w1", minutes=[report(shop, m, requests=10)])
    services.ingest(worker="w1", minutes=[report(shop, m, requests=10)])
    assert TrafficMinute.objects.get().requests == 10
    assert selectors.summary(shop, "1h")["requests"] == 10


def test_a_newer_report_replaces_an_older_one_and_a_late_old_one_changes_nothing(shop):
    m = minute_of(timezone.now())
    services.ingest(worker="w1", minutes=[report(shop, m, seq=2, requests=25, status=(0, 25, 0, 0, 0))])
    services.ingest(worker="w1", minutes=[report(shop, m, seq=1, requests=10)])  # delivered late
    assert TrafficMinute.objects.get().requests == 25
    services.ingest(worker="w1", minutes=[report(shop, m, seq=3, requests=30, status=(0, 29, 0, 0, 1))])
    row = TrafficMinute.objects.get()
    assert (row.requests, row.s2xx, row.s5xx) == (30, 29, 1)


def test_workers_and_processes_add_up_in_the_charts(shop):
    m = minute_of(timezone.now())
    services.ingest(worker="w1", minutes=[report(shop, m, process="a", requests=10), report(shop, m, process="b", requests=5,
                                                                                            status=(0, 5, 0, 0, 0))])
    services.ingest(worker="w2", minutes=[report(shop, m, process="a", requests=7, status=(0, 3, 0, 4, 0))])
    points = selectors.series(shop, "1h")
    assert len(points) == 60
    last = points[-1].as_dict()
    assert last["requests"] == 22
    assert last["status"]["2xx"] == 18 and last["status"]["4xx"] == 4


def test_percentiles_come_from_summed_histograms(shop):
    m = minute_of(timezone.now())
    fast = [0] * 12
    fast[1] = 90  # 5-10 ms
    slow = [0] * 12
    slow[7] = 10  # 500-1000 ms
    services.ingest(worker="w1", minutes=[report(shop, m, requests=90, status=(0, 90, 0, 0, 0), latency=fast)])
    services.ingest(worker="w2", minutes=[report(shop, m, requests=10, status=(0, 10, 0, 0, 0), latency=slow)])
    lat = selectors.summary(shop, "1h")["latency_ms"]
    assert 5 <= lat["p50"] <= 10
    assert lat["p95"] == 750.0  # halfway into the 500-1000 ms bucket
    assert 500 < lat["p99"] <= 1000


def test_blocked_requests_keep_their_rule_and_cache_outcomes_their_ratio(shop):
    m = minute_of(timezone.now())
    services.ingest(worker="w1", minutes=[report(shop, m, requests=10, status=(0, 6, 0, 4, 0),
                                                 blocked=[("waf", "sqli-1", 3), ("ratelimit", "api", 1)],
                                                 cache={"hit": 3, "miss": 1, "bypass": 2})])
    s = selectors.summary(shop, "1h")
    assert s["blocked"] == 4
    assert s["blocked_by"] == [{"reason": "waf", "rule": "sqli-1", "count": 3},
                               {"reason": "ratelimit", "rule": "api", "count": 1}]
    assert s["cache_hit_ratio"] == 0.75


def test_reports_for_unknown_sites_are_skipped(shop):
    m = minute_of(timezone.now())
    other = report(shop, m)
    other["site"] = "8d7c1e57-0000-4000-8000-000000000000"
    not_a_uuid = {**report(shop, m), "site": "test-site"}
    assert services.ingest(worker="w1", minutes=[other, not_a_uuid, report(shop, m)])["minutes"] == 1


def test_hours_are_downsampled_and_the_7d_chart_reads_them(shop):
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    two_hours_ago = now - dt.timedelta(hours=2)
    services.ingest(worker="w1", minutes=[report(shop, minute_of(two_hours_ago), requests=10),
                                          report(shop, minute_of(two_hours_ago) + 5, requests=4, status=(0, 4, 0, 0, 0))])
    services.ingest(worker="w2", minutes=[report(shop, minute_of(two_hours_ago), requests=6, status=(0, 6, 0, 0, 0))])
    assert services.downsample(now=now) == 1
    assert services.downsample(now=now) == 1  # idempotent
    hour = TrafficHour.objects.get()
    assert hour.requests == 20 and hour.hour == two_hours_ago.replace(minute=0)
    week = selectors.series(shop, "7d", now=now)
    assert len(week) == 168 and sum(p.get("requests") for p in week) == 20


def test_retention_drops_old_minutes_hours_and_samples(shop, settings):
    settings.TRAFFIC_RETENTION_DAYS = 30
    now = timezone.now()
    old = now - dt.timedelta(days=3)
    services.ingest(worker="w1", minutes=[report(shop, minute_of(old)), report(shop, minute_of(now))],
                    samples=[{"site": str(shop.pk), "at": old.timestamp(), "method": "GET", "path": "/", "status": 200},
                             {"site": str(shop.pk), "at": now.timestamp(), "method": "GET", "path": "/", "status": 200}])
    TrafficHour.objects.create(organization=shop.organization, site=shop, hour=now - dt.timedelta(days=31), requests=1)
    settings.TRAFFIC_SAMPLE_DAYS = 1
    result = services.apply_retention(now=now)
    assert result == {"minutes": 1, "hours": 1, "samples": 1}
    assert TrafficMinute.objects.count() == 1 and RequestSample.objects.count() == 1
