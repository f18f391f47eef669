"""Backend health per worker on the site page; alerts open once per incident, resolve, and are sent."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from tenancy.models import Membership, Role, User
from traffic import alerts, selectors, services
from traffic.models import Alert, AlertSettings

from .conftest import minute_of, report


@pytest.fixture(autouse=True)
def eager_celery():
    from config.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


def health(site, backend, up: bool) -> dict:
    return {"site": str(site.pk), "backend": str(backend.pk), "up": up, "processes": 2, "processes_up": 2 if up else 0}


def test_site_page_shows_on_how_many_workers_a_backend_is_up(shop, workers):
    services.ingest(worker="w1", backends=[health(shop, shop.b1, True), health(shop, shop.b2, True)])
    services.ingest(worker="w2", backends=[health(shop, shop.b1, True), health(shop, shop.b2, False)])
    services.ingest(worker="w3", backends=[health(shop, shop.b1, True), health(shop, shop.b2, False)])
    views = selectors.backend_health(shop)
    assert str(views[str(shop.b1.pk)]) == "up on 3 of 3 workers"
    assert str(views[str(shop.b2.pk)]) == "up on 1 of 3 workers"

    user = User.objects.create_user(email="v@example.com", password="x")
    Membership.objects.create(organization=shop.organization, user=user, role=Role.VIEWER)
    client = Client()
    client.force_login(user)
    page = client.get(reverse("frontend:site_live", args=[shop.organization.slug, shop.pk])).content.decode()
    assert "up on 3 of 3 workers" in page and "up on 1 of 3 workers" in page


def test_an_offline_worker_no_longer_counts(shop, workers):
    for w in ("w1", "w2"):
        services.ingest(worker=w, backends=[health(shop, shop.b1, True)])
    workers[1].last_heartbeat = timezone.now() - dt.timedelta(minutes=5)
    workers[1].save()
    assert str(selectors.backend_health(shop)[str(shop.b1.pk)]) == "up on 1 of 1 workers"


def test_backend_down_alerts_once_per_incident_and_resolves(shop, workers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.ingest(worker="w1", backends=[health(shop, shop.b1, True)])
        services.ingest(worker="w2", backends=[health(shop, shop.b1, True)])
        services.ingest(worker="w1", backends=[health(shop, shop.b1, False)])
    assert not Alert.objects.exists()  # still up on w2

    with django_capture_on_commit_callbacks(execute=True):
        services.ingest(worker="w2", backends=[health(shop, shop.b1, False)])
        for _ in range(5):  # more reports of the same incident
            services.ingest(worker="w1", backends=[health(shop, shop.b1, False)])
            services.ingest(worker="w2", backends=[health(shop, shop.b1, False)])
    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.BACKEND_DOWN and alert.is_open and alert.site_id == shop.pk

    with django_capture_on_commit_callbacks(execute=True):
        services.ingest(worker="w1", backends=[health(shop, shop.b1, True)])
    alert.refresh_from_db()
    assert not alert.is_open

    with django_capture_on_commit_callbacks(execute=True):
        services.ingest(worker="w1", backends=[health(shop, shop.b1, False)])
        services.ingest(worker="w1", backends=[health(shop, shop.b1, False)])
    assert Alert.objects.count() == 2  # a new incident, one new row
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1


def test_error_rate_spike_opens_once_and_resolves_when_errors_stop(shop):
    now = timezone.now().replace(second=30)
    m = minute_of(now) - 1
    services.ingest(worker="w1", minutes=[report(shop, m, requests=100, status=(0, 70, 0, 0, 30))])
    alerts.evaluate(now=now)
    alerts.evaluate(now=now)
    alert = Alert.objects.get(kind=Alert.Kind.ERROR_RATE)
    assert alert.is_open and alert.details["rate_percent"] == 30.0
    services.ingest(worker="w1", minutes=[report(shop, m, seq=2, requests=1000, status=(0, 970, 0, 0, 30))])
    alerts.evaluate(now=now)
    alert.refresh_from_db()
    assert not alert.is_open  # 3 % is below half the 10 % threshold


def test_worker_offline_alert(shop, workers):
    now = timezone.now()
    workers[0].last_heartbeat = now - dt.timedelta(minutes=2)
    workers[0].save()
    alerts.evaluate(now=now)
    alerts.evaluate(now=now)
    alert = Alert.objects.get(kind=Alert.Kind.WORKER_OFFLINE)
    assert alert.subject == "w1" and alert.organization_id == shop.organization_id
    workers[0].last_heartbeat = now
    workers[0].save()
    alerts.evaluate(now=now)
    alert.refresh_from_db()
    assert not alert.is_open


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        _Hook.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alerts_are_sent_by_email_and_signed_webhook_when_opened_and_resolved(shop, workers,
                                                                               django_capture_on_commit_callbacks):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    AlertSettings.objects.create(organization=shop.organization, emails=["ops@example.com"],
                                 webhook_url=f"http://127.0.0.1:{server.server_port}/hook", webhook_secret="s3cret")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.ingest(worker="w1", backends=[health(shop, shop.b1, False)])
        with django_capture_on_commit_callbacks(execute=True):
            services.ingest(worker="w1", backends=[health(shop, shop.b1, True)])
    finally:
        server.shutdown()
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["[Portico] Alert", "[Portico] Resolved"]
    assert mail.outbox[0].to == ["ops@example.com"]
    events = []
    for headers, body in _Hook.received:
        expected = "sha256=" + hmac.new(b"s3cret", headers["X-Portico-Timestamp"].encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        assert headers["X-Portico-Signature"] == expected
        events.append(json.loads(body)["event"])
    assert events == ["alert.opened", "alert.resolved"]
    assert all(d["ok"] for d in Alert.objects.get().notified)
