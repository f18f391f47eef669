"""A site's traffic page and the fleet overview, drawn from rollups stored by the real ingest."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone
from fleet.models import Worker
from traffic.services import ingest

from tests.traffic.conftest import minute_of, report


def traffic_url(cast, site=None, org_slug="acme") -> str:
    return reverse("frontend:site_traffic", kwargs={"org_slug": org_slug, "site_id": (site or cast.site).pk})


@pytest.fixture
def traffic(cast):
    """Two minutes ago: 30 requests to Shop through edge-1 (two 5xx, four blocked by a WAF rule, a
    cache hit ratio of 3/4) and 10 through edge-2; and Globex's site, 500 requests through edge-1."""
    now = minute_of(timezone.now()) - 2
    ingest(worker="edge-1", minutes=[
        report(cast.site, now, requests=30, status=(0, 24, 0, 4, 2), latency=[0, 10, 10, 10] + [0] * 8,
               blocked=[("waf", "no-env", 4)], cache={"hit": 6, "miss": 2}, bytes_out=2_500_000),
        report(cast.other_site, now, requests=500, status=(0, 0, 0, 0, 500), blocked=[("ip", "deny", 77)]),
    ])
    ingest(worker="edge-2", minutes=[report(cast.site, now, process="p9", requests=10, latency=[10] + [0] * 11)])


def page(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def test_the_site_page_links_to_its_traffic(cast):
    body = page(cast.client("viewer"), reverse("frontend:site", kwargs={"org_slug": "acme", "site_id": cast.site.pk}))
    assert f'href="{traffic_url(cast)}"' in body


def test_totals_and_charts_from_real_rollups(cast, traffic):
    body = page(cast.client("viewer"), traffic_url(cast))
    totals = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", body))
    # p95: the 38th of 40 latencies, 8/10 into the 25-50 ms bucket of the summed histograms.
    assert totals == {"Requests": "40", "5xx errors": "5%", "Cache hit ratio": "75%", "p95 latency": "45 ms",
                      "Sent": "2.4\xa0MB", "Blocked": "4"}
    # Four charts, each an accessible picture with a title and a description.
    assert body.count('<svg class="chart"') == 4
    for title in ("Requests by status class", "Cache hit ratio", "Upstream latency", "Blocked requests"):
        assert f">{title}</title>" in body
    assert "40 requests in the last hour" in body  # the requests chart's description
    assert 'class="s5xx"' in body and 'class="s4xx"' in body and 'class="blocked"' in body
    assert 'class="line p95"' in body and 'class="line hit"' in body
    assert "<td>waf</td><td><code>no-env</code></td><td>4</td>" in body
    assert "Globex" not in body and "deny" not in body  # the other tenant's traffic on the same worker


def test_the_window_switcher(cast, traffic):
    Worker.objects.create(name="edge-1", last_heartbeat=timezone.now())
    for window, label, phrase in (("1h", "1 hour", "the last hour"), ("24h", "24 hours", "the last 24 hours"),
                                  ("7d", "7 days", "the last 7 days")):
        body = page(cast.client("viewer"), traffic_url(cast), window=window)
        assert f'<a href="?window={window}" aria-current="page">{label}</a>' in body
        assert body.count('aria-current="page">') == 2  # the window, and "Sites" in the header
        assert f"40 requests in {phrase}" in body  # the minutes not yet downsampled count in 7d too
    # A hand-made window is the default one, not an error page.
    assert '<a href="?window=1h" aria-current="page">' in page(cast.client("viewer"), traffic_url(cast), window="1y")


def test_traffic_older_than_the_window_is_left_out(cast):
    three_hours_ago = minute_of(timezone.now() - dt.timedelta(hours=3))
    ingest(worker="edge-1", minutes=[report(cast.site, three_hours_ago, requests=12, status=(0, 12, 0, 0, 0))])
    hour = page(cast.client("viewer"), traffic_url(cast))
    assert "No traffic in the last hour." in hour and '<svg class="chart"' not in hour
    assert "12 requests in the last 24 hours" in page(cast.client("viewer"), traffic_url(cast), window="24h")


def test_no_traffic_is_said_not_drawn(cast):
    body = page(cast.client("viewer"), traffic_url(cast))
    for sentence in ("No traffic in the last hour.", "No cacheable requests in the last hour.",
                     "No upstream latency recorded in the last hour.", "Nothing was blocked in the last hour."):
        assert sentence in body
    assert "<svg" not in body
    assert "<dt>Requests</dt><dd>0</dd>" in body and "<dt>5xx errors</dt><dd>–</dd>" in body


def test_another_tenants_site_is_404(cast, traffic):
    assert cast.client("outsider").get(traffic_url(cast)).status_code == 404
    assert cast.client("owner").get(traffic_url(cast, cast.other_site)).status_code == 404
    assert cast.client("owner").get(traffic_url(cast, cast.other_site, org_slug="globex")).status_code == 404


# --- the fleet overview ---------------------------------------------------------------------------

FLEET = reverse("frontend:fleet", kwargs={"org_slug": "acme"})


def test_fleet_shows_each_workers_share_of_my_traffic_only(cast, traffic):
    Worker.objects.create(name="edge-1", version=3, last_heartbeat=timezone.now())
    Worker.objects.create(name="edge-2", version=2, last_heartbeat=timezone.now() - dt.timedelta(hours=2))
    body = page(cast.client("viewer"), FLEET)
    rows = {name: re.sub(r"<[^>]+>", "|", row) for name, row in re.findall(r'<tr><th scope="row">(edge-\d)</th>(.*?)</tr>', body, re.S)}
    cells = {name: [c.strip() for c in row.split("|") if c.strip()] for name, row in rows.items()}
    # pool, status, version, last seen (two cells), then Acme's requests, 5xx and blocked through it
    assert cells["edge-1"][1:3] == ["Online", "v3"] and cells["edge-1"][-3:] == ["30", "2", "4"]
    assert cells["edge-2"][1:3] == ["Offline", "v2"] and cells["edge-2"][-3:] == ["10", "0", "0"]
    assert "500" not in body and "Secret" not in body  # Globex's traffic and site
    assert "<dt>Requests</dt><dd>40</dd>" in body and "<dt>Blocked</dt><dd>4</dd>" in body


def test_fleet_lists_the_busiest_sites_linking_to_their_traffic(cast, traffic):
    body = page(cast.client("viewer"), FLEET)
    row = re.search(r'<tr><th scope="row"><a href="([^"]+)">Shop</a></th>(.*?)</tr>', body).groups()
    assert row[0] == traffic_url(cast)
    assert re.findall(r"<td>([^<]*)</td>", row[1]) == ["40", "5%", "45 ms", "4"]


def test_fleet_without_traffic_says_so(cast):
    assert "No traffic in the last hour." in page(cast.client("viewer"), FLEET)
