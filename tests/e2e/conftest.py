"""Real processes for end-to-end tests: a private Redis broker, a Celery worker of the control
plane, and worker nodes (proxy processes + agent) on 127.0.0.1, all on free ports."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from kombu import pools as kombu_pools

from .processes import PY, ROOT, Node, PrivateRedis, free_port, spawn, stop, wait_for  # noqa: F401


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
    # Not app.close(): it also unregisters the app, and shared tasks imported later would not find it.
    # kombu keeps connection and producer pools in a process-wide registry keyed by connection:
    # reset it too, or a later test gets a pool this one closed ("Acquire on closed pool").
    app._pool = None
    app.amqp._producer_pool = None
    kombu_pools.reset()


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


@pytest.fixture
def node_factory(platform_env, control_celery, tmp_path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(name: str, *, fleet_key: str | None = None, proxy: bool = False, folder: Path | None = None) -> Node:
        folder = folder or tmp_path / name
        folder.mkdir(exist_ok=True)
        env = dict(platform_env)
        if fleet_key is not None:
            env["PORTICO_FLEET_KEY"] = fleet_key
        node = Node.define(name, folder, env, broker=platform_env["CELERY_BROKER_URL"], proxy=proxy,
                           log_dir=tmp_path / f"{name}-logs")  # beside, not in, the folder (maybe a tiny disk)
        if proxy:
            node.start_proxy()
        node.start_agent()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
