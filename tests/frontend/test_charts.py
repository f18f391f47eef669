"""The chart geometry: scales, ticks, labels and paths, without a page or a database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from frontend import charts

T0 = dt.datetime(2025, 3, 14, 10, 0, tzinfo=dt.UTC)


@dataclass
class P:
    """A stand-in for traffic.selectors.Point: the same three things a chart reads."""

    at: dt.datetime
    counts: dict = field(default_factory=dict)
    ratio: float | None = None
    latency: dict = field(default_factory=dict)

    def get(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def cache_hit_ratio(self) -> float | None:
        return self.ratio

    def latency_ms(self, q: float) -> float | None:
        return self.latency.get(q)


def minutes(n: int, **per_point) -> list[P]:
    return [P(T0 + dt.timedelta(minutes=i), **{k: v[i] for k, v in per_point.items()}) for i in range(n)]


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (7, "7"), (950, "950"), (1000, "1k"), (1500, "1.5k"), (12_345, "12.3k"), (150_000, "150k"),
    (999_999, "1M"), (3_400_000, "3.4M"), (1_200_000_000, "1.2G"), (2.5, "2.5"),
])
def test_counts_read_with_k_and_m_suffixes(value, text):
    assert charts.format_count(value) == text


def test_latency_and_ratios_read_as_people_write_them():
    assert [charts.format_ms(v) for v in (0.5, 12.4, 999, 1200)] == ["0.5 ms", "12 ms", "999 ms", "1.2 s"]
    assert [charts.format_percent(r) for r in (0, 0.123, 0.5, 1)] == ["0%", "12.3%", "50%", "100%"]


def test_scale_maps_domain_to_an_inverted_range():
    y = charts.Scale(0, 100, 200, 0)  # SVG's y grows downwards
    assert (y(0), y(50), y(100)) == (200, 100, 0)
    assert charts.Scale(5, 5, 10, 20)(5) == 10  # an empty domain does not divide by zero


@pytest.mark.parametrize(("top", "ticks"), [
    (57, [0, 20, 40, 60]), (100, [0, 50, 100]), (1234, [0, 500, 1000, 1500]), (3, [0, 1, 2, 3]),
    (0, [0, 1]), (1, [0, 1]),
])
def test_value_ticks_are_round_and_cover_the_top(top, ticks):
    assert charts.value_ticks(top) == ticks


def test_fractional_ticks_for_ratios_and_small_latencies():
    assert charts.value_ticks(1.0, 4, integer=False) == [0, 0.5, 1.0]
    assert charts.value_ticks(0.37, 4, integer=False) == [0, 0.1, 0.2, 0.3, 0.4]


def test_time_ticks_fall_on_whole_steps_in_utc():
    start, end = T0 + dt.timedelta(minutes=3), T0 + dt.timedelta(minutes=63)
    ticks = charts.time_ticks(start, end, dt.timedelta(minutes=10))
    assert [charts.time_label(t, "1h") for t in ticks] == ["10:10", "10:20", "10:30", "10:40", "10:50", "11:00"]
    days = charts.time_ticks(T0, T0 + dt.timedelta(days=2), dt.timedelta(days=1))
    assert [charts.time_label(t, "7d") for t in days] == ["Sat 15", "Sun 16"]


def test_line_path_breaks_where_there_is_no_data():
    assert charts.line_path([(0, 10), (5, 5.25), None, (20, 1), (30, 2)]) == "M0 10 L5 5.2 M20 1 L30 2"
    # A lone point gets a zero-length segment: the round cap draws it as a dot.
    assert charts.line_path([None, (7, 3), None]) == "M7 3 l0 0"
    assert charts.line_path([]) == ""


def test_a_known_series_gives_known_bars():
    points = minutes(4, counts=[{"s2xx": 10}, {}, {"s2xx": 30, "s5xx": 10}, {"s4xx": 5}])
    chart = charts.requests_chart(points, "1h")
    assert not chart.empty
    # Plot: x 52..708 (656 px, 164 per point), y 166 (zero) .. 10; the tallest point (40) → ticks to 40.
    assert [t.label for t in chart.y_ticks] == ["0", "10", "20", "30", "40"]
    assert [t.pos for t in chart.y_ticks] == ["166", "127", "88", "49", "10"]
    first, third, fourth = chart.columns
    assert [(b.x, b.y, b.width, b.height, b.css) for b in first.bars] == [("68.4", "127", "131.2", "39", "s2xx")]
    assert [(b.y, b.height, b.css) for b in third.bars] == [("49", "117", "s2xx"), ("10", "39", "s5xx")]
    assert third.tip == "10:02 UTC: 40 requests (2xx 30, 3xx 0, 4xx 0, 5xx 10)"
    assert fourth.bars[0].css == "s4xx"
    assert [css for css, _ in chart.legend] == ["s2xx", "s3xx", "s4xx", "s5xx"]  # 1xx only when there is some
    assert chart.description == "55 requests in the last hour; the busiest point, 10:02 UTC, had 40."


def test_a_known_series_gives_known_lines():
    points = minutes(4, latency=[{0.5: 10, 0.95: 40, 0.99: 80}, {}, {0.5: 20, 0.95: 60, 0.99: 100}, {0.5: 5, 0.95: 5, 0.99: 5}])
    chart = charts.latency_chart(points, "1h")
    assert [t.label for t in chart.y_ticks] == ["0 ms", "50 ms", "100 ms"]
    p50, p95, p99 = chart.lines
    # x at the middle of each band (134, 298, 462, 626); y = 166 - v * 156 / 100; the empty minute is a gap.
    assert p50.d == "M134 150.4 l0 0 M462 134.8 L626 158.2"
    assert (p95.css, p99.label) == ("p95", "p99")
    assert p99.d == "M134 41.2 l0 0 M462 10 L626 158.2"
    assert "p99 up to 100 ms" in chart.description


def test_cache_ratio_is_drawn_from_zero_to_one_hundred_percent():
    chart = charts.cache_chart(minutes(2, ratio=[0.25, 0.75]), "1h")
    assert [t.label for t in chart.y_ticks] == ["0%", "50%", "100%"]
    assert chart.lines[0].d == "M216 127 L544 49"
    assert "between 25% and 75%" in chart.description


def test_no_traffic_is_an_empty_chart_with_a_sentence():
    points = minutes(60)
    for chart in charts.traffic_charts(points, "1h"):
        assert chart.empty and not chart.columns and not chart.lines
    assert charts.requests_chart(points, "1h").empty_text == "No traffic in the last hour."
    assert charts.blocked_chart(points, "7d").empty_text == "Nothing was blocked in the last 7 days."


def test_x_axis_labels_sit_on_their_minute():
    chart = charts.requests_chart(minutes(60, counts=[{"s2xx": 1}] * 60), "1h")
    labels = [(t.pos, t.label) for t in chart.x_ticks]
    # 10:00 is the left edge; one label every 10 minutes (656 px / 60 min × 10 = 109.3 px).
    assert labels[:3] == [("52", "10:00"), ("161.3", "10:10"), ("270.7", "10:20")]
    assert labels[-1] == ("708", "11:00")
