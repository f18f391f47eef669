"""Traffic charts as server-rendered SVG: the geometry, computed here, drawn by a template.

Everything in this module is pure (numbers and strings in, numbers and strings out), so that
scales, ticks and paths are unit-tested without a page. Templates only loop over what a ``Chart``
holds: no arithmetic in templates, and no JavaScript, so the dashboard's Content-Security-Policy
(no inline script or style) holds. Colours come from CSS classes in portico.css.

Times are UTC, values on the axes carry k/M suffixes, and a window with nothing to draw gives an
empty chart (``Chart.empty``) that the template replaces with a sentence, not a flat line.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

WIDTH, HEIGHT = 720, 190
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 12, 10, 24

WINDOW_PHRASES = {"1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days"}
# One x-axis label every ...: six or seven labels whatever the window.
TIME_TICK_STEPS = {"1h": dt.timedelta(minutes=10), "24h": dt.timedelta(hours=4), "7d": dt.timedelta(days=1)}
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


class PointLike(Protocol):
    """What ``traffic.selectors.Point`` offers; charts need nothing else."""

    at: dt.datetime

    def get(self, name: str) -> int: ...

    @property
    def cache_hit_ratio(self) -> float | None: ...

    def latency_ms(self, q: float) -> float | None: ...


# --- numbers people read ---------------------------------------------------------------------------


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_count(value: float) -> str:
    """12, 950, 1.5k, 12k, 3.4M, 1.2G: short enough for an axis."""
    if abs(value) < 1000:
        return _trim(f"{value:.1f}") if value != int(value) else str(int(value))
    for limit, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        scaled = value / limit
        text = f"{scaled:.1f}" if abs(scaled) < 100 else f"{scaled:.0f}"
        if abs(float(text)) < 1000 or suffix == "G":  # 999,999 is "1M", not "1000k"
            return _trim(text) + suffix
    raise AssertionError("unreachable")


def format_ms(value: float) -> str:
    """Latency: 0.5 ms, 12 ms, 1.2 s."""
    if value >= 1000:
        return _trim(f"{value / 1000:.1f}") + " s"
    return (_trim(f"{value:.1f}") if value < 10 else f"{value:.0f}") + " ms"


def format_percent(ratio: float) -> str:
    """A ratio (0..1) as a percentage: 0.5 → 50%, 0.123 → 12.3%."""
    return _trim(f"{ratio * 100:.1f}") + "%"


# --- scales and ticks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Linear map from a domain (values) to a range (pixels); the range may be inverted (SVG's y)."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return self.r0
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


def nice_step(span: float, count: int) -> float:
    """The 1, 2 or 5 × 10^k step that cuts ``span`` into about ``count`` intervals."""
    raw = span / max(count, 1)
    exponent = math.floor(math.log10(raw))
    base = 10.0 ** exponent
    for mult in (1, 2, 5, 10):
        if raw <= mult * base:
            return mult * base
    return 10 * base  # pragma: no cover - the loop always returns


def value_ticks(top: float, count: int = 4, *, integer: bool = True) -> list[float]:
    """Ticks from 0 up to the first nice value at or above ``top``; at least [0, 1] (or [0, step])."""
    if top <= 0:
        return [0.0, 1.0]
    step = nice_step(top, count)
    if integer:
        step = max(step, 1.0)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def time_ticks(start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> list[dt.datetime]:
    """Times in [start, end] that are whole multiples of ``step`` since the epoch (UTC)."""
    seconds = int(step.total_seconds())
    first = math.ceil(start.timestamp() / seconds) * seconds
    out = []
    t = first
    while t <= end.timestamp():
        out.append(dt.datetime.fromtimestamp(t, tz=dt.UTC))
        t += seconds
    return out


def time_label(at: dt.datetime, window: str) -> str:
    at = at.astimezone(dt.UTC)
    if window == "7d":
        return at.strftime("%a %d")
    return at.strftime("%H:%M")


def point_label(at: dt.datetime, window: str) -> str:
    """The time of one bar or point, for its tooltip."""
    at = at.astimezone(dt.UTC)
    return at.strftime("%a %d %b %H:%M UTC") if window == "7d" else at.strftime("%H:%M UTC")


def _num(value: float) -> str:
    """Coordinates with one decimal, no trailing zeros: compact, stable SVG."""
    return _trim(f"{value:.1f}")


def line_path(coords: Sequence[tuple[float, float] | None]) -> str:
    """An SVG path through ``coords``; ``None`` breaks the line (no data there, not zero).

    A point with no neighbour becomes a zero-length segment, which a round line cap draws as a dot.
    """
    parts: list[str] = []
    pen_down = False
    for i, xy in enumerate(coords):
        if xy is None:
            pen_down = False
            continue
        x, y = _num(xy[0]), _num(xy[1])
        if pen_down:
            parts.append(f"L{x} {y}")
        else:
            parts.append(f"M{x} {y}")
            following = coords[i + 1] if i + 1 < len(coords) else None
            if following is None:
                parts.append("l0 0")
        pen_down = True
    return " ".join(parts)


# --- charts --------------------------------------------------------------------------------------


@dataclass
class Tick:
    pos: str
    label: str


@dataclass
class Bar:
    x: str
    y: str
    width: str
    height: str
    css: str


@dataclass
class Column:
    """The bars of one point, with the text its tooltip shows."""

    tip: str
    bars: list[Bar]


@dataclass
class Line:
    d: str
    css: str
    label: str


@dataclass
class Chart:
    key: str
    title: str
    description: str
    empty_text: str
    empty: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = MARGIN_LEFT
    plot_right: int = WIDTH - MARGIN_RIGHT
    plot_top: int = MARGIN_TOP
    plot_bottom: int = HEIGHT - MARGIN_BOTTOM
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, label)

    @property
    def label_x(self) -> int:
        return self.plot_left - 6

    @property
    def label_y(self) -> int:
        return self.plot_bottom + 16

    @property
    def view_box(self) -> str:
        return f"0 0 {self.width} {self.height}"


@dataclass(frozen=True)
class Frame:
    """Where ``n`` points go: one band per point, across the plot's width."""

    n: int
    left: float = MARGIN_LEFT
    right: float = WIDTH - MARGIN_RIGHT
    top: float = MARGIN_TOP
    bottom: float = HEIGHT - MARGIN_BOTTOM

    @property
    def band(self) -> float:
        return (self.right - self.left) / max(self.n, 1)

    def x_start(self, i: int) -> float:
        return self.left + i * self.band

    def x_center(self, i: int) -> float:
        return self.left + (i + 0.5) * self.band

    def y_scale(self, top_value: float) -> Scale:
        return Scale(0.0, top_value, self.bottom, self.top)


def _x_ticks(points: Sequence[PointLike], window: str, frame: Frame) -> list[Tick]:
    if not points:
        return []
    step = points[1].at - points[0].at if len(points) > 1 else dt.timedelta(minutes=1)
    start, end = points[0].at, points[-1].at + step
    x = Scale(start.timestamp(), end.timestamp(), frame.left, frame.right)
    return [Tick(_num(x(t.timestamp())), time_label(t, window)) for t in time_ticks(start, end, TIME_TICK_STEPS[window])]


def _y_ticks(ticks: Sequence[float], y: Scale, fmt: Callable[[float], str]) -> list[Tick]:
    return [Tick(_num(y(v)), fmt(v)) for v in ticks]


def _base(key: str, title: str, description: str, empty_text: str, points, window: str, frame: Frame) -> Chart:
    return Chart(key=key, title=title, description=description, empty_text=empty_text,
                 x_ticks=_x_ticks(points, window, frame))


def stacked_bars(points: Sequence[PointLike], window: str, *, key: str, title: str, noun: str,
                 series: Sequence[tuple[str, str, str]], empty_text: str) -> Chart:
    """Bars per point, stacked bottom-up in ``series`` order: (counter name, css class, label)."""
    frame = Frame(len(points))
    totals = [sum(p.get(name) for name, _, _ in series) for p in points]
    grand = sum(totals)
    phrase = WINDOW_PHRASES[window]
    chart = _base(key, title, "", empty_text, points, window, frame)
    if grand == 0:
        chart.empty = True
        chart.description = empty_text
        return chart
    ticks = value_ticks(max(totals))
    y = frame.y_scale(ticks[-1])
    chart.y_ticks = _y_ticks(ticks, y, format_count)
    width = max(frame.band * 0.8, 1.0)
    gap = (frame.band - width) / 2
    for i, p in enumerate(points):
        if not totals[i]:
            continue
        bars, below, parts = [], 0, []
        for name, css, label in series:
            n = p.get(name)
            parts.append(f"{label} {n:,}")
            if not n:
                continue
            top = below + n
            bars.append(Bar(_num(frame.x_start(i) + gap), _num(y(top)), _num(width), _num(y(below) - y(top)), css))
            below = top
        chart.columns.append(Column(f"{point_label(p.at, window)}: {totals[i]:,} {noun} ({', '.join(parts)})", bars))
    chart.legend = [(css, label) for _, css, label in series]
    peak = max(range(len(points)), key=lambda i: totals[i])
    chart.description = (f"{grand:,} {noun} in {phrase}; the busiest point, {point_label(points[peak].at, window)}, "
                         f"had {totals[peak]:,}.")
    return chart


def lines(points: Sequence[PointLike], window: str, *, key: str, title: str,
          series: Sequence[tuple[Callable[[PointLike], float | None], str, str]],
          fmt: Callable[[float], str], empty_text: str, fixed_top: float | None = None,
          describe: Callable[[list[list[float | None]]], str] | None = None) -> Chart:
    """One line per series: (value of a point or None, css class, label). None leaves a gap."""
    frame = Frame(len(points))
    values = [[get(p) for p in points] for get, _, _ in series]
    present = [v for vs in values for v in vs if v is not None]
    chart = _base(key, title, "", empty_text, points, window, frame)
    if not present:
        chart.empty = True
        chart.description = empty_text
        return chart
    ticks = (value_ticks(fixed_top, 4, integer=False) if fixed_top is not None
             else value_ticks(max(present), 4, integer=False))
    y = frame.y_scale(ticks[-1])
    chart.y_ticks = _y_ticks(ticks, y, fmt)
    for vs, (_, css, label) in zip(values, series, strict=True):
        coords = [(frame.x_center(i), y(v)) if v is not None else None for i, v in enumerate(vs)]
        chart.lines.append(Line(line_path(coords), css, label))
    chart.legend = [(css, label) for _, css, label in series]
    chart.description = describe(values) if describe else ""
    return chart


def requests_chart(points: Sequence[PointLike], window: str) -> Chart:
    shown = [c for c in STATUS_CLASSES if c != "1xx" or any(p.get("s1xx") for p in points)]
    return stacked_bars(points, window, key="requests", title="Requests by status class", noun="requests",
                        series=[(f"s{c}", f"s{c}", c) for c in shown],
                        empty_text=f"No traffic in {WINDOW_PHRASES[window]}.")


def blocked_chart(points: Sequence[PointLike], window: str) -> Chart:
    return stacked_bars(points, window, key="blocked", title="Blocked requests", noun="blocked",
                        series=[("blocked", "blocked", "blocked")],
                        empty_text=f"Nothing was blocked in {WINDOW_PHRASES[window]}.")


def cache_chart(points: Sequence[PointLike], window: str) -> Chart:
    def describe(values):
        vs = [v for v in values[0] if v is not None]
        return (f"Cache hit ratio in {WINDOW_PHRASES[window]}: between {format_percent(min(vs))} "
                f"and {format_percent(max(vs))}.")

    return lines(points, window, key="cache", title="Cache hit ratio",
                 series=[(lambda p: p.cache_hit_ratio, "hit", "hit ratio")], fmt=format_percent, fixed_top=1.0,
                 empty_text=f"No cacheable requests in {WINDOW_PHRASES[window]}.", describe=describe)


def latency_chart(points: Sequence[PointLike], window: str) -> Chart:
    def describe(values):
        peaks = [max((v for v in vs if v is not None), default=None) for vs in values]
        said = [f"{name} up to {format_ms(v)}" for (name, _), v in zip(PERCENTILES, peaks, strict=True) if v is not None]
        return f"Upstream latency in {WINDOW_PHRASES[window]}: " + ", ".join(said) + "."

    return lines(points, window, key="latency", title="Upstream latency",
                 series=[(lambda p, q=q: p.latency_ms(q), name, name) for name, q in PERCENTILES], fmt=format_ms,
                 empty_text=f"No upstream latency recorded in {WINDOW_PHRASES[window]}.", describe=describe)


def traffic_charts(points: Sequence[PointLike], window: str) -> list[Chart]:
    """The charts of a site's traffic page, in the order they are shown."""
    return [requests_chart(points, window), cache_chart(points, window), latency_chart(points, window),
            blocked_chart(points, window)]
