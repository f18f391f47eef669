"""Three worker hosts, each in a network namespace of its own with its own address, get their
configuration through the broker; one is cut off and comes back; traffic flows through all three.

The test builds its own network: a bridge 10.231.0.1/24 in the root namespace (the control plane,
the broker and the origin live there) and three namespaces 10.231.0.11-13 joined to it by veth
pairs. Only these addresses, made here and removed at the end, are ever contacted.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from edge import services as edge
from edge.models import Backend
from fleet.models import ConfigVersion, Worker
from tenancy.access import Actor
from tenancy.models import Organization

from .processes import PY, PrivateRedis, free_port, spawn, stop, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for network namespaces"),
]

BRIDGE_IP = "10.231.0.1"
HOSTS = {1: "10.231.0.11", 2: "10.231.0.12", 3: "10.231.0.13"}


def ip(*args: str, netns: str | None = None, check: bool = True) -> None:
    cmd = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    subprocess.run(cmd, check=check, capture_output=True)


class HostNetwork:
    def __init__(self):
        tag = str(os.getpid() % 10000)
        self.bridge = f"ptbr{tag}"
        self.ns = {i: f"portico-host{i}-{tag}" for i in HOSTS}
        self.veth = {i: f"ptv{i}x{tag}" for i in HOSTS}

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, address in HOSTS.items():
            ns, veth, peer = self.ns[i], self.veth[i], f"ptp{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("addr", "add", f"{address}/24", "dev", peer, netns=ns)
            ip("link", "set", peer, "up", netns=ns)
            ip("link", "set", "lo", "up", netns=ns)

    def cut(self, i: int) -> None:
        ip("link", "set", self.veth[i], "down")

    def restore(self, i: int) -> None:
        ip("link", "set", self.veth[i], "up")

    def down(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ip("link", "del", self.bridge, check=False)


class Origin(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"origin": "root namespace", "via": self.client_address[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def network():
    net = HostNetwork()
    net.down()  # leftovers of an interrupted run
    net.up()
    yield net
    net.down()


def get(address: str, port: int, host: str) -> int | None:
    try:
        conn = http.client.HTTPConnection(address, port, timeout=3)
        conn.request("GET", "/", headers={"Host": host})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def test_three_hosts_serve_one_is_cut_off_and_catches_up(transactional_db, network, tmp_path, monkeypatch):
    from config.celery import app

    from .conftest import _point_celery_at

    redis = PrivateRedis(tmp_path, also_bind=(BRIDGE_IP,))
    redis.start()
    broker_for_hosts = f"redis://{BRIDGE_IP}:{redis.port}/0"
    saved = app.conf.broker_url, app.conf.broker_transport_options  # before the environment changes
    monkeypatch.setenv("CELERY_BROKER_URL", redis.url)
    _point_celery_at(app, redis.url, {})

    origin = ThreadingHTTPServer((BRIDGE_IP, free_port()), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()

    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ, CELERY_BROKER_URL=redis.url, PORTICO_FLEET_KEY=settings.FLEET_KEY,
               PORTICO_SECRET_KEY=settings.SECRET_KEY, PORTICO_DATA_KEYS=",".join(settings.DATA_KEYS),
               DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
               PYTHONUNBUFFERED="1")
    procs = [spawn([PY, "-m", "celery", "-A", "config", "worker", "-P", "threads", "-c", "4", "-l", "info",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"], env=env, log=tmp_path / "celery.log",
                   cwd=__import__("pathlib").Path(__file__).resolve().parents[2] / "platform")]
    port = 8080  # every host has its own address, so they all use the same port, as in production
    status_files = {}
    try:
        for i, address in HOSTS.items():
            folder = tmp_path / f"host{i}"
            folder.mkdir()
            snap = str(folder / "snapshot.json")
            status_files[i] = folder / "snapshot.json.status.json"
            host_env = dict(env, CELERY_BROKER_URL=broker_for_hosts)
            netns = ["ip", "netns", "exec", network.ns[i]]
            procs.append(spawn([*netns, PY, "-m", "proxyworker", "--snapshot", snap, "--listen-host", address,
                                "--http-port", str(port), "--https-port", "8443", "--processes", "1"],
                               env=host_env, log=folder / "proxy.log"))
            procs.append(spawn([*netns, PY, "-m", "proxyworker.agent", "--snapshot", snap, "--name", f"host{i}",
                                "--address", address, "--broker", broker_for_hosts], env=host_env, log=folder / "agent.log"))
        wait_for(lambda: Worker.objects.count() == 3, timeout=60, what="three hosts to register through the broker")

        org = Organization.objects.create(name="Acme", slug="acme")
        site = edge.site_create(actor=Actor.system("test"), org=org, name="shop", hostnames=["shop.acme.test"],
                                backends=[{"address": BRIDGE_IP, "port": origin.server_address[1]}], hc_enabled=False)
        for address in HOSTS.values():
            wait_for(lambda a=address: get(a, port, "shop.acme.test") == 200, timeout=30, what=f"{address} to serve the site")
        assert {w.address for w in Worker.objects.all()} == set(HOSTS.values())

        def served(i: int) -> int:
            try:
                return json.loads(status_files[i].read_text())["version"]
            except (OSError, ValueError, KeyError):
                return 0

        def latest() -> int:
            v = ConfigVersion.objects.order_by("-number").first()
            return v.number if v else 0

        wait_for(lambda: all(served(i) == latest() for i in HOSTS), timeout=30, what="every host to settle")
        before = latest()
        network.cut(3)
        assert get(HOSTS[3], port, "shop.acme.test") is None  # unreachable from outside now
        edge.backend_update(actor=Actor.system("test"), org=org, backend=Backend.objects.get(site=site), weight=5)
        newest = wait_for(lambda: latest() if latest() > before else 0, timeout=30, what="the change to publish")
        wait_for(lambda: served(1) == newest and served(2) == newest, timeout=30, what="hosts 1 and 2 to apply")
        assert served(3) < newest  # cut off: still serving its last-known-good

        network.restore(3)
        wait_for(lambda: served(3) == newest, timeout=60, what="host 3 to catch up after it came back")
        for address in HOSTS.values():
            assert get(address, port, "shop.acme.test") == 200
        wait_for(lambda: Worker.objects.filter(version=newest).count() == 3, timeout=30, what="all three to report")
    finally:
        for proc in procs:
            stop(proc)
        origin.shutdown()
        monkeypatch.undo()
        _point_celery_at(app, *saved)
        redis.stop()
