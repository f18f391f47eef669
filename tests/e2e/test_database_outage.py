"""Postgres stops: the API answers 503 with a clear message, nothing is lost, and it recovers.

Runs a Postgres server of the test's own (initdb in a temporary folder), so stopping it hurts no
other test, and the real web app (gunicorn) against it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from .processes import PG_BIN, PY, ROOT, PrivatePostgres, free_port, spawn, stop, wait_for

pytestmark = pytest.mark.e2e

def api(port: int, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.skipif(PG_BIN is None or shutil.which("runuser") is None, reason="needs Debian's postgresql server binaries")
def test_api_answers_503_while_postgres_is_down_and_loses_nothing(tmp_path):
    pg = PrivatePostgres()
    pg.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(DATABASE_URL=pg.url, PORTICO_VAR_DIR=str(tmp_path / "var"), CELERY_BROKER_URL="portico-fs://",
               PORTICO_FLEET_KEY="outage-test-fleet-key-0123456789")
    web = None
    try:
        subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
        out = subprocess.run(
            [PY, "manage.py", "shell", "-c",
             "from tenancy.models import *; from tenancy.access import Actor; from tenancy import services as t\n"
             "u = User.objects.create_user(email='ops@acme.test', password='x-long-password-1')\n"
             "org = t.organization_create(actor=Actor.for_user(u), name='Acme')\n"
             "_, raw = t.token_create(actor=Actor.for_user(u), org=org, name='ops', scope='write')\n"
             "print(raw)"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120)
        token = out.stdout.strip().splitlines()[-1]
        port = free_port()
        web = spawn([PY, "-m", "gunicorn", "--chdir", "platform", "config.wsgi", "--bind", f"127.0.0.1:{port}",
                     "--workers", "1", "--threads", "2"], env=env, log=tmp_path / "web.log")
        wait_for(lambda: api(port, "/healthz", token)[0] == 200 if _up(port) else False, timeout=30, what="the web app")

        status, body = api(port, "/api/v1/orgs/acme/sites/", token,
                           {"name": "shop", "hostnames": ["shop.acme.test"], "backends": [{"address": "10.0.0.5", "port": 80}]})
        assert status == 201, body

        pg.stop()
        status, body = api(port, "/api/v1/orgs/acme/sites/", token)
        assert status == 503
        assert body["code"] == "database_unavailable" and "not applied" in body["detail"]
        assert api(port, "/healthz", token)[0] == 503

        pg.start()
        status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(api(port, "/api/v1/orgs/acme/sites/", token)),
                                timeout=30, what="the API to recover")
        assert [s["name"] for s in body["results"]] == ["shop"]
    finally:
        if web is not None:
            stop(web)
        pg.remove()


def _up(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
