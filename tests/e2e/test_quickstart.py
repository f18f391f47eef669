"""The embedded defaults boot: SQLite and the filesystem broker under a fresh var/, no server.

Mirrors `make run`: migrate, the demo account and site, a Celery worker of the control plane and a
worker node's agent, all talking through the portico-fs:// broker folder. The agent's hello, the
control plane's answer with the snapshot, and the agent's report make a real round trip; traffic
counters a proxy process spools reach the SQLite rollups the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time

import pytest

from proxyworker import snapshot, traffic

from .processes import PY, ROOT, spawn, stop, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL") and not k.startswith("PORTICO_")}
    env.update(
        PORTICO_VAR_DIR=str(tmp_path / "var"),
        PORTICO_SECRET_KEY=secrets.token_urlsafe(40),
        PORTICO_FLEET_KEY=secrets.token_urlsafe(40),
        PORTICO_DATA_KEY=secrets.token_urlsafe(40),
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict, *args: str) -> str:
    result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_embedded_defaults_boot_and_a_celery_round_trip_crosses_the_filesystem_broker(embedded_env, tmp_path):
    var = tmp_path / "var"
    manage(embedded_env, "migrate", "--no-input", "-v0")
    out = manage(embedded_env, "quickstart_demo")
    assert "Demo login: demo@portico.localhost" in out
    assert (var / "portico.sqlite3").exists()

    snap_path = tmp_path / "node" / "snapshot.json"
    snap_path.parent.mkdir()
    procs = [
        spawn([PY, "-m", "celery", "-A", "config", "worker", "-P", "threads", "-c", "2", "-l", "info",
               "--without-gossip", "--without-mingle", "--without-heartbeat"],
              env=embedded_env, log=tmp_path / "celery.log", cwd=ROOT / "platform"),
        spawn([PY, "-m", "proxyworker.agent", "--snapshot", str(snap_path), "--name", "local", "--no-proxy",
               "--broker", "portico-fs://", "--broker-folder", str(var / "broker")],
              env=embedded_env, log=tmp_path / "agent.log"),
    ]
    try:
        wait_for(snap_path.exists, timeout=60, what="the agent to receive the demo snapshot through the filesystem broker")
        served = snapshot.load_file(str(snap_path), snapshot.FleetKey(embedded_env["PORTICO_FLEET_KEY"]))
        assert [s.hostnames for s in served.sites] == [["demo.localhost"]]

        def reported() -> bool:
            out = manage(embedded_env, "shell", "-c",
                         "import json; from fleet.models import Worker; "
                         "print(json.dumps(list(Worker.objects.values('name', 'version'))))")
            return json.loads(out.strip().splitlines()[-1]) == [{"name": "local", "version": served.version}]

        wait_for(reported, timeout=60, interval=0.5, what="the agent's report to reach the SQLite database")

        # What a proxy process's metrics addon spools every few seconds: three requests to the demo site.
        site = served.sites[0]
        recorder = traffic.Recorder()
        for _ in range(3):
            recorder.count(site.id, site.organization, time.time(), 200, 0, 612, None, None, 0.002, site.pools[0].backends[0].id)
        minutes, samples = recorder.drain(time.time())
        traffic.Spool(snap_path.parent / traffic.SPOOL_FOLDER, "test.1").write(
            {"version": served.version, "minutes": minutes, "samples": samples, "backends": []})

        def counted() -> bool:
            out = manage(embedded_env, "shell", "-c",
                         "from django.db.models import Sum; from traffic.models import TrafficMinute; "
                         "print(TrafficMinute.objects.aggregate(n=Sum('requests'))['n'])")
            return out.strip().splitlines()[-1] == "3"

        wait_for(counted, timeout=60, interval=0.5, what="the spooled traffic to reach the SQLite rollups")
    finally:
        for proc in procs:
            stop(proc)
    assert "Traceback" not in (tmp_path / "celery.log").read_text()
