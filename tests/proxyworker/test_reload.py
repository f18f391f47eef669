"""Snapshot swaps: between requests, under load, with the last good snapshot kept on a bad one."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import get, site, snapshot


def test_new_snapshot_is_served_without_restart(backend_factory, worker_factory):
    a, b = backend_factory("old"), backend_factory("new")
    w = worker_factory(snapshot(site("swap.test", [a])))
    pid = w.proc.pid
    assert get(w, "swap.test").backend == "old"
    assert get(w, "added.test").status == 404
    w.swap(snapshot(site("swap.test", [b]), site("added.test", [a]), version=2))
    assert get(w, "swap.test").backend == "new"
    assert get(w, "added.test").backend == "old"
    assert w.proc.pid == pid and w.proc.poll() is None
    status = w.status()
    assert status["state"] == "applied" and status["version"] == 2 and status["rejected"] is None


def test_open_keep_alive_connection_survives_a_swap(backend_factory, worker_factory):
    a, b = backend_factory("before"), backend_factory("after")
    w = worker_factory(snapshot(site("ka.test", [a])))
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        f = s.makefile("rb")

        def ask() -> str:
            s.sendall(b"GET / HTTP/1.1\r\nHost: ka.test\r\n\r\n")
            assert f.readline().startswith(b"HTTP/1.1 200")
            headers = {}
            while (line := f.readline()) != b"\r\n":
                k, _, v = line.decode().partition(":")
                headers[k.lower()] = v.strip()
            f.read(int(headers["content-length"]))
            return headers["x-backend"]

        assert ask() == "before"
        w.swap(snapshot(site("ka.test", [b]), version=2))
        assert ask() == "after"  # same connection, next request, new tables


def test_bad_snapshot_is_rejected_while_the_old_one_serves(backend_factory, worker_factory):
    a = backend_factory("good")
    w = worker_factory(snapshot(site("keep.test", [a])))
    bad_cases = [
        b'{"version": 2, "sites": [',  # truncated JSON
        b'{"version": 3, "sites": [{"id": "x"}]}',  # schema violation
        snap.encode(snapshot(site("keep.test", [a]), site("keep.test", [a], id="dup"), version=4)),  # same host twice
        snap.encode(snapshot(site("keep.test", [a]), version=5, certificates=[
            snap.Certificate(id="c", hostnames=["keep.test"], chain_pem="-----BEGIN CERTIFICATE-----\nnope\n",
                             key_pem="nope")])),  # unloadable certificate
    ]
    for data in bad_cases:
        w.swap(data, wait=False)
        status = w.wait_rejection()
        assert status["version"] == 1
        assert status["rejected"]["reason"]
        assert get(w, "keep.test").backend == "good"
        w.swap(snapshot(site("keep.test", [a]), version=1))  # back to a good file before the next case
    assert "rejected" in open(w.log_path).read()


def test_rejection_report_names_the_rejected_version(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("rep.test", [a])))
    w.swap(snap.encode(snapshot(site("rep.test", [a]), site("rep.test", [a], id="s2"), version=9)), wait=False)
    status = w.wait_rejection()
    assert status["rejected"]["version"] == 9
    assert "rep.test" in status["rejected"]["reason"]


def test_worker_starts_on_a_bad_snapshot_and_serves_the_first_good_one(backend_factory, worker_factory):
    a = backend_factory("late")
    w = worker_factory(b"not json", start=False)
    w.start()
    assert w.status()["state"] == "rejected"
    assert get(w, "late.test").status == 404
    w.swap(snapshot(site("late.test", [a]), version=3))
    assert get(w, "late.test").backend == "late"


def test_snapshot_swap_under_load_gives_zero_errors(backend_factory, worker_factory):
    blue, green = backend_factory("blue"), backend_factory("green")
    w = worker_factory(snapshot(site("bg.test", [blue])))
    errors: list[str] = []
    seen = Counter()
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            try:
                r = get(w, "bg.test", timeout=5)
                seen[r.backend] += 1
                if r.status != 200:
                    errors.append(f"status {r.status}")
            except Exception as exc:  # noqa: BLE001 - any client-visible failure counts
                errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for version in range(2, 8):  # six swaps, alternating pools, about 0.3 s apart
        time.sleep(0.3)
        w.swap(snapshot(site("bg.test", [green if version % 2 == 0 else blue]), version=version))
    time.sleep(0.3)
    done.set()
    for t in threads:
        t.join()
    assert errors == []
    assert seen["blue"] > 20 and seen["green"] > 20


def test_health_state_survives_a_swap(backend_factory, worker_factory):
    good, bad = backend_factory("hs-good"), backend_factory("hs-bad", health_status=500)
    hc = snap.HealthCheck(path="/health", interval=0.2, timeout=1, rise=2, fall=2)
    w = worker_factory(snapshot(site("hs.test", [good, bad], health=hc)))
    deadline = time.monotonic() + 5
    while bad.health_hits < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    w.swap(snapshot(site("hs.test", [good, bad], health=hc), site("other.test", [good]), version=2))
    assert {get(w, "hs.test").backend for _ in range(6)} == {"hs-good"}


def test_several_processes_share_the_ports(backend_factory, worker_factory):
    a = backend_factory("mp")
    w = worker_factory(snapshot(site("mp.test", [a])), processes=2)
    time.sleep(0.5)  # both children listening
    children = open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read().split()
    assert len(children) == 2
    assert all(get(w, "mp.test").backend == "mp" for _ in range(20))
    w.swap(snapshot(site("mp.test", [a]), site("mp2.test", [a]), version=2))
    time.sleep(0.6)  # the other process polls the file too
    assert all(get(w, "mp2.test").status == 200 for _ in range(10))


def test_a_renamed_in_snapshot_is_picked_up_without_waiting_for_the_poll(backend_factory, worker_factory):
    # Polling every 30 s: only the inotify wake-up can make the swap this fast.
    a, b = backend_factory("before"), backend_factory("after")
    w = worker_factory(snapshot(site("wake.test", [a])), poll_interval=30)
    started = time.monotonic()
    w.swap(snapshot(site("wake.test", [b]), version=2))
    assert time.monotonic() - started < 5
    assert get(w, "wake.test").backend == "after"


def _served_by(port: int, core: int, count: int = 8) -> set[int]:
    """Open ``count`` connections from a client pinned to ``core``; the pids of the processes that
    hold the server side of them."""
    client = (
        "import socket, time\n"
        f"conns = [socket.create_connection(('127.0.0.1', {port})) for _ in range({count})]\n"
        "print('open', flush=True)\n"
        "time.sleep(3)\n"
    )
    proc = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", client], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        deadline = time.monotonic() + 10
        while True:  # until every connection is accepted (held by a process)
            ss = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                                capture_output=True, text=True, check=True).stdout
            pids = re.findall(r"pid=(\d+)", ss)
            if len(pids) >= count or time.monotonic() > deadline:
                return {int(pid) for pid in pids}
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not shutil.which("ss"), reason="needs 2 cores and ss")
def test_with_cpu_affinity_each_process_has_its_core_and_takes_the_connections_that_arrive_there(
    backend_factory, worker_factory
):
    a = backend_factory("pin")
    w = worker_factory(snapshot(site("pin.test", [a])), processes=2, cpu_affinity=True)
    time.sleep(0.5)  # both children listening
    children = [int(pid) for pid in open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read().split()]
    cores = sorted(os.sched_getaffinity(0))[:2]
    core_of = {pid: os.sched_getaffinity(pid) for pid in children}
    assert sorted(core_of.values(), key=min) == [{cores[0]}, {cores[1]}]
    for core in cores:
        owner = next(pid for pid, c in core_of.items() if c == {core})
        assert _served_by(w.http_port, core) == {owner}
    assert get(w, "pin.test").backend == "pin"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not shutil.which("ss"), reason="needs 2 cores and ss")
def test_by_default_connections_that_all_arrive_on_one_core_reach_every_process(backend_factory, worker_factory):
    """A node whose packets all land on one core (one NIC queue, no RPS) still uses every process:
    the kernel spreads connections by hash (all 16 on one process: odds of 1 in 32,768)."""
    a = backend_factory("free")
    w = worker_factory(snapshot(site("free.test", [a])), processes=2)
    time.sleep(0.5)
    children = [int(pid) for pid in open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read().split()]
    assert all(os.sched_getaffinity(pid) == os.sched_getaffinity(0) for pid in children)
    assert _served_by(w.http_port, sorted(os.sched_getaffinity(0))[0], count=16) == set(children)
