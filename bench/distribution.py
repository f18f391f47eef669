"""Config distribution benchmark (issue: config distribution over Celery).

With N sites and 3 worker nodes (proxy + agent each) on this machine, a real Celery worker of the
control plane and a private Redis broker:

1. time from a service write's commit until every node's proxy serves the new version (its status
   file), and until the control plane has all three `applied` reports, over K changes;
2. a steady load of GETs through all three nodes during those changes: failed requests counted;
3. compile time and size of a snapshot of 10,000 sites.

Run:  .venv/bin/python bench/distribution.py [--sites 1000] [--changes 100]
Uses its own database (portico_bench on the local Postgres, dropped and recreated).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

DB_NAME = "portico_bench"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from tests.e2e.processes import PY, PrivateRedis, free_port, spawn, stop, wait_for  # noqa: E402


class Origin(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--compile-sites", type=int, default=10_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distribution.json"))
    args = ap.parse_args()

    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {DB_NAME}"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {DB_NAME}"], check=True)
    work = Path(f"/tmp/portico-bench-{os.getpid()}")
    work.mkdir()
    redis = PrivateRedis(work)
    redis.start()
    os.environ["CELERY_BROKER_URL"] = redis.url

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from edge import services as edge
    from edge.models import Backend, Hostname, Site
    from fleet.compiler import compile_snapshot
    from fleet.models import Worker
    from fleet.publisher import fleet_key, publish
    from tenancy.access import Actor
    from tenancy.models import Organization

    from proxyworker import snapshot

    origin = ThreadingHTTPServer(("127.0.0.1", free_port()), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    origin_port = origin.server_address[1]

    # --- N sites, created in bulk (setup, not what is measured) ---------------------------------
    org = Organization.objects.create(name="Bench", slug="bench")

    def bulk_sites(count: int, prefix: str) -> None:
        sites = [Site(organization=org, name=f"{prefix}{i}", hc_enabled=False) for i in range(count)]
        Site.objects.bulk_create(sites, batch_size=2000)
        Hostname.objects.bulk_create([Hostname(organization=org, site=s, name=f"{s.name}.bench.test") for s in sites], batch_size=2000)
        Backend.objects.bulk_create(
            [Backend(organization=org, site=s, address="127.0.0.1", port=origin_port) for s in sites], batch_size=2000
        )

    bulk_sites(args.sites, "site")
    publish(force=True)

    env = dict(os.environ, PORTICO_FLEET_KEY=settings.FLEET_KEY, PORTICO_SECRET_KEY=settings.SECRET_KEY,
               PORTICO_DATA_KEYS=",".join(settings.DATA_KEYS), PYTHONUNBUFFERED="1")
    procs = [spawn([PY, "-m", "celery", "-A", "config", "worker", "-P", "threads", "-c", "4", "-l", "info",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"], env=env, log=work / "celery.log",
                   cwd=ROOT / "platform")]
    nodes = []
    for i in range(args.nodes):
        folder = work / f"node-{i}"
        folder.mkdir()
        snap_path = folder / "snapshot.json"
        port = free_port()
        procs.append(spawn([PY, "-m", "proxyworker", "--snapshot", str(snap_path), "--http-port", str(port),
                            "--https-port", str(free_port()), "--processes", "1", "--listen-host", "127.0.0.1"],
                           env=env, log=folder / "proxy.log"))
        procs.append(spawn([PY, "-m", "proxyworker.agent", "--snapshot", str(snap_path), "--name", f"node-{i}",
                            "--broker", redis.url], env=env, log=folder / "agent.log"))
        nodes.append((port, Path(f"{snap_path}.status.json")))

    def served(status_file: Path) -> int:
        try:
            return json.loads(status_file.read_text()).get("version") or 0
        except (OSError, ValueError):
            return 0

    try:
        first = publish(force=True).number
        wait_for(lambda: all(served(s) >= first for _, s in nodes), timeout=120, what="nodes to load the first snapshot")
        print(f"{args.sites} sites served by {args.nodes} nodes (v{first})")

        # --- steady load through every node -------------------------------------------------------
        stop_load = threading.Event()
        counts = {"ok": 0}
        failures: list[str] = []

        def load(port: int) -> None:
            i = 0
            while not stop_load.is_set():
                i += 1
                host = f"site{i % args.sites}.bench.test"
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/", headers={"Host": host})
                    resp = conn.getresponse()
                    resp.read()
                    conn.close()
                    if resp.status == 200:
                        counts["ok"] += 1
                    else:
                        failures.append(f"{host}: {resp.status}")
                except OSError as exc:
                    failures.append(f"{host}: {exc!r}")
                time.sleep(0.01)

        loaders = [threading.Thread(target=load, args=(port,), daemon=True) for port, _ in nodes]
        for t in loaders:
            t.start()

        # --- K changes, each timed from commit to served everywhere --------------------------------
        actor = Actor.system("bench")
        backends = list(Backend.objects.filter(organization=org).order_by("site__name")[: args.changes])
        to_served, to_reported = [], []
        for n, backend in enumerate(backends):
            before = max(served(s) for _, s in nodes)
            edge.backend_update(actor=actor, org=org, backend=backend, weight=2 + n % 5)
            committed = time.perf_counter()
            wait_for(lambda b=before: all(served(s) > b for _, s in nodes), timeout=30, interval=0.002,
                     what=f"change {n} to be served")
            to_served.append(time.perf_counter() - committed)
            target = min(served(s) for _, s in nodes)
            wait_for(lambda t=target: Worker.objects.filter(version__gte=t).count() == args.nodes, timeout=30,
                     interval=0.002, what=f"change {n} to be reported")
            to_reported.append(time.perf_counter() - committed)
            time.sleep(0.05)
        stop_load.set()
        for t in loaders:
            t.join()

        # --- compile time and size for a large platform --------------------------------------------
        bulk_sites(args.compile_sites - args.sites, "big")
        t0 = time.perf_counter()
        snap = compile_snapshot(version=999999, fleet_key=fleet_key())
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        env_text = snapshot.encode_envelope(snapshot.sign(snap, fleet_key()))
        sign_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        snapshot.verify(snapshot.decode_envelope(env_text), fleet_key())
        verify_s = time.perf_counter() - t0

        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
            "sites": args.sites,
            "nodes": args.nodes,
            "changes": len(to_served),
            "commit_to_served_ms": {"p50": 1000 * statistics.median(to_served), "p90": 1000 * percentile(to_served, 90),
                                    "p99": 1000 * percentile(to_served, 99), "max": 1000 * max(to_served),
                                    "slowest": [round(1000 * x) for x in sorted(to_served)[-5:]]},
            "commit_to_reported_ms": {"p50": 1000 * statistics.median(to_reported),
                                      "p99": 1000 * percentile(to_reported, 99), "max": 1000 * max(to_reported)},
            "load_requests_ok": counts["ok"],
            "load_requests_failed": len(failures),
            "load_failures_sample": failures[:5],
            "compile": {"sites": len(snap.sites), "compile_s": compile_s, "sign_encode_s": sign_s, "verify_decode_s": verify_s,
                        "envelope_bytes": len(env_text)},
        }
        print(json.dumps(result, indent=2))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for p in procs:
            stop(p)
        redis.stop()
        origin.shutdown()


if __name__ == "__main__":
    main()
