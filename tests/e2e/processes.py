"""Process helpers shared by the end-to-end tests and the benchmarks: free ports, waiting,
starting and stopping process groups, a private redis-server and Postgres server, and what
/proc says about a process's children and listening sockets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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



@dataclass
class Node:
    """One worker node: an agent and (optionally) its proxy processes, sharing a snapshot file."""

    name: str
    folder: Path
    env: dict
    agent_args: list[str]
    proxy_args: list[str] | None = None
    log_dir: Path | None = None  # defaults to folder
    http_port: int = 0
    https_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def define(cls, name: str, folder: Path, env: dict, *, broker: str, proxy: bool = True, processes: int = 1,
               log_dir: Path | None = None, proxy_options: tuple[str, ...] = ()) -> Node:
        """A node of the platform (not started): an agent on ``broker`` and, with ``proxy``, proxy
        processes on free ports, both using ``folder/snapshot.json``."""
        snap = str(folder / "snapshot.json")
        agent = [PY, "-m", "proxyworker.agent", "--snapshot", snap, "--name", name, "--broker", broker]
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        node = cls(name=name, folder=folder, env=env, agent_args=agent if proxy else [*agent, "--no-proxy"], log_dir=log_dir)
        if proxy:
            node.http_port, node.https_port = free_port(), free_port()
            node.proxy_args = [PY, "-m", "proxyworker", "--snapshot", snap, "--http-port", str(node.http_port),
                               "--https-port", str(node.https_port), "--processes", str(processes),
                               "--listen-host", "127.0.0.1", "--log-level", "info", *proxy_options]
        return node

    @property
    def snapshot_path(self) -> Path:
        return self.folder / "snapshot.json"

    def start_agent(self) -> None:
        self.procs["agent"] = spawn(self.agent_args, env=self.env, log=(self.log_dir or self.folder) / "agent.log")

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if "agent" in self.procs:
            stop(self.procs.pop("agent"), sig)

    def start_proxy(self) -> None:
        assert self.proxy_args is not None
        self.procs["proxy"] = spawn(self.proxy_args, env=self.env, log=(self.log_dir or self.folder) / "proxy.log")
        wait_for(self._listening, timeout=20, what=f"proxy of {self.name} to listen")

    def stop_proxy(self, sig: int = signal.SIGTERM) -> None:
        if "proxy" in self.procs:
            stop(self.procs.pop("proxy"), sig)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def get(self, host: str, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
        """A plain GET through this node's proxy."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def served_version(self) -> int:
        from django.conf import settings

        from proxyworker import snapshot

        try:
            return snapshot.load_file(str(self.snapshot_path), snapshot.FleetKey(settings.FLEET_KEY)).version
        except (FileNotFoundError, snapshot.SnapshotError):
            return 0

    def log(self) -> str:
        return ((self.log_dir or self.folder) / "agent.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        self.procs.clear()


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


class PrivatePostgres:
    """A Postgres server of the caller's own (initdb in a temporary folder, Debian's server binaries,
    run as the postgres user), so stopping it hurts nobody else."""

    def __init__(self):
        # Outside pytest's tmp_path: its parents are private to root, and postgres must reach the folder.
        self.folder = Path(tempfile.mkdtemp(prefix="portico-pg-"))
        self.folder.chmod(0o755)
        self.port = free_port()
        shutil.chown(self.folder, "postgres", "postgres")
        self._pg(["initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres"], check=True)

    def _pg(self, args, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / args[0]), *args[1:]],
                              capture_output=True, text=True, **kw)

    def start(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w", "start",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"], check=True)

    def stop(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (a worker's serving processes under its supervisor)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def listening_sockets(port: int) -> set[str]:
    """Inodes of the sockets the kernel has listening on TCP ``port`` (its listen table)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def sockets_of(pid: int) -> set[str]:
    """Inodes of the sockets ``pid`` holds (empty once it is gone, or while it exits)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_pids(port: int, among: list[int]) -> set[int]:
    """Which of the processes ``among`` hold a socket listening on TCP ``port`` (from /proc)."""
    inodes = listening_sockets(port)
    return {pid for pid in among if sockets_of(pid) & inodes}


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
