"""compose.yaml describes a deployment that can run: it parses, every service's command exists
in the image (this repository plus requirements.txt), and the pieces point at each other."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
REQUIREMENTS = {re.split(r"[=<>\[]", line)[0].strip().lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
# executables the image provides, and the requirement that installs each
EXECUTABLES = {"python": None, "gunicorn": "gunicorn", "celery": "celery", "honcho": "honcho"}


def test_the_stack_has_every_role():
    assert {"postgres", "redis", "migrate", "web", "celery", "beat", "proxy-1", "proxy-2", "pebble"} <= set(SERVICES)
    assert SERVICES["pebble"]["profiles"] == ["staging"]


def test_every_command_exists_in_the_image():
    for name, service in SERVICES.items():
        if "build" not in service:
            continue  # postgres, redis and pebble come from their own images
        command = service.get("command")
        assert command, f"{name} has no command"
        exe = command[0]
        assert exe in EXECUTABLES, f"{name}: {exe} is not provided by the image"
        if EXECUTABLES[exe]:
            assert EXECUTABLES[exe] in REQUIREMENTS, f"{name}: {exe} is not in requirements.txt"
        if exe == "python" and command[1] == "manage.py":
            assert (ROOT / "manage.py").exists()
        if "config.wsgi" in command:
            assert (ROOT / "platform" / "config" / "wsgi.py").exists()
        if exe == "celery":
            assert service.get("working_dir") == "/app/platform" and command[1:3] == ["-A", "config"]
        if exe == "honcho":
            procfile = ROOT / command[command.index("-f") + 1]
            for line in procfile.read_text().splitlines():
                module = line.split("-m", 1)[1].split()[0]
                assert (ROOT / (module.replace(".", "/") + ".py")).exists() or (ROOT / module / "__main__.py").exists(), line


def test_services_find_each_other_and_keep_their_data():
    platform = [s for s in SERVICES.values() if "build" in s and "DATABASE_URL" in s.get("environment", {})]
    assert platform, "no service of the control plane"
    for service in platform:
        assert "@postgres:5432/" in service["environment"]["DATABASE_URL"]
        assert service["environment"]["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert service["environment"]["PORTICO_PRODUCTION"] == "true"
    for name in ("proxy-1", "proxy-2"):
        assert SERVICES[name]["environment"]["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert SERVICES[name]["volumes"], f"{name} must keep its last-known-good snapshot on a volume"
    assert {"pgdata", "redisdata"} <= set(COMPOSE["volumes"])
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in SERVICES[name], f"{name} has no health check"
    assert "/healthz" in SERVICES["web"]["healthcheck"]["test"][-1]


def test_secrets_come_from_the_environment_file_not_the_compose_file():
    text = (ROOT / "compose.yaml").read_text()
    assert "env_file: .env" in text
    for secret in ("PORTICO_SECRET_KEY", "PORTICO_FLEET_KEY", "PORTICO_DATA_KEY"):
        assert f"{secret}:" not in text, f"{secret} must not be written in compose.yaml"
