"""Real processes for end-to-end tests: a private Redis broker, a Celery worker of the control
plane, and worker nodes (proxy processes + agent) on 127.0.0.1, all on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

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

    def __init__(self, folder: Path):
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = spawn(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
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


@pytest.fixture
def broker(tmp_path, monkeypatch) -> Iterator[PrivateRedis]:
    """A private broker; the test process's Celery app is pointed at it for the test."""
    from config.celery import app

    folder = tmp_path / "redis"
    folder.mkdir()
    redis = PrivateRedis(folder)
    redis.start()
    saved = app.conf.broker_url, app.conf.broker_transport_options
    # Celery reads CELERY_BROKER_URL from the environment before any setting.
    monkeypatch.setenv("CELERY_BROKER_URL", redis.url)
    _point_celery_at(app, redis.url, {})
    yield redis
    monkeypatch.undo()
    _point_celery_at(app, *saved)
    redis.stop()


def _point_celery_at(app, url: str, options: dict) -> None:
    # Celery caches its connection and producer pools on first use: drop both.
    # With Django's CELERY_ namespace the prefixed keys win over broker_url: set both.
    app.conf.update(broker_url=url, CELERY_BROKER_URL=url, broker_transport_options=options,
                    CELERY_BROKER_TRANSPORT_OPTIONS=options)
    app.close()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def platform_env(transactional_db, broker) -> dict[str, str]:
    """Environment for processes of the control plane and the fleet, sharing the test database."""
    db = connection.settings_dict
    env = os.environ.copy()
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        CELERY_BROKER_URL=broker.url,
        PORTICO_FLEET_KEY=settings.FLEET_KEY,
        PORTICO_SECRET_KEY=settings.SECRET_KEY,
        PORTICO_DATA_KEYS=",".join(settings.DATA_KEYS),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def control_celery(platform_env, tmp_path) -> Iterator[subprocess.Popen]:
    """A real Celery worker of the control plane: runs publishes and takes the agents' reports."""
    log = tmp_path / "celery.log"
    proc = spawn(
        [PY, "-m", "celery", "-A", "config", "worker", "-P", "threads", "-c", "4", "-l", "info",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=platform_env,
        log=log,
        cwd=ROOT / "platform",
    )
    wait_for(lambda: b"ready" in log.read_bytes(), timeout=30, what="the Celery worker")
    yield proc
    stop(proc)
    connection.close()


@dataclass
class Node:
    """One worker node: an agent and (optionally) its proxy processes, sharing a snapshot file."""

    name: str
    folder: Path
    env: dict
    agent_args: list[str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def snapshot_path(self) -> Path:
        return self.folder / "snapshot.json"

    def start_agent(self) -> None:
        self.procs["agent"] = spawn(self.agent_args, env=self.env, log=self.folder / "agent.log")

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if "agent" in self.procs:
            stop(self.procs.pop("agent"), sig)

    def served_version(self) -> int:
        from proxyworker import snapshot

        try:
            return snapshot.load_file(str(self.snapshot_path), snapshot.FleetKey(settings.FLEET_KEY)).version
        except (FileNotFoundError, snapshot.SnapshotError):
            return 0

    def log(self) -> str:
        return (self.folder / "agent.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        self.procs.clear()


@pytest.fixture
def node_factory(platform_env, control_celery, tmp_path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(name: str, *, fleet_key: str | None = None) -> Node:
        folder = tmp_path / name
        folder.mkdir()
        env = dict(platform_env)
        if fleet_key is not None:
            env["PORTICO_FLEET_KEY"] = fleet_key
        args = [PY, "-m", "proxyworker.agent", "--snapshot", str(folder / "snapshot.json"), "--name", name,
                "--broker", platform_env["CELERY_BROKER_URL"], "--no-proxy"]
        node = Node(name=name, folder=folder, env=env, agent_args=args)
        node.start_agent()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
