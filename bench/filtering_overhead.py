"""What the filtering policies cost per request (issue: filtering — IP rules, rate limits, WAF).

Three worker processes (one process each) serve the same nginx origin (a 612-byte file); they
differ only in the site's policies:

  - "no policies";
  - "50 WAF rules + rate limit": 50 custom rules of two conditions each, combined with ``or``, over
    every field and operator, none matching the benchmark request (so all 100 conditions run: the
    worst case for the rule set), plus a rate limit per client IP high enough never to refuse
    (every request still takes a token from the shared-memory bucket);
  - the same plus the four managed groups (sqli, xss, traversal, scanners) in block mode.

wrk sends a browser-like request (query string, User-Agent, Cookie). Each configuration is run
--rounds times, alternating, and the median is reported (other processes share this machine).
A second, in-process measurement times the three filtering addons' hooks alone on the same
request, without the network or mitmproxy, in microseconds.

Run: .venv/bin/python bench/filtering_overhead.py [--duration 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds, wrk  # noqa: E402
from proxyworker import snapshot as snap  # noqa: E402
from tests.e2e.processes import PY, free_port, spawn, stop, wait_for  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000;
  server {{ listen 127.0.0.1:{origin}; root {dir}/www; }}
}}
"""

PATH = "/index.html?page=2&sort=name&q=blue+shoes"
HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Cookie": "session=abc123; theme=dark",
    "Accept": "text/html",
}


def fifty_rules() -> list[snap.WafRule]:
    def c(field, op, value, name=None):
        return snap.WafCondition(field=field, op=op, value=value, name=name)

    templates = [
        lambda i: (c("path", "prefix", f"/admin{i}"), c("header", "equals", "1", f"X-Block-{i}")),
        lambda i: (c("user_agent", "regex", rf"(?i)badbot{i}\b"), c("ip", "in_cidr", [f"10.{i}.0.0/16", f"2001:db8:{i}::/48"])),
        lambda i: (c("query", "contains", f"debug{i}="), c("cookie", "equals", f"blocked{i}", "session")),
        lambda i: (c("method", "equals", ["TRACE", "CONNECT"]), c("path", "regex", rf"\.(bak{i}|old{i})$")),
        lambda i: (c("ip", "equals", f"192.0.2.{i}"), c("header", "contains", f"evil{i}", "Referer")),
    ]
    return [
        snap.WafRule(id=f"r{i}", conditions=list(templates[i % len(templates)](i)), combine="or", action="block")
        for i in range(50)
    ]


def policies(kind: str) -> snap.Policies:
    if kind == "none":
        return snap.Policies()
    managed = {g: "block" for g in snap.MANAGED_WAF_GROUPS} if kind == "managed" else {}
    return snap.Policies(
        rate_limits=[snap.RateLimit(requests=1_000_000_000, per_seconds=1)],
        waf=snap.WafPolicy(rules=fifty_rules(), managed=managed),
    )


def snapshot_for(kind: str, origin: int) -> snap.Snapshot:
    site = snap.Site(
        id="s1", organization="o1", name="bench", hostnames=["bench.test"],
        pools=[snap.Pool(name="default", backends=[snap.Backend(id="b1", address="127.0.0.1", port=origin)])],
        # passive_failures at its maximum: wrk's connections cut at the end of a run abort their
        # requests, which the balancer counts as backend failures (and would eject nginx).
        health_check=snap.HealthCheck(enabled=False, passive_failures=100), policies=policies(kind),
    )
    return snap.Snapshot(version=1, sites=[site])


def micro(kind: str, n: int = 20000, unique: bool = False) -> float:
    """Microseconds per request spent in the Access, RateLimiter and WebFirewall hooks (request
    side, and the RateLimit headers on a 200 response)."""
    from mitmproxy import http
    from mitmproxy.test import tflow, tutils

    from proxyworker.addons.access import Access
    from proxyworker.addons.ratelimit import RateLimiter
    from proxyworker.addons.waf import WebFirewall
    from proxyworker.tables import compile_snapshot

    site = compile_snapshot(snapshot_for(kind, 9)).sites[0]
    tmp = tempfile.mkdtemp(prefix="portico-rl-")
    addons = [Access(), RateLimiter(os.path.join(tmp, "buckets")), WebFirewall()]
    flows = []
    for i in range(n):
        path = f"{PATH}&n={i}" if unique else PATH  # unique: no remembered managed verdict helps
        req = tutils.treq(method=b"GET", path=path.encode(), headers=http.Headers(**{}), content=b"")
        for k, v in HEADERS.items():
            req.headers[k] = v
        flow = tflow.tflow(req=req)
        flow.client_conn.peername = ("127.0.0.1", 40000)
        flow.metadata["portico.site"] = site
        flow.metadata["portico.client_path"] = path
        flows.append(flow)
    responses = [http.Response.make(200, b"x" * 612, {"content-type": "text/html"}) for _ in flows]
    started = time.perf_counter()
    for flow, response in zip(flows, responses, strict=True):
        for addon in addons:
            addon.requestheaders(flow)
        assert flow.response is None
        flow.response = response
        addons[1].responseheaders(flow)
    elapsed = time.perf_counter() - started
    shutil.rmtree(tmp, ignore_errors=True)
    return elapsed / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "filtering_overhead.json"))
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("needs wrk and nginx (apt-get install wrk nginx-light)")

    kinds = {"no policies": "none", "50 WAF rules + rate limit": "rules", "50 WAF rules + rate limit + managed groups": "managed"}
    # min of several runs: the run least disturbed by other processes
    micro_us = {name: round(min(micro(kind) for _ in range(5)), 2) for name, kind in kinds.items()}
    micro_us["50 WAF rules + rate limit + managed groups, every URL new"] = round(
        min(micro("managed", unique=True) for _ in range(5)), 2)

    work = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    print(f"working directory (logs): {work}", file=sys.stderr)
    work.chmod(0o755)
    (work / "www").mkdir()
    (work / "www" / "index.html").write_bytes(b"x" * 612)
    origin = free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, origin=origin))
    procs = {"nginx": spawn(["nginx", "-c", str(work / "nginx.conf")], env=os.environ.copy(), log=work / "nginx.log")}
    ports = {}
    for name, kind in kinds.items():
        path = work / f"{kind}.json"
        path.write_bytes(snap.encode(snapshot_for(kind, origin)))
        ports[name] = free_port()
        procs[kind] = spawn([PY, "-m", "proxyworker", "--snapshot", str(path), "--http-port", str(ports[name]),
                             "--https-port", str(free_port()), "--processes", "1", "--listen-host", "127.0.0.1"],
                            env=os.environ.copy(), log=work / f"{kind}.log")

    def up(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    for port in (origin, *ports.values()):
        wait_for(lambda p=port: up(p), timeout=30, what=f"port {port}")
    time.sleep(1)

    extra = {"Host": "bench.test", **HEADERS}
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {name: [] for name in kinds}
    try:
        for port in ports.values():  # warm-up
            wrk(f"http://127.0.0.1:{port}{PATH}", threads=1, conns=16, duration=2, headers=extra)
        for _ in range(args.rounds):
            for name, port in ports.items():
                pid = procs[kinds[name]].pid
                cpu_before = cpu_seconds(pid)
                run = wrk(f"http://127.0.0.1:{port}{PATH}", threads=1, conns=16, duration=args.duration,
                          headers=extra)
                run["cpu_us_per_request"] = (cpu_seconds(pid) - cpu_before) / max(1, run["requests"]) * 1e6
                runs[name].append(run)
    finally:
        for p in procs.values():
            stop(p)
    load_after = os.getloadavg()

    summary = {name: {"rps_median": statistics.median(r["rps"] for r in rs), "rps_runs": [r["rps"] for r in rs],
                      "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
                      "cpu_us_per_request_median": round(statistics.median(r["cpu_us_per_request"] for r in rs), 1),
                      "cpu_us_per_request_runs": [round(r["cpu_us_per_request"], 1) for r in rs],
                      "non_2xx": sum(r["non_2xx"] for r in rs),
                      "socket_errors": [r["socket_errors"] for r in rs if r["socket_errors"]]} for name, rs in runs.items()}
    base = summary["no policies"]["rps_median"]
    cpu_base = summary["no policies"]["cpu_us_per_request_median"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "wrk": f"-t1 -c16 -d{args.duration}s, {args.rounds} alternating rounds, 612-byte file from nginx, 1 worker process each",
        "throughput": summary,
        "throughput_cost_vs_no_policies": {
            name: f"{(1 - s['rps_median'] / base) * 100:.1f}%" for name, s in summary.items() if name != "no policies"
        },
        # A worker process is CPU-bound: its capacity is 1 / CPU per request.
        "capacity_cost_from_cpu_per_request": {
            name: f"{(1 - cpu_base / s['cpu_us_per_request_median']) * 100:.1f}%"
            for name, s in summary.items() if name != "no policies"
        },
        "filtering_hooks_us_per_request": micro_us,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
