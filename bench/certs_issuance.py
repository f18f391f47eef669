"""Certificate issuance benchmark (issue 7: automatic HTTPS).

Time from "hostname added" (``edge.services.hostname_add`` has committed) to "a worker serves a
certificate for it that verifies" (a TLS handshake with SNI, verified against pebble's root,
succeeds), over N issuances, against a real pebble with validation on (pebble-challtestsrv
resolves every name to 127.0.0.1; PEBBLE_VA_NOSLEEP=1; 5 % of nonces rejected, pebble's default).

Everything runs for real on this machine: Postgres, a private redis-server, a Celery worker of the
control plane (threads), and 2 worker nodes (proxy + agent) behind a round-robin front on
pebble's validation port. Each issuance is broken down with the certificate's own timestamps.

Run:  .venv/bin/python bench/certs_issuance.py [--issuances 20] [--nodes 2]
Uses its own database (portico_bench_certs on the local Postgres, dropped and recreated).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

DB_NAME = "portico_bench_certs"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from tests.certs.challenge_front import ChallengeFront  # noqa: E402
from tests.certs.pebble import Pebble  # noqa: E402
from tests.e2e.processes import PY, PrivateRedis, free_port, spawn, stop, wait_for  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def verified(port: int, hostname: str, trust: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with trust.wrap_socket(raw, server_hostname=hostname):
                return True
    except (OSError, ssl.SSLError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--issuances", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "certs_issuance.json"))
    args = ap.parse_args()

    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {DB_NAME}"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {DB_NAME}"], check=True)
    work = Path(f"/tmp/portico-bench-certs-{os.getpid()}")
    work.mkdir()
    redis = PrivateRedis(work)
    redis.start()
    front = ChallengeFront()
    pebble = Pebble(work / "pebble", http_port=front.port).start()
    os.environ.update(
        CELERY_BROKER_URL=redis.url,
        PORTICO_ACME_DIRECTORY=pebble.directory_url,
        PORTICO_ACME_CA_BUNDLE=str(pebble.listener_ca),
        PORTICO_ACME_EMAIL="bench@portico.example",
    )

    import django

    django.setup()
    from certs.models import Certificate
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from edge import services as edge
    from fleet.models import Worker
    from tenancy.access import Actor
    from tenancy.models import Organization

    env = dict(os.environ, PORTICO_FLEET_KEY=settings.FLEET_KEY, PORTICO_SECRET_KEY=settings.SECRET_KEY,
               PORTICO_DATA_KEYS=",".join(settings.DATA_KEYS), PYTHONUNBUFFERED="1")
    procs = [spawn([PY, "-m", "celery", "-A", "config", "worker", "-P", "threads", "-c", "4", "-l", "warning",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"], env=env, log=work / "celery.log",
                   cwd=ROOT / "platform")]
    https_ports = []
    try:
        for i in range(args.nodes):
            folder = work / f"edge-{i}"
            folder.mkdir()
            snap_path = folder / "snapshot.json"
            http_port, https_port = free_port(), free_port()
            procs.append(spawn([PY, "-m", "proxyworker", "--snapshot", str(snap_path), "--http-port", str(http_port),
                                "--https-port", str(https_port), "--processes", "1", "--listen-host", "127.0.0.1"],
                               env=env, log=folder / "proxy.log"))
            procs.append(spawn([PY, "-m", "proxyworker.agent", "--snapshot", str(snap_path), "--name", f"edge-{i}",
                                "--broker", redis.url], env=env, log=folder / "agent.log"))
            front.add(f"edge-{i}", http_port)
            https_ports.append(https_port)
        wait_for(lambda: Worker.objects.count() == args.nodes, timeout=60, what="the agents' hello")

        trust = ssl.create_default_context(cafile=str(pebble.root_path))
        actor = Actor.system("bench")
        org = Organization.objects.create(name="Bench", slug="bench")
        site = edge.site_create(actor=actor, org=org, name="bench", hostnames=["warmup.bench.example.com"])
        wait_for(lambda: all(verified(p, "warmup.bench.example.com", trust) for p in https_ports), timeout=60,
                 what="the warm-up certificate")
        print(f"{args.nodes} nodes serving; warm-up certificate issued")

        rows = []
        for n in range(args.issuances):
            name = f"host{n}.bench.example.com"
            edge.hostname_add(actor=actor, org=org, site=site, name=name)
            added = time.perf_counter()
            added_at = time.time()
            first = wait_for(lambda h=name: any(verified(p, h, trust) for p in https_ports) and time.perf_counter(),
                             timeout=60, interval=0.01, what=f"{name} served by a node")
            every = wait_for(lambda h=name: all(verified(p, h, trust) for p in https_ports) and time.perf_counter(),
                             timeout=60, interval=0.01, what=f"{name} served by every node")
            cert = Certificate.objects.get(hostnames=[name], status=Certificate.Status.ISSUED)
            phases = {
                "ordered_and_published_s": (cert.challenges_published_at.timestamp() - added_at),
                "rollout_s": (cert.answered_at - cert.challenges_published_at).total_seconds(),
                "ca_validate_finalize_s": (cert.issued_at - cert.answered_at).total_seconds(),
            }
            rows.append({"name": name, "first_node_s": first - added, "every_node_s": every - added, **phases})
            print(f"{name}: served by one node after {first - added:.2f} s, by all after {every - added:.2f} s  {phases}")

        def summary(key: str) -> dict:
            values = [r[key] for r in rows]
            return {"p50": statistics.median(values), "p90": percentile(values, 90), "max": max(values), "min": min(values)}

        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
            "issuances": len(rows),
            "nodes": args.nodes,
            "pebble": "2.4 (Debian), validation on, PEBBLE_VA_NOSLEEP=1, 5 % nonces rejected",
            "hostname_added_to_verified_on_one_node_s": summary("first_node_s"),
            "hostname_added_to_verified_on_every_node_s": summary("every_node_s"),
            "phase_p50_s": {k: statistics.median(r[k] for r in rows)
                            for k in ("ordered_and_published_s", "rollout_s", "ca_validate_finalize_s")},
            "validation_requests_per_node": dict(front.asked),
            "runs": rows,
        }
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for p in procs:
            stop(p)
        pebble.stop()
        front.close()
        redis.stop()


if __name__ == "__main__":
    main()
