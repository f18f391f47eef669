"""The fault table: what clients see when a part of the platform fails, and how fast it recovers.

Everything runs for real on 127.0.0.1: a Postgres server and a redis-server of this run's own (so
stopping them hurts nobody), the control plane (Celery worker with beat, the web app under
gunicorn), worker nodes (proxy processes + agent), origins as processes of their own. During each
case a steady load (``bench/loadgen.py``: paced clients, half keep-alive, half a connection per
request) records every request; the case then reports client requests and errors, the window in
which errors happened, how long recovery took and whether anything was lost.

Cases (each bounded by --case-timeout):

  backend_killed       one of a site's two origins is killed (SIGKILL) under load, later restarted
  worker_process_killed  one of a node's two serving processes is killed (SIGKILL)
  worker_node_killed   a whole node (proxy processes and agent) is killed while a second node
                       serves; it is restarted and serves from its last-known-good snapshot
  broker_restarted     the broker is stopped, a change is made meanwhile, the broker restarted
  postgres_stopped     the database is stopped: the API answers 503, the nodes keep serving; after
                       it returns a change is applied and nothing written before is missing
  lkg_disk_unwritable  the disk holding a node's last-known-good snapshot turns read-only (root)

Run: .venv/bin/python bench/faults.py [--cases a,b,...] [--outage-seconds 5] [--case-timeout 120]
Writes bench/results/faults.json and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.harness import run_facts  # noqa: E402
from bench.loadgen import Load, summarize  # noqa: E402
from bench.stack import Platform, serves  # noqa: E402
from tests.e2e.processes import children_of, listening_pids, wait_for  # noqa: E402

ARGS: argparse.Namespace  # the run's options, for the cases

CASES = ["backend_killed", "worker_process_killed", "worker_node_killed", "broker_restarted", "postgres_stopped",
         "lkg_disk_unwritable"]


def case_result(load: Load, start: float, fault: float, end: float, **extra) -> dict:
    """What clients saw over the whole case (baseline, fault, recovery), times relative to the fault."""
    seen = summarize(load.requests(start, end), fault)
    return {"client_requests": seen["requests"], "client_errors": seen["errors"], "error_kinds": seen["error_kinds"],
            "error_window_s": seen["error_window_s"], "first_error_s": seen["first_error_s"],
            "last_error_s": seen["last_error_s"], "latency_ms": seen["latency_ms"], **extra,
            "per_second": seen["per_second"]}


# --- the cases ------------------------------------------------------------------------------------


def backend_killed(p: Platform) -> dict:
    a1, a2 = p.origin("a-1"), p.origin("a-2")
    p.site("case-a", [a1, a2], hc_path="/health", hc_interval=1.0, hc_timeout=0.5, hc_fall=2, hc_rise=2)
    main = p.nodes["main"]
    for tag in ("a-1", "a-2"):
        wait_for(lambda t=tag: serves(main, "case-a.faults.test", t), timeout=ARGS.case_timeout, what=f"{tag} served")
    load = p.load("backend_killed", [main.http_port], "case-a.faults.test")
    try:
        start = time.monotonic()
        time.sleep(ARGS.baseline_seconds)
        fault = time.monotonic()
        a2.kill()
        time.sleep(ARGS.outage_seconds)
        restarted = time.monotonic()
        a2.start()
        back = wait_for(lambda: load.first(lambda r: r.ok and r.tag == "a-2", restarted),
                        timeout=ARGS.case_timeout, what="traffic to reach the restarted origin")
        time.sleep(ARGS.after_seconds)
        end = time.monotonic()
    finally:
        load.stop()
    during = load.requests(fault, restarted)
    hc = next(s for s in main_snapshot(main).sites if s.name == "case-a").health_check
    return case_result(
        load, start, fault, end,
        recovery_s=round(back.t - restarted, 3),
        recovery_means="origin restarted → first request answered by it again",
        data_lost=None,
        notes=[f"{sum(1 for r in during if r.ok)} of {len(during)} requests while a-2 was down were answered by a-1",
               f"origin down {restarted - fault:.1f} s; active checks every {hc.interval:g} s ({hc.rise} passes bring it "
               f"back); passive checks eject it for {hc.eject_seconds:g} s after {hc.passive_failures} failed "
               "requests, which bounds how soon a restarted origin gets traffic again"],
    )


def main_snapshot(node):
    from fleet.publisher import fleet_key

    from proxyworker import snapshot

    return snapshot.load_file(str(node.snapshot_path), fleet_key())


def worker_process_killed(p: Platform) -> dict:
    b1 = p.origin("b-1")
    p.site("case-b", [b1], hc_enabled=False)
    main = p.nodes["main"]
    wait_for(lambda: serves(main, "case-b.faults.test", "b-1"), timeout=ARGS.case_timeout, what="case-b served")
    supervisor = main.procs["proxy"].pid
    serving = children_of(supervisor)
    load = p.load("worker_process_killed", [main.http_port], "case-b.faults.test")
    try:
        start = time.monotonic()
        time.sleep(ARGS.baseline_seconds)
        victim = serving[0]
        fault = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in listening_pids(main.http_port, [victim]), interval=0.002, what="the socket to close")
        gone = time.monotonic()
        replacement = wait_for(lambda: next(iter(listening_pids(main.http_port, children_of(supervisor)) - set(serving)), None),
                               timeout=ARGS.case_timeout, interval=0.005, what="a replacement to listen")
        listening = time.monotonic()
        time.sleep(ARGS.after_seconds)
        end = time.monotonic()
    finally:
        load.stop()
    between = load.requests(fault, listening)
    return case_result(
        load, start, fault, end,
        recovery_s=round(listening - fault, 3),
        recovery_means="kill -9 → the replacement process listens on the shared port",
        data_lost=None,
        notes=[f"killed pid {victim}; its socket closed {1000 * (gone - fault):.0f} ms after the kill; "
               f"replacement pid {replacement}",
               f"{sum(1 for r in between if r.ok)} requests answered by the other process before the replacement listened"],
    )


def worker_node_killed(p: Platform) -> dict:
    c1 = p.origin("n-1")
    p.site("case-n", [c1], hc_enabled=False)
    main, spare = p.nodes["main"], p.nodes["spare"]
    for node in (main, spare):
        wait_for(lambda n=node: serves(n, "case-n.faults.test", "n-1"), timeout=ARGS.case_timeout, what=f"{node.name} serves")
    version_before = main.served_version()
    # clients alternate between the two nodes: half of them are pinned to the one that dies
    load = p.load("worker_node_killed", [main.http_port, spare.http_port], "case-n.faults.test")
    try:
        start = time.monotonic()
        time.sleep(ARGS.baseline_seconds)
        fault = time.monotonic()
        main.stop_proxy(signal.SIGKILL)
        main.stop_agent(signal.SIGKILL)
        time.sleep(ARGS.outage_seconds)
        restarted = time.monotonic()
        main.start_proxy()  # from its last-known-good snapshot on disk, before the agent is back
        main.start_agent()
        back = wait_for(lambda: load.first(lambda r: r.ok and r.target == 0, restarted),
                        timeout=ARGS.case_timeout, what="the restarted node to answer")
        time.sleep(ARGS.after_seconds)
        end = time.monotonic()
    finally:
        load.stop()
    dead = summarize([r for r in load.requests(start, end) if r.target == 0], fault)
    alive = summarize([r for r in load.requests(start, end) if r.target == 1], fault)
    return case_result(
        load, start, fault, end,
        recovery_s=round(back.t - restarted, 3),
        recovery_means="node restarted → it answers again, from its last-known-good snapshot",
        data_lost=0 if main.served_version() >= version_before else version_before - main.served_version(),
        notes=[f"the surviving node: {alive['requests']} requests, {alive['errors']} errors",
               f"clients pinned to the killed node: {dead['errors']} errors over the {restarted - fault:.1f} s it was down",
               f"restarted node served v{main.served_version()} (v{version_before} before the kill)"],
    )


def broker_restarted(p: Platform) -> dict:
    from edge import services as edge
    from edge.models import Backend

    c1, c2 = p.origin("c-1"), p.origin("c-2")
    site = p.site("case-c", [c1], hc_enabled=False)
    main = p.nodes["main"]
    wait_for(lambda: serves(main, "case-c.faults.test", "c-1"), timeout=ARGS.case_timeout, what="case-c served")
    load = p.load("broker_restarted", [main.http_port], "case-c.faults.test")
    try:
        start = time.monotonic()
        time.sleep(ARGS.baseline_seconds)
        fault = time.monotonic()
        p.redis.stop()
        before_change = time.monotonic()
        edge.backend_update(actor=p.actor, org=p.org, backend=Backend.objects.get(site=site), port=c2.port)
        change_took = time.monotonic() - before_change
        time.sleep(ARGS.outage_seconds)
        restarted = time.monotonic()
        p.redis.start()
        changed = wait_for(lambda: load.first(lambda r: r.ok and r.tag == "c-2", restarted),
                           timeout=ARGS.case_timeout, what="the change made during the outage to be served")
        time.sleep(ARGS.after_seconds)
        end = time.monotonic()
    finally:
        load.stop()
    stale = [r for r in load.requests(fault, changed.t) if r.tag == "c-2"]
    return case_result(
        load, start, fault, end,
        recovery_s=round(changed.t - restarted, 3),
        recovery_means="broker restarted → the change made while it was down is served",
        data_lost=0 if changed else 1,  # the change made while the broker was down
        notes=[f"the change (backend moved to c-2) committed while the broker was down; the service call took "
               f"{1000 * change_took:.0f} ms",
               f"broker down {restarted - fault:.1f} s; {len(stale)} requests served by c-2 before the restart "
               "(0 expected: no path without the broker)",
               "the change travels: beat's periodic publish (every 10 s) → broker → agent → proxy"],
    )


def postgres_stopped(p: Platform) -> dict:
    from audit.models import AuditEvent
    from audit.services import verify_chain
    from django.db import connection
    from edge.models import Backend, Site
    from fleet.models import ConfigVersion

    d1, d2 = p.origin("d-1"), p.origin("d-2")
    p.site("case-d", [d1], hc_enabled=False)
    main = p.nodes["main"]
    wait_for(lambda: serves(main, "case-d.faults.test", "d-1"), timeout=ARGS.case_timeout, what="case-d served")

    def rows() -> dict[str, set]:
        return {"sites": set(Site.objects.values_list("pk", flat=True)),
                "backends": set(Backend.objects.values_list("pk", flat=True)),
                "audit_events": set(AuditEvent.objects.values_list("pk", flat=True)),
                "config_versions": set(ConfigVersion.objects.values_list("number", flat=True))}

    before = rows()
    sites_path = f"/api/v1/orgs/{p.org.slug}/sites/"
    polls: list[tuple[float, int, str | None, str | None]] = []
    polling = threading.Event()

    def poll_api() -> None:  # a client of the API reading every 0.5 s: what it saw, when
        while not polling.is_set():
            t = time.monotonic()
            status, body, headers = p.api("GET", sites_path)
            polls.append((t, status, headers.get("Retry-After"), body.get("code")))
            polling.wait(0.5)

    poller = threading.Thread(target=poll_api, daemon=True)
    load = p.load("postgres_stopped", [main.http_port], "case-d.faults.test")
    poller.start()
    try:
        start = time.monotonic()
        time.sleep(ARGS.baseline_seconds)
        fault = time.monotonic()
        p.pg.stop()
        down = time.monotonic()
        refused = p.api("POST", sites_path, {"name": "case-d-refused", "hostnames": ["case-d-refused.faults.test"],
                                             "backends": [d2.spec()]})
        time.sleep(ARGS.outage_seconds)
        restarted = time.monotonic()
        p.pg.start()
        api_back = wait_for(lambda: next((t for t, s, _, _ in list(polls) if t >= restarted and s == 200), None),
                            timeout=ARGS.case_timeout, what="the API to answer again")
        connection.close()  # this script's own connection died with the server
        submitted = time.monotonic()
        accepted = p.api("POST", sites_path, {"name": "case-d-after", "hostnames": ["case-d-after.faults.test"],
                                              "backends": [d2.spec()]})
        wait_for(lambda: serves(main, "case-d-after.faults.test", "d-2"), timeout=ARGS.case_timeout,
                 what="the change made after the outage to be served")
        applied = time.monotonic()
        time.sleep(ARGS.after_seconds)
        end = time.monotonic()
    finally:
        polling.set()
        poller.join(10)
        load.stop()
    after = rows()
    lost = {k: len(before[k] - after[k]) for k in before}
    problems = verify_chain(p.org)
    outage_polls = [(s, ra, code) for t, s, ra, code in polls if down <= t < restarted]
    return case_result(
        load, start, fault, end,
        recovery_s=round(api_back - restarted, 3),
        recovery_means="Postgres started → the API answers 200 again",
        data_lost=sum(lost.values()) + len(problems),
        api={
            "during_outage": {"requests": len(outage_polls),
                              "answers": {f"{s} Retry-After={ra} code={code}": n for (s, ra, code), n in
                                          _count(outage_polls).items()}},
            "change_during_outage": {"status": refused[0], "retry_after": refused[2].get("Retry-After"),
                                     "detail": refused[1].get("detail"), "code": refused[1].get("code"),
                                     "left_a_row": Site.objects.filter(name="case-d-refused").exists()},
            "change_after_restart": {"status": accepted[0], "served_after_s": round(applied - submitted, 3)},
            "rows_missing_after_restart": lost,
            "audit_chain_problems": problems,
        },
        notes=[f"Postgres down {restarted - fault:.1f} s; the proxy nodes never talk to it"],
    )


def _count(items) -> dict:
    counts: dict = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def lkg_disk_unwritable(p: Platform) -> dict:
    from edge import services as edge
    from edge.models import Backend
    from fleet.models import ConfigVersion, Rollout

    if os.geteuid() != 0:
        return {"skipped": "needs root to mount a tmpfs and turn it read-only"}
    e1, e2 = p.origin("e-1"), p.origin("e-2")
    site = p.site("case-e", [e1], hc_enabled=False)
    disk = p.work / "lkg-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    load = None
    try:
        node = p.add_node("disk", processes=1, folder=disk)
        wait_for(lambda: serves(node, "case-e.faults.test", "e-1"), timeout=ARGS.case_timeout, what="case-e served")
        served_before = node.served_version()
        load = p.load("lkg_disk_unwritable", [node.http_port], "case-e.faults.test")
        start = time.monotonic()
        time.sleep(ARGS.baseline_seconds)
        fault = time.monotonic()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        edge.backend_update(actor=p.actor, org=p.org, backend=Backend.objects.get(site=site), port=e2.port)
        newest = wait_for(lambda: (lambda v: v.number if v and v.number > served_before else None)(
            ConfigVersion.objects.order_by("-number").first()), timeout=ARGS.case_timeout, what="the publish")
        report = wait_for(lambda: Rollout.objects.filter(worker__name="disk", version=newest).first(),
                          timeout=ARGS.case_timeout, what="the node's report")
        reported = time.monotonic()
        time.sleep(ARGS.outage_seconds)
        restored = time.monotonic()
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        try:
            changed = wait_for(lambda: load.first(lambda r: r.ok and r.tag == "e-2", restored),
                               timeout=ARGS.recovery_timeout, what="the change to be served once the disk is writable")
            recovery = round(changed.t - restored, 3)
        except AssertionError:
            changed, recovery = None, None
        time.sleep(ARGS.after_seconds)
        end = time.monotonic()
    finally:
        if load is not None:
            load.stop()
        if "disk" in p.nodes:
            p.nodes.pop("disk").stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
    during = load.requests(fault, restored)
    return case_result(
        load, start, fault, end,
        recovery_s=recovery,
        recovery_means="disk writable again → the change it could not store is served"
        + ("" if changed else f" (not within {ARGS.recovery_timeout:.0f} s)"),
        data_lost=0 if changed else 1,  # the change made while the disk was read-only
        report={"outcome": report.outcome, "reason": report.reason, "after_s": round(reported - fault, 3)},
        notes=[f"while read-only: {sum(1 for r in during if r.ok and r.tag == 'e-1')} of {len(during)} requests "
               f"served by the old snapshot (v{served_before}), the node reported v{newest} {report.outcome}"],
    )


# --- the run ----------------------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    lines = ["| case | client requests | client errors | error window | recovery | data lost |", "|---|---|---|---|---|---|"]
    for r in results:
        if "skipped" in r or "failed" in r:
            lines.append(f"| {r['case']} | — | — | — | {r.get('skipped') or 'FAILED: ' + r['failed']} | — |")
            continue
        recovery = "not recovered" if r["recovery_s"] is None else f"{r['recovery_s']:.2f} s ({r['recovery_means']})"
        lost = "n/a" if r["data_lost"] is None else str(r["data_lost"])
        lines.append(f"| {r['case']} | {r['client_requests']:,} | {r['client_errors']:,} | {r['error_window_s']:.2f} s "
                     f"| {recovery} | {lost} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    ap.add_argument("--baseline-seconds", type=float, default=3.0, help="steady load before each fault")
    ap.add_argument("--outage-seconds", type=float, default=5.0, help="how long a stopped part stays stopped")
    ap.add_argument("--after-seconds", type=float, default=3.0, help="load kept up after recovery")
    ap.add_argument("--case-timeout", type=float, default=120.0, help="the most any wait in a case may take")
    ap.add_argument("--recovery-timeout", type=float, default=30.0, help="how long to wait for the LKG disk case to recover")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rate", type=float, default=25.0, help="requests per second per client")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "faults.json"))
    args = ap.parse_args()
    global ARGS
    ARGS = args
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := set(chosen) - set(CASES):
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="portico-faults-"))
    p = Platform(work, clients=args.clients, rate=args.rate)
    results = []
    try:
        p.start(nodes={"main": 2, "spare": 1})
        for name in chosen:
            print(f"--- {name}", flush=True)
            started = time.monotonic()
            try:
                result = {"case": name, **globals()[name](p)}
            except Exception as exc:  # a failed case is a result too; the next one still runs
                traceback.print_exc()
                result = {"case": name, "failed": f"{type(exc).__name__}: {exc}"}
            result["case_seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps({k: v for k, v in result.items() if k != "per_second"}, indent=2), flush=True)
            results.append(result)
    finally:
        p.stop()
    doc = {
        **run_facts(load_before),
        "settings": {k: getattr(args, k) for k in ("baseline_seconds", "outage_seconds", "after_seconds", "clients", "rate")},
        "cases": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.out}; logs in {work}")
    if not any("failed" in r for r in results):
        shutil.rmtree(work, ignore_errors=True)  # kept when a case failed: its logs say why


if __name__ == "__main__":
    main()
