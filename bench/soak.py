"""Soak: steady load through one worker node for a long while, with config changes and purges.

The whole platform runs for real (``bench/stack.py``: a private Postgres and redis-server, Celery
with beat, the web app, one node of 2 proxy processes + agent). One site with a cache policy and a
compression policy (no rate limit) proxies an origin answering 8 kB of HTML over 500 paths. While
``bench/loadgen.py`` keeps a steady paced load on it:

- every --change-every seconds a config change goes the platform's way (service → publish →
  Celery → broker → agent → proxy reload): the site's backend weight alternates 1 ↔ 2, and a
  response header policy's value changes; each is timed until the node serves the new version;
- every --purge-every seconds a purge of everything (service → Celery → agent → proxy), timed
  until every worker confirmed it;
- every --sample-every seconds: the RSS of every process of the node (supervisor, serving
  processes, agent), requests/s and errors since the last sample.

At the end: bench/results/soak.json (the curve and the totals) and bench/results/soak-memory.svg
(RSS over time), and a summary: requests, errors, RSS at start/end/max and the slope after warm-up.

Run: .venv/bin/python bench/soak.py [--duration 600]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.harness import run_facts  # noqa: E402
from bench.stack import Platform, serves  # noqa: E402
from tests.e2e.processes import children_of, rss_bytes, wait_for  # noqa: E402

MB = 1024 * 1024


def slope_per_10_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per 10 minutes."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def svg_chart(samples: list[dict], series: list[str], warmup: float, title: str) -> str:
    """A line chart of RSS (MB) per process over time, as a small standalone SVG."""
    w, h, left, right, top, bottom = 760, 360, 60, 170, 36, 40
    pw, ph = w - left - right, h - top - bottom
    t_max = max(s["t"] for s in samples) or 1.0
    v_max = max(s["rss_mb"].get(k, 0) for s in samples for k in series) or 1.0
    v_top = 50.0 * math.ceil(v_max * 1.1 / 50)  # gridlines at multiples of 10 MB
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

    def x(t: float) -> float:
        return left + pw * t / t_max

    def y(v: float) -> float:
        return top + ph * (1 - v / v_top)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="13">{title}</text>']
    for i in range(6):  # horizontal grid and MB labels
        v = v_top * i / 5
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    for i in range(6):  # time labels
        t = t_max * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t:.0f}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle">seconds</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">RSS, MB</text>')
    if 0 < warmup < t_max:
        out.append(f'<line x1="{x(warmup):.1f}" y1="{top}" x2="{x(warmup):.1f}" y2="{top + ph}" stroke="#999" '
                   'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x(warmup) + 4:.1f}" y="{top + 12}" fill="#666">warm-up ends</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    for i, name in enumerate(series):
        color = colors[i % len(colors)]
        pts = " ".join(f"{x(s['t']):.1f},{y(s['rss_mb'][name]):.1f}" for s in samples if name in s["rss_mb"])
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        ly = top + 14 + 16 * i
        out.append(f'<line x1="{left + pw + 12}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left + pw + 34}" y="{ly}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def marker(n: int) -> dict:
    """The header rule a config change rewrites: clients see which change served them."""
    return {"direction": "response", "op": "set", "name": "X-Soak-Change", "value": str(n)}


def node_processes(node) -> dict[str, int]:
    """Name → pid for the node's supervisor, each serving process (by position) and its agent."""
    supervisor = node.procs["proxy"].pid
    found = {"supervisor": supervisor, "agent": node.procs["agent"].pid}
    for i, pid in enumerate(sorted(children_of(supervisor))):
        found[f"serving-{i + 1}"] = pid
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--warmup", type=float, default=None, help="seconds excluded from the slope (default: 10 %% of the duration)")
    ap.add_argument("--change-every", type=float, default=20.0)
    ap.add_argument("--purge-every", type=float, default=30.0)
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rate", type=float, default=25.0, help="requests per second per client")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    ap.add_argument("--svg", default=str(ROOT / "bench" / "results" / "soak-memory.svg"))
    args = ap.parse_args()
    warmup = args.duration * 0.1 if args.warmup is None else args.warmup

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="portico-soak-"))
    p = Platform(work, clients=args.clients, rate=args.rate)
    samples: list[dict] = []
    changes: list[dict] = []
    purges: list[dict] = []
    load = None
    try:
        p.start(nodes={"main": 2})
        from edge import purges as purge_service
        from edge import services as edge
        from edge.models import Backend, Purge

        origin = p.origin("soak-origin", body_bytes=8192, cache_control="public, max-age=300")
        site = p.site("soak", [origin], hc_enabled=False)
        edge.policy_create(actor=p.actor, org=p.org, site=site, kind="cache", name="cache", settings={"default_ttl": 300})
        edge.policy_create(actor=p.actor, org=p.org, site=site, kind="compression", name="compression", settings={})
        headers = edge.policy_create(actor=p.actor, org=p.org, site=site, kind="headers", name="soak-marker",
                                     settings=[marker(0)])
        node = p.nodes["main"]
        wait_for(lambda: serves(node, "soak.faults.test", "soak-origin"), timeout=120, what="the site to be served")
        load = p.load("soak", [node.http_port], "soak.faults.test", path="/page/", paths=500)

        load.new_requests()  # what came before the start does not count in the first sample
        started = last_sample = time.monotonic()
        next_sample, next_change, next_purge = started, started + args.change_every, started + args.purge_every
        backend = Backend.objects.get(site=site)
        while (now := time.monotonic()) < started + args.duration:
            if now >= next_change:
                next_change += args.change_every
                n = len(changes) + 1
                before = node.served_version()
                t0 = time.monotonic()
                try:
                    edge.backend_update(actor=p.actor, org=p.org, backend=backend, weight=1 + n % 2)
                    edge.policy_update(actor=p.actor, org=p.org, policy=headers,
                                       settings=[marker(n)])
                    wait_for(lambda b=before: node.served_version() > b, timeout=30, what=f"change {n} served")
                    changes.append({"t": round(t0 - started, 1), "served_after_s": round(time.monotonic() - t0, 3),
                                    "version": node.served_version()})
                except Exception as exc:  # recorded: a change that does not arrive is a finding
                    changes.append({"t": round(t0 - started, 1), "failed": f"{type(exc).__name__}: {exc}"})
            if now >= next_purge:
                next_purge += args.purge_every
                t0 = time.monotonic()
                try:
                    purge = purge_service.purge_create(actor=p.actor, org=p.org, site=None, kind="all")
                    wait_for(lambda pk=purge.pk: Purge.objects.get(pk=pk).status == Purge.Status.DONE, timeout=30,
                             what="the purge to be confirmed")
                    purges.append({"t": round(t0 - started, 1), "done_after_s": round(time.monotonic() - t0, 3)})
                except Exception as exc:
                    purges.append({"t": round(t0 - started, 1), "failed": f"{type(exc).__name__}: {exc}"})
            if now >= next_sample:
                next_sample += args.sample_every
                recent = load.new_requests()
                window, last_sample = max(now - last_sample, 1e-3), now
                procs = node_processes(node)
                samples.append({
                    "t": round(now - started, 1),
                    "rss_mb": {name: round(rss_bytes(pid) / MB, 2) for name, pid in procs.items()},
                    "pids": procs,
                    "requests": len(recent),
                    "rps": round(len(recent) / window, 1),
                    "errors": sum(1 for r in recent if not r.ok),
                })
                print(f"t={samples[-1]['t']:6.0f}s rps={samples[-1]['rps']:6.1f} errors={samples[-1]['errors']} "
                      + " ".join(f"{k}={v:.1f}MB" for k, v in samples[-1]["rss_mb"].items()), flush=True)
            time.sleep(max(0.0, min(next_sample, next_change, next_purge) - time.monotonic()))
    finally:
        if load is not None:
            load.stop()
        p.stop()

    everything = load.requests(started)
    errors = [r for r in everything if not r.ok]
    serving = sorted({k for s in samples for k in s["rss_mb"] if k.startswith("serving-")})
    for s in samples:
        s["rss_mb"]["serving total"] = round(sum(s["rss_mb"].get(k, 0) for k in serving), 2)
    series = [*serving, "serving total", "supervisor", "agent"]
    memory = {}
    for name in series:
        values = [(s["t"], s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
        memory[name] = {
            "start_mb": values[0][1], "end_mb": values[-1][1], "max_mb": max(v for _, v in values),
            "after_warmup_start_mb": next((v for t, v in values if t >= warmup), None),
            "slope_mb_per_10_min_after_warmup": (lambda s: round(s, 2) if s is not None else None)(
                slope_per_10_min([(t, v) for t, v in values if t >= warmup])),
        }
    respawned = len({s["pids"].get(k) for s in samples for k in serving}) - len(serving)
    result = {
        **run_facts(load_before),
        "settings": {"duration_s": args.duration, "warmup_s": warmup, "clients": args.clients, "rate_per_client": args.rate,
                     "change_every_s": args.change_every, "purge_every_s": args.purge_every, "sample_every_s": args.sample_every,
                     "node": "2 serving processes; site with cache + compression + a header rule, no rate limit; "
                             "origin 8 kB HTML over 500 paths"},
        "requests": len(everything),
        "errors": len(errors),
        "error_kinds": {k: sum(1 for r in errors if r.result == k) for k in {r.result for r in errors}},
        "serving_processes_replaced": respawned,
        "changes": {"count": len(changes), "failed": sum(1 for c in changes if "failed" in c),
                    "served_after_s_median": statistics.median([c["served_after_s"] for c in changes if "served_after_s" in c] or [0]),
                    "each": changes},
        "purges": {"count": len(purges), "failed": sum(1 for c in purges if "failed" in c),
                   "done_after_s_median": statistics.median([c["done_after_s"] for c in purges if "done_after_s" in c] or [0]),
                   "each": purges},
        "memory": memory,
        "samples": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.svg).write_text(svg_chart(samples, series, warmup,
                                        f"Worker node RSS under steady load, {args.duration:.0f} s, {result['date']}"))
    print(f"\nrequests {result['requests']:,}, errors {result['errors']} {result['error_kinds'] or ''}; "
          f"changes {len(changes)} (failed {result['changes']['failed']}), purges {len(purges)} (failed {result['purges']['failed']})")
    for name in series:
        m = memory[name]
        print(f"{name:>14}: start {m['start_mb']:.1f} MB, end {m['end_mb']:.1f} MB, max {m['max_mb']:.1f} MB, "
              f"slope after warm-up {m['slope_mb_per_10_min_after_warmup']} MB / 10 min")
    print(f"written to {args.out} and {args.svg}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
