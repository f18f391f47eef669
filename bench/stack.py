"""A whole platform on this machine, for the fault and soak benchmarks: a Postgres server and a
redis-server of the run's own (so stopping them hurts nobody), the control plane (a Celery worker
with beat, the web app under gunicorn), worker nodes (proxy processes + agent), and origins as
processes of their own (``bench/origin.py``) that can be killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from bench.loadgen import Load
from tests.e2e.processes import PY, ROOT, Node, PrivatePostgres, PrivateRedis, free_port, spawn, stop, wait_for


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Origin:
    """An origin server in a process of its own (``bench/origin.py``), killable and restartable."""

    def __init__(self, name: str, folder: Path, **options: str):
        self.name, self.folder, self.port = name, folder, free_port()
        self.options = [arg for k, v in options.items() for arg in (f"--{k.replace('_', '-')}", str(v))]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Origin:
        self.proc = spawn([PY, "-m", "bench.origin", "--port", str(self.port), "--name", self.name, *self.options],
                          env=os.environ.copy(), log=self.folder / f"origin-{self.name}.log")
        wait_for(lambda: port_open(self.port), what=f"origin {self.name}")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL)
            self.proc = None

    def spec(self) -> dict:
        return {"address": "127.0.0.1", "port": self.port}


class Platform:
    """The control plane of this run and its nodes; cases add sites, origins and faults to it."""

    def __init__(self, work: Path, *, clients: int = 8, rate: float = 25.0):
        self.work, self.clients, self.rate = work, clients, rate
        self.pg = PrivatePostgres()
        self.redis = PrivateRedis(work)
        self.procs: dict[str, subprocess.Popen] = {}
        self.origins: list[Origin] = []
        self.nodes: dict[str, Node] = {}

    # --- setup ---------------------------------------------------------------------------------

    def start(self, nodes: dict[str, int]) -> None:
        """Everything, then the named nodes with that many proxy processes each."""
        self.pg.start()
        self.redis.start()
        os.environ.update(DATABASE_URL=self.pg.url, CELERY_BROKER_URL=self.redis.url,
                          PORTICO_VAR_DIR=str(self.work / "var"), PYTHONUNBUFFERED="1")
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from tenancy import services as tenancy
        from tenancy.access import Actor
        from tenancy.models import User

        call_command("migrate", verbosity=0)
        user = User.objects.create_user(email="ops@faults.test", password="a-long-password-1")
        self.org = tenancy.organization_create(actor=Actor.for_user(user), name="Faults")
        _, self.token = tenancy.token_create(actor=Actor.for_user(user), org=self.org, name="faults", scope="write")
        self.actor = Actor.for_user(user)
        self.env = dict(os.environ, PORTICO_FLEET_KEY=settings.FLEET_KEY, PORTICO_SECRET_KEY=settings.SECRET_KEY,
                        PORTICO_DATA_KEYS=",".join(settings.DATA_KEYS))
        celery_log = self.work / "celery.log"
        # -B: beat's periodic publish re-drives a change whose publish could not be enqueued
        self.procs["celery"] = spawn(
            [PY, "-m", "celery", "-A", "config", "worker", "-B", "-P", "threads", "-c", "4", "-l", "info",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=self.env, log=celery_log, cwd=ROOT / "platform")
        wait_for(lambda: b"ready" in celery_log.read_bytes(), timeout=60, what="the Celery worker")
        self.web_port = free_port()
        self.procs["web"] = spawn([PY, "-m", "gunicorn", "--chdir", "platform", "config.wsgi", "--bind",
                                   f"127.0.0.1:{self.web_port}", "--workers", "1", "--threads", "4"],
                                  env=self.env, log=self.work / "web.log")
        wait_for(lambda: self.api("GET", "/healthz")[0] == 200, timeout=60, what="the web app")
        for name, processes in nodes.items():
            self.add_node(name, processes=processes)

    def add_node(self, name: str, *, processes: int, folder: Path | None = None) -> Node:
        folder = folder or self.work / name
        folder.mkdir(exist_ok=True)
        node = Node.define(name, folder, self.env, broker=self.redis.url, processes=processes,
                           log_dir=self.work / f"{name}-logs", proxy_options=("--log-level", "warning"))
        node.start_proxy()
        node.start_agent()
        from fleet.models import Worker

        wait_for(lambda: Worker.objects.filter(name=name).exists(), timeout=60, what=f"node {name} to say hello")
        self.nodes[name] = node
        return node

    def origin(self, name: str, **options: str) -> Origin:
        o = Origin(name, self.work, **options).start()
        self.origins.append(o)
        return o

    def site(self, name: str, origins: list[Origin], **fields):
        from edge import services as edge

        return edge.site_create(actor=self.actor, org=self.org, name=name, hostnames=[f"{name}.faults.test"],
                                backends=[o.spec() for o in origins], **fields)

    def load(self, name: str, ports: list[int], host: str, **options) -> Load:
        return Load(self.work / f"{name}.load", ports, host, clients=self.clients, keepalive=self.clients // 2,
                    rate=self.rate, **options).start()

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                doc = json.loads(raw or b"{}")
            except ValueError:
                doc = {"raw": raw[:200].decode(errors="replace")}
            return err.code, doc, dict(err.headers)
        except OSError as exc:
            return 0, {"error": repr(exc)}, {}

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for o in self.origins:
            o.kill()
        for proc in self.procs.values():
            stop(proc)
        self.redis.stop()
        self.pg.remove()


def serves(node: Node, host: str, tag: str) -> bool:
    try:
        conn = socket.create_connection(("127.0.0.1", node.http_port), timeout=2)
    except OSError:
        return False
    with conn:
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = conn.recv(4096).decode("latin-1").lower()
    return head.startswith("http/1.1 200") and f"x-backend: {tag}".lower() in head
