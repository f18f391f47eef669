"""Steady client load that records what every client saw, for the fault and soak benchmarks.

Runs as a process of its own (``python -m bench.loadgen ...``), so that its threads do not share a
GIL with the benchmark driving the faults. Each client thread sends GETs to one target at a paced
rate, on one keep-alive connection (re-opened after an error) or on a fresh connection per request,
and every request becomes one line of ``--out``::

    <start, CLOCK_MONOTONIC seconds> <latency ms> <target index> <status code or error class> <tag>

where the tag is the value of ``--tag-header`` in the answer (``X-Backend``: which origin served).
CLOCK_MONOTONIC is system-wide, so the driver compares these times with its own ``time.monotonic()``.
The driver side is ``Load``: start, stop, and summaries of any time window.
"""

from __future__ import annotations

import argparse
import http.client
import queue
import signal
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def _client(target: tuple[str, int], index: int, keepalive: bool, host: str, path: str, paths: int, rate: float,
            timeout: float, tag_header: str, out: queue.SimpleQueue, done: threading.Event) -> None:
    conn: http.client.HTTPConnection | None = None
    sent = 0
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    while not done.is_set():
        if interval:
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()  # fell behind (the target is slow): do not burst to catch up
        started = time.monotonic()
        tag = "-"
        try:
            if conn is None:
                conn = http.client.HTTPConnection(*target, timeout=timeout)
            sent += 1
            target_path = f"{path}{(sent * 7919 + index) % paths}" if paths > 1 else path
            conn.request("GET", target_path, headers={"Host": host, "Accept-Encoding": "gzip, br, zstd"})
            resp = conn.getresponse()
            resp.read()
            result = str(resp.status)
            tag = (resp.headers.get(tag_header) or "-").replace(" ", "_")
            if not keepalive or resp.will_close:
                conn.close()
                conn = None
        except Exception as exc:  # noqa: BLE001 - whatever a client sees is what is recorded
            result = type(exc).__name__
            if conn is not None:
                conn.close()
                conn = None
        out.put(f"{started:.6f} {1000 * (time.monotonic() - started):.2f} {index} {result} {tag}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen")
    ap.add_argument("--target", action="append", required=True, help="HOST:PORT; repeat for several, clients alternate")
    ap.add_argument("--host", required=True, help="Host header")
    ap.add_argument("--path", default="/")
    ap.add_argument("--paths", type=int, default=1, help="N > 1: request PATH0 .. PATH<N-1>, spread over them")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--keepalive", type=int, default=4, help="how many of the clients keep their connection open")
    ap.add_argument("--rate", type=float, default=25.0, help="requests per second per client; 0: as fast as possible")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--tag-header", default="X-Backend")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in args.target]

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    lines: queue.SimpleQueue = queue.SimpleQueue()
    threads = [
        threading.Thread(target=_client, daemon=True, args=(
            targets[i % len(targets)], i % len(targets), i < args.keepalive, args.host, args.path, args.paths, args.rate,
            args.timeout, args.tag_header, lines, done))
        for i in range(args.clients)
    ]
    for t in threads:
        t.start()
    with open(args.out, "a") as fh:
        while not done.is_set() or any(t.is_alive() for t in threads) or not lines.empty():
            batch = []
            try:
                batch.append(lines.get(timeout=0.2))
                while True:
                    batch.append(lines.get_nowait())
            except queue.Empty:
                pass
            fh.writelines(batch)
            fh.flush()
            if done.is_set():
                for t in threads:
                    t.join(0.05)


# --- the driver's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    t: float  # start, monotonic seconds
    latency_ms: float
    target: int
    result: str  # status code, or the exception's class name
    tag: str

    @property
    def ok(self) -> bool:
        return self.result.isdigit() and int(self.result) < 400


class Load:
    """A ``bench.loadgen`` process and what it recorded."""

    def __init__(self, out: Path, targets: list[int], host: str, *, path: str = "/", paths: int = 1, clients: int = 8,
                 keepalive: int = 4, rate: float = 25.0, timeout: float = 5.0, tag_header: str = "X-Backend"):
        self.out = out
        self._offset = 0
        self.args = ["--host", host, "--path", path, "--paths", str(paths), "--clients", str(clients), "--keepalive", str(keepalive),
                     "--rate", str(rate), "--timeout", str(timeout), "--tag-header", tag_header, "--out", str(out)]
        for port in targets:
            self.args += ["--target", f"127.0.0.1:{port}"]
        self.proc = None

    def start(self) -> Load:
        from tests.e2e.processes import PY, spawn, wait_for

        self.out.unlink(missing_ok=True)
        self.out.touch()
        self.proc = spawn([PY, "-m", "bench.loadgen", *self.args], env=_env(), log=self.out.with_suffix(".log"))
        wait_for(lambda: any(r.ok for r in self.requests()), timeout=30, what="the load's first answer")
        return self

    def stop(self) -> None:
        from tests.e2e.processes import stop

        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def requests(self, start: float = 0.0, end: float = float("inf")) -> list[Request]:
        with open(self.out) as fh:
            return [r for r in _parse(fh.read()) if start <= r.t < end]

    def new_requests(self) -> list[Request]:
        """The requests recorded since the last call (whole lines only)."""
        with open(self.out) as fh:
            fh.seek(self._offset)
            text = fh.read()
        whole = text[: text.rfind("\n") + 1]
        self._offset += len(whole.encode())
        return _parse(whole)

    def first(self, predicate, after: float) -> Request | None:
        """The first request started after ``after`` that satisfies ``predicate``."""
        return next((r for r in sorted(self.requests(after), key=lambda r: r.t) if predicate(r)), None)


def _parse(text: str) -> list[Request]:
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5:  # else a line being written
            found.append(Request(float(parts[0]), float(parts[1]), int(parts[2]), parts[3], parts[4]))
    return found


def summarize(requests: list[Request], origin: float) -> dict:
    """What clients saw in a window; times relative to ``origin`` (the fault)."""
    errors = [r for r in requests if not r.ok]
    latencies = sorted(r.latency_ms for r in requests) or [0.0]
    per_second: dict[int, Counter] = {}
    for r in requests:
        per_second.setdefault(int((r.t - origin) // 1), Counter())["ok" if r.ok else "errors"] += 1
    result = {
        "requests": len(requests),
        "errors": len(errors),
        "error_kinds": dict(Counter(r.result for r in errors)),
        "first_error_s": round(min(r.t for r in errors) - origin, 3) if errors else None,
        "last_error_s": round(max(r.t for r in errors) - origin, 3) if errors else None,
        # from the first failed request's start to the last failed request's end
        "error_window_s": round(max(r.t + r.latency_ms / 1000 for r in errors) - min(r.t for r in errors), 3) if errors else 0.0,
        "latency_ms": {"p50": round(statistics.median(latencies), 2), "p99": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
                       "max": round(latencies[-1], 2)},
        "per_second": [{"t": s, "ok": c["ok"], "errors": c["errors"]} for s, c in sorted(per_second.items())],
    }
    return result


def _env() -> dict:
    import os

    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": str(root)}


if __name__ == "__main__":
    main()
