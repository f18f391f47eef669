"""Proxy worker throughput, latency and memory (issue: proxy worker).

In one run, on this machine, with wrk against a small static file served by nginx:
  direct to nginx, nginx as reverse proxy, stock `mitmdump --mode reverse:...`,
  and the Portico worker with 1 and N processes.
Then the RSS of a worker process with 1,000 sites loaded, and the added p50 latency at one
connection (worker vs direct), with every process pinned: wrk and the origin on one core, the
proxy on the same core or on another one. A null relay (bench/relay.py, bytes only, no HTTP
work) is measured the same way: what it adds is what the machine costs any proxy.

Each configuration is run --rounds times, alternating, and the median is reported, because other
processes on a shared machine come and go.

Run: .venv/bin/python bench/worker_throughput.py [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds, wrk  # noqa: E402
from bench.stack import port_open  # noqa: E402
from proxyworker import snapshot  # noqa: E402
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
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def _host(host: str | None) -> dict[str, str] | None:
    return {"Host": host} if host else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def site_snapshot(count: int, origin: int) -> snapshot.Snapshot:
    sites = [
        snapshot.Site(
            id=f"s{i}", organization="o1", name=f"site{i}", hostnames=[f"site{i}.bench.test"],
            pools=[snapshot.Pool(name="default", backends=[snapshot.Backend(id=f"b{i}", address="127.0.0.1", port=origin)])],
            health_check=snapshot.HealthCheck(enabled=False),
        )
        for i in range(count)
    ]
    return snapshot.Snapshot(version=1, sites=sites)


def latency_at_one_connection(work: Path, *, rounds: int, duration: int) -> dict:
    """p50 at one connection (``wrk -t1 -c1``), in alternating rounds: direct, then every proxy.
    wrk and the origin run on the first core; each proxy (one process) on that core ("same core")
    or on the second ("separate cores"); and the worker with one process per core, as deployed by
    default (unpinned, placed by the scheduler) and with ``--cpu-affinity`` (each process pinned,
    taking the connections that arrive on its core). Added latency = proxy p50 - direct p50 of the
    same round; the median over the rounds is reported."""
    cores = sorted(os.sched_getaffinity(0))
    placements = {"same core": str(cores[0])}
    if len(cores) > 1:
        placements["separate cores"] = str(cores[1])
    home = work / "latency"
    (home / "www").mkdir(parents=True)
    home.chmod(0o755)
    (home / "www" / "index.html").write_bytes(b"x" * 612)
    origin = free_port()
    (home / "nginx.conf").write_text(NGINX_CONF.format(dir=home, origin=origin, proxy=free_port()))
    snap_path = home / "snapshot.json"
    snap_path.write_bytes(snapshot.encode(site_snapshot(1000, origin)))
    client_core = placements["same core"]
    procs = {"origin": spawn(["taskset", "-c", client_core, "nginx", "-c", str(home / "nginx.conf")], env=os.environ.copy(),
                             log=home / "nginx.log")}
    targets: dict[str, tuple[int, dict | None]] = {}
    for where, core in placements.items():
        port = free_port()
        procs[f"worker {where}"] = spawn(
            ["taskset", "-c", core, PY, "-m", "proxyworker", "--snapshot", str(snap_path), "--http-port", str(port),
             "--https-port", str(free_port()), "--processes", "1", "--listen-host", "127.0.0.1",
             "--status-file", str(home / f"status-{core}.json")],
            env=os.environ.copy(), log=home / f"worker-{core}.log")
        targets[f"portico worker, {where}"] = (port, _host("site7.bench.test"))
        port = free_port()
        procs[f"relay {where}"] = spawn(["taskset", "-c", core, PY, str(ROOT / "bench" / "relay.py"), str(port), str(origin)],
                                        env=os.environ.copy(), log=home / f"relay-{core}.log")
        targets[f"null relay, {where}"] = (port, None)
    if len(cores) > 1:
        # One process per core: as deployed by default, and pinned, each taking the connections
        # that arrive on its core (here: wrk's core).
        for name, extra in ((f"portico worker, {len(cores)} processes (the default)", []),
                            (f"portico worker, {len(cores)} processes, --cpu-affinity", ["--cpu-affinity"])):
            port = free_port()
            procs[name] = spawn(
                [PY, "-m", "proxyworker", "--snapshot", str(snap_path), "--http-port", str(port), "--https-port",
                 str(free_port()), "--processes", str(len(cores)), "--listen-host", "127.0.0.1",
                 "--status-file", str(home / f"status-{port}.json"), *extra],
                env=os.environ.copy(), log=home / f"worker-{port}.log")
            targets[name] = (port, _host("site7.bench.test"))
    p50: dict[str, list[float]] = {"direct": [], **{name: [] for name in targets}}
    try:
        for port in (origin, *(port for port, _ in targets.values())):
            wait_for(lambda p=port: port_open(p), timeout=30, what=f"port {port}")
        time.sleep(2)
        for port, host in targets.values():  # warm-up
            wrk(f"http://127.0.0.1:{port}/index.html", threads=1, conns=1, duration=1, headers=host, cpus=client_core)
        for _ in range(rounds):
            p50["direct"].append(wrk(f"http://127.0.0.1:{origin}/index.html", threads=1, conns=1, duration=duration,
                                     cpus=client_core)["p50_ms"])
            for name, (port, host) in targets.items():
                run = wrk(f"http://127.0.0.1:{port}/index.html", threads=1, conns=1, duration=duration, headers=host,
                          cpus=client_core)
                assert run["errors"] == 0, (name, run)
                p50[name].append(run["p50_ms"])
    finally:
        for proc in procs.values():
            stop(proc)
    return {
        "method": f"wrk -t1 -c1 -d{duration}s, {rounds} rounds; wrk and origin pinned to core {client_core}",
        "p50_ms_median": {name: round(statistics.median(runs), 3) for name, runs in p50.items()},
        "added_p50_ms_median": {
            name: round(statistics.median(r - d for r, d in zip(runs, p50["direct"], strict=True)), 3)
            for name, runs in p50.items() if name != "direct"
        },
        "p50_ms_runs": p50,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-rounds", type=int, default=10)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "worker_throughput.json"))
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("needs wrk and nginx (apt-get install wrk nginx-light)")

    work = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user and must read www/
    (work / "www").mkdir()
    (work / "www" / "index.html").write_bytes(b"x" * 612)  # the 612-byte file of DESIGN.md's measurements
    origin, nginx_proxy, mitm_port = free_port(), free_port(), free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, origin=origin, proxy=nginx_proxy))
    procs = {"nginx": spawn(["nginx", "-c", str(work / "nginx.conf")], env=os.environ.copy(), log=work / "nginx.log")}
    mitmdump = str(Path(PY).parent / "mitmdump")
    procs["mitmdump"] = spawn([mitmdump, "-q", "--mode", f"reverse:http://127.0.0.1:{origin}@127.0.0.1:{mitm_port}"],
                              env=os.environ.copy(), log=work / "mitmdump.log")

    snap_path = work / "snapshot.json"
    snap_path.write_bytes(snapshot.encode(site_snapshot(1000, origin)))
    workers = {}
    for key, n, extra in ((1, 1, []), (args.processes, args.processes, []), ("pinned", args.processes, ["--cpu-affinity"])):
        http = free_port()
        procs[f"worker{key}"] = spawn([PY, "-m", "proxyworker", "--snapshot", str(snap_path), "--http-port", str(http),
                                       "--https-port", str(free_port()), "--processes", str(n), "--listen-host", "127.0.0.1",
                                       "--status-file", str(work / f"status-{http}.json"), *extra],
                                      env=os.environ.copy(), log=work / f"worker{key}.log")
        workers[key] = http

    for port in (origin, nginx_proxy, mitm_port, *workers.values()):
        wait_for(lambda p=port: port_open(p), timeout=30, what=f"port {port}")
    time.sleep(2)  # let every worker process load the 1,000-site snapshot

    targets = {
        "nginx direct (no proxy)": (f"http://127.0.0.1:{origin}/index.html", None),
        "nginx reverse proxy": (f"http://127.0.0.1:{nginx_proxy}/index.html", None),
        "stock mitmdump reverse": (f"http://127.0.0.1:{mitm_port}/index.html", None),
        "portico worker, 1 process": (f"http://127.0.0.1:{workers[1]}/index.html", "site7.bench.test"),
        f"portico worker, {args.processes} processes": (f"http://127.0.0.1:{workers[args.processes]}/index.html",
                                                        "site7.bench.test"),
        f"portico worker, {args.processes} processes, --cpu-affinity": (
            f"http://127.0.0.1:{workers['pinned']}/index.html", "site7.bench.test"),
    }
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        for url, host in targets.values():  # warm-up
            wrk(url, threads=2, conns=32, duration=2, headers=_host(host))
        single = {"stock mitmdump reverse": procs["mitmdump"].pid, "portico worker, 1 process": procs["worker1"].pid}
        for _ in range(args.rounds):
            for name, (url, host) in targets.items():
                pid = single.get(name)
                cpu_before = cpu_seconds(pid) if pid else 0.0
                run = wrk(url, threads=2, conns=32, duration=args.duration, headers=_host(host))
                if pid:  # one process each: CPU per request is the throughput neighbours cannot blur
                    run["cpu_us_per_request"] = (cpu_seconds(pid) - cpu_before) / max(1, run["requests"]) * 1e6
                runs[name].append(run)
        worker_pids = children(procs[f"worker{args.processes}"].pid) or [procs[f"worker{args.processes}"].pid]
        one_pid = procs["worker1"].pid
        rss = {"1 process": rss_mb(one_pid), f"{args.processes} processes, each": [rss_mb(p) for p in worker_pids]}
    finally:
        for p in procs.values():
            stop(p)
    latency = latency_at_one_connection(work, rounds=args.latency_rounds, duration=3)

    summary = {name: {"rps_median": statistics.median(r["rps"] for r in rs), "rps_runs": [r["rps"] for r in rs],
                      "errors": sum(r["errors"] for r in rs)} for name, rs in runs.items()}
    for name, rs in runs.items():
        if "cpu_us_per_request" in rs[0]:
            summary[name]["cpu_us_per_request_median"] = round(statistics.median(r["cpu_us_per_request"] for r in rs), 1)
    mitm = summary["stock mitmdump reverse"]["rps_median"]
    nginx = summary["nginx reverse proxy"]["rps_median"]
    one = summary["portico worker, 1 process"]["rps_median"]
    many = summary[f"portico worker, {args.processes} processes"]["rps_median"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wrk": f"-t2 -c32 -d{args.duration}s, {args.rounds} alternating rounds, 612-byte file, 1,000 sites loaded",
        "throughput": summary,
        "ratios": {
            "worker_1_process_vs_stock_mitmdump": round(one / mitm, 2),
            "worker_1_process_vs_stock_mitmdump_by_cpu_per_request": round(
                summary["stock mitmdump reverse"]["cpu_us_per_request_median"]
                / summary["portico worker, 1 process"]["cpu_us_per_request_median"], 2),
            f"worker_{args.processes}_processes_vs_1": round(many / one, 2),
            f"worker_{args.processes}_processes_cpu_affinity_vs_1": round(
                summary[f"portico worker, {args.processes} processes, --cpu-affinity"]["rps_median"] / one, 2),
            "worker_1_process_vs_nginx_proxy": round(one / nginx, 3),
        },
        "latency_one_connection": latency,
        "rss_mb_with_1000_sites": rss,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
