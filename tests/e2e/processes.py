"""Process helpers shared by the end-to-end tests and the benchmarks: free ports, waiting,
starting and stopping process groups, and a private redis-server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def spawn(args: list[str], *, env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    fh = open(log, "ab")
    # own process group: a test can kill a whole worker node (proxy children included)
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


class PrivateRedis:
    """A redis-server of the test's own, so a test may stop the broker without hurting others."""

    def __init__(self, folder: Path, *, also_bind: tuple[str, ...] = ()):
        self.port = free_port()
        self.folder = folder
        self.also_bind = also_bind  # addresses of the test's own network namespaces' bridge
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = spawn(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *self.also_bind,
             "--protected-mode", "no" if self.also_bind else "yes", "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            env=os.environ.copy(),
            log=self.folder / "redis.log",
        )
        wait_for(self._ping, what="redis to start")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
