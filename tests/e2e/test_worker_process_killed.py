"""One of a worker's serving processes is killed (kill -9) under load: the others keep serving,
only requests that were in flight on the killed process (or in its accept queue) fail, and the
supervisor starts a replacement that listens on the shared port again."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time

import pytest

from ..proxyworker.conftest import Backend, Worker, site, snapshot
from .processes import children_of, listening_pids, listening_sockets, sockets_of, wait_for

pytestmark = pytest.mark.e2e

HOST = "kill.test"
CLIENTS = 6


class Load:
    """CLIENTS threads sending GETs through the worker, each on a fresh connection, recording
    (start time, error) of every failure and the start time of every success."""

    def __init__(self, port: int):
        self.port = port
        self.ok: list[float] = []
        self.errors: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        while not self._done.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/", headers={"Host": HOST})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.ok.append(started)
                else:
                    self.errors.append((started, f"status {resp.status}"))
            except Exception as exc:  # noqa: BLE001 - whatever a client sees counts
                self.errors.append((started, repr(exc)))
            finally:
                conn.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        for t in self._threads:
            t.join(10)

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.ok) if start <= t < end)


@pytest.fixture
def worker(tmp_path):
    origin = Backend("origin").start()
    w = Worker(tmp_path, snapshot(site(HOST, [origin])), {"processes": 2, "log_level": "warning"})
    w.start(expect_version=1)
    serving = wait_for(lambda: (lambda c: c if len(listening_pids(w.http_port, c)) == 2 else None)(children_of(w.proc.pid)),
                       timeout=20, what="both serving processes to listen")
    yield w, serving
    w.stop()
    origin.stop()


def test_a_killed_serving_process_costs_only_its_requests_in_flight_and_is_replaced(worker):
    w, serving = worker
    victim, survivor = serving
    with Load(w.http_port) as load:
        wait_for(lambda: len(load.ok) >= 50, what="load to run")
        victims_listener = listening_sockets(w.http_port) & sockets_of(victim)
        assert victims_listener
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # Gone from the kernel's listen table, not just from the process: an exiting process's
        # file table is emptied before its sockets are closed, and until then new connections
        # may still be queued on its listener.
        wait_for(lambda: not listening_sockets(w.http_port) & victims_listener, interval=0.002,
                 what="the killed process's listening socket to close")
        gone_at = time.monotonic()
        replacement = wait_for(
            lambda: next(iter(listening_pids(w.http_port, children_of(w.proc.pid)) - {victim, survivor}), None),
            timeout=15, what="a replacement process to listen")
        listening_at = time.monotonic()
        wait_for(lambda: load.ok_between(listening_at, time.monotonic()) >= 50, what="load after the replacement")

    assert w.proc.poll() is None, "the supervisor itself must keep running"
    assert load.ok_between(killed_at, listening_at) > 0 or listening_at - killed_at < 0.05, \
        "the surviving process kept serving while the replacement started"
    # Only requests the killed process held failed: started before its socket was gone (in its
    # hands or in its accept queue); none of those that started afterwards.
    assert [e for e in load.errors if e[0] > gone_at] == []
    assert len(load.errors) <= 2 * CLIENTS, load.errors
    assert survivor in children_of(w.proc.pid) and replacement in children_of(w.proc.pid)
    assert f"worker {victim} killed by signal 9; starting a new one" in w.log()


def test_a_process_killed_again_right_after_its_restart_is_replaced_after_a_pause(worker):
    w, serving = worker
    victim, survivor = serving
    os.kill(victim, signal.SIGKILL)
    first = wait_for(lambda: next(iter(set(children_of(w.proc.pid)) - {victim, survivor}), None),
                     timeout=15, what="the first replacement")
    # Killed again within a second of its start: still replaced (a signal is not a start-up
    # failure), now after the backoff's first pause, and the node keeps serving throughout.
    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: first not in listening_pids(w.http_port, [first]), what="the killed process's socket to close")
    with Load(w.http_port) as load:
        second = wait_for(
            lambda: next(iter(listening_pids(w.http_port, children_of(w.proc.pid)) - {victim, survivor, first}), None),
            timeout=15, what="the second replacement to listen")
        replaced_after = time.monotonic() - killed_at
        wait_for(lambda: len(load.ok) >= 50, what="load")
    assert w.proc.poll() is None
    assert replaced_after >= 0.5  # RESPAWN_BACKOFF_FIRST
    assert load.errors == []  # the kill happened before this load: the survivor answered everything
    assert second in children_of(w.proc.pid)
    assert f"worker {first} killed by signal 9; starting a new one in 0.5 s" in w.log()
