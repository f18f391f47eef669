"""The control plane's /metrics: Prometheus text, open to loopback and to the token only."""

from __future__ import annotations

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from traffic.models import Alert


def test_metrics_parse_and_count_workers_and_open_alerts(org, workers):
    Alert.objects.create(organization=org, kind=Alert.Kind.WORKER_OFFLINE, subject="w9", summary="gone")
    resp = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.content.decode())}
    assert families["portico_workers_online"].samples[0].value == 3
    assert {s.labels["kind"]: s.value for s in families["portico_alerts_open"].samples} == {"worker_offline": 1}
    assert {s.labels["worker"] for s in families["portico_worker_config_version"].samples} == {"w1", "w2", "w3"}


def test_metrics_are_hidden_from_other_addresses_without_the_token(db, settings):
    settings.METRICS_TOKEN = "t0ken"
    outside = Client(REMOTE_ADDR="203.0.113.9")
    assert outside.get("/metrics").status_code == 404
    assert outside.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert outside.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken").status_code == 200
