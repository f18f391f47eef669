"""config/settings.py: the environment helpers every setting is read with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from config.settings import env_bool, env_int, env_list, env_secret
from django.core.exceptions import ImproperlyConfigured

VAR = "PORTICO_TEST_SETTING"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    monkeypatch.delenv(f"{VAR}_FILE", raising=False)


@pytest.mark.parametrize("text", ["1", "true", "True", "YES", "on"])
def test_env_bool_reads_true(text, monkeypatch):
    monkeypatch.setenv(VAR, text)
    assert env_bool(VAR, False) is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "no", "off", ""])
def test_env_bool_reads_false(text, monkeypatch):
    monkeypatch.setenv(VAR, text)
    assert env_bool(VAR, True) is False


def test_env_bool_uses_the_default_when_unset():
    assert env_bool(VAR, True) is True
    assert env_bool(VAR) is False


def test_env_bool_rejects_anything_else_naming_the_variable(monkeypatch):
    monkeypatch.setenv(VAR, "maybe")
    with pytest.raises(ImproperlyConfigured, match=f"{VAR}='maybe' is not a boolean"):
        env_bool(VAR)


def test_env_int_reads_an_integer_or_the_default(monkeypatch):
    assert env_int(VAR, 365) == 365
    monkeypatch.setenv(VAR, "30")
    assert env_int(VAR, 365) == 30
    monkeypatch.setenv(VAR, "-5")
    assert env_int(VAR, 365) == -5


@pytest.mark.parametrize("text", ["thirty", "3.5", ""])
def test_env_int_rejects_a_non_integer_naming_the_variable(text, monkeypatch):
    monkeypatch.setenv(VAR, text)
    with pytest.raises(ImproperlyConfigured, match=f"{VAR}=.* is not an integer"):
        env_int(VAR, 1)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv(VAR, " a.example , b.example,,")
    assert env_list(VAR) == ["a.example", "b.example"]
    monkeypatch.delenv(VAR)
    assert env_list(VAR, "x,y") == ["x", "y"]
    assert env_list(VAR) == []


def test_env_secret_reads_the_variable(monkeypatch):
    monkeypatch.setenv(VAR, "s3cret")
    assert env_secret(VAR) == "s3cret"


def test_env_secret_reads_a_file_named_by_VAR_FILE_and_prefers_it(monkeypatch, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file-secret\n")  # as Docker and Kubernetes mount them
    monkeypatch.setenv(f"{VAR}_FILE", str(secret_file))
    monkeypatch.setenv(VAR, "from-env")
    assert env_secret(VAR) == "from-file-secret"


def test_env_secret_falls_back_to_the_default(monkeypatch):
    assert env_secret(VAR, "dev-default") == "dev-default"
    monkeypatch.setenv(VAR, "")
    assert env_secret(VAR, "dev-default") == "dev-default"


def test_env_secret_without_a_default_is_required():
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} \\(or {VAR}_FILE\\) must be set"):
        env_secret(VAR)


def _check_deploy(tmp_path, **extra) -> subprocess.CompletedProcess:
    # the test run's own variables (DJANGO_ALLOW_ASYNC_UNSAFE for browser tests) are not a deployment's
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTICO_", "DJANGO_"))}
    env.update(
        PORTICO_PRODUCTION="true",
        PORTICO_SECRET_KEY="a-long-production-secret-key-" + "x" * 40,
        PORTICO_FLEET_KEY="a-production-fleet-key-0123456789",
        PORTICO_DATA_KEY="a-production-data-key-0123456789",
        PORTICO_VAR_DIR=str(tmp_path),
    )
    env.update(extra)
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=root, env=env, capture_output=True, text=True)


def test_production_mode_passes_check_deploy(tmp_path):
    result = _check_deploy(tmp_path, PORTICO_SMTP_HOST="smtp.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_mode_refuses_to_start_without_its_secrets(tmp_path):
    result = _check_deploy(tmp_path, PORTICO_SMTP_HOST="smtp.example.com", PORTICO_FLEET_KEY="")
    assert result.returncode != 0
    assert "PORTICO_FLEET_KEY" in result.stderr
