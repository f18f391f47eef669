"""The alerts page: incidents (open first), filters, and the organization's alert settings, which
only owners and admins change and whose webhook secret is never shown."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from audit.models import AuditEvent
from django.urls import reverse
from django.utils import timezone
from tenancy.models import Membership, Role, User
from traffic.models import Alert, AlertSettings

URL = reverse("frontend:alerts", kwargs={"org_slug": "acme"})
SECRET = "whsec-do-not-show-me-0123456789"

VALID = {
    "enabled": "on", "emails": "ops@acme.test\noncall@acme.test", "webhook_url": "https://hooks.acme.test/portico",
    "webhook_secret": SECRET, "error_rate_percent": "5", "min_requests": "20", "traffic_spike_factor": "3",
    "cert_expiry_days": "21",
}


@pytest.fixture
def admin(cast):
    user = User.objects.create_user(email="admin@acme.test", password="correct horse battery")
    Membership.objects.create(organization=cast.org, user=user, role=Role.ADMIN)
    cast.users["admin"] = user
    return user


@pytest.fixture
def alerts(cast):
    now = timezone.now()
    old = Alert.objects.create(organization=cast.org, kind=Alert.Kind.ERROR_RATE, subject=str(cast.site.pk), site=cast.site,
                               summary="Shop: 40% of requests failed", opened_at=now - dt.timedelta(hours=3),
                               resolved_at=now - dt.timedelta(hours=2, minutes=30),
                               notified=[{"channel": "email", "event": "opened", "ok": True, "at": now.isoformat()},
                                         {"channel": "webhook", "event": "opened", "ok": False, "error": "timed out",
                                          "at": now.isoformat()}])
    down = Alert.objects.create(organization=cast.org, kind=Alert.Kind.BACKEND_DOWN, subject=str(cast.backend.pk),
                                site=cast.site, summary="Backend 10.0.0.1 of Shop is down on all 2 workers",
                                opened_at=now - dt.timedelta(minutes=5))
    cert = Alert.objects.create(organization=cast.org, kind=Alert.Kind.CERT_EXPIRING, subject="cert-1",
                                summary="Certificate for shop.acme.test expires in 3 days", opened_at=now - dt.timedelta(days=2))
    Alert.objects.create(organization=cast.other_org, kind=Alert.Kind.WORKER_OFFLINE, subject="edge-9",
                         summary="Globex's own incident")
    return old, down, cert


def summaries(body: str) -> list[str]:
    return re.findall(r'<td class="summary">([^<]+)', body)


def test_open_incidents_come_first_then_resolved_ones(cast, alerts):
    body = cast.client("viewer").get(URL).content.decode()
    assert summaries(body) == ["Backend 10.0.0.1 of Shop is down on all 2 workers",
                               "Certificate for shop.acme.test expires in 3 days", "Shop: 40% of requests failed"]
    assert "2 open" in body
    assert "Globex" not in body
    # The subject is shown where the site does not already say it: the backend's id, the certificate.
    assert f"<code>{cast.backend.pk}</code>" in body and "<code>cert-1</code>" in body
    assert f"<code>{cast.site.pk}</code>" not in body
    # The site links to its traffic; a resolved one says how long it lasted and what was sent.
    traffic = reverse("frontend:site_traffic", kwargs={"org_slug": "acme", "site_id": cast.site.pk})
    assert f'<a href="{traffic}">Shop</a>' in body
    assert "30\xa0minutes</td>" in body
    assert "email (opened): sent" in body and "webhook (opened): failed: timed out" in body


def test_filters_by_state_and_kind(cast, alerts):
    client = cast.client("viewer")
    assert summaries(client.get(URL, {"state": "resolved"}).content.decode()) == ["Shop: 40% of requests failed"]
    assert len(summaries(client.get(URL, {"state": "open"}).content.decode())) == 2
    body = client.get(URL, {"kind": "backend_down"}).content.decode()
    assert summaries(body) == ["Backend 10.0.0.1 of Shop is down on all 2 workers"]
    assert '<option value="backend_down" selected>' in body
    assert "No alerts match these filters." in client.get(URL, {"state": "resolved", "kind": "cert_expiring"}).content.decode()


def test_no_alerts_yet(cast):
    assert "No alerts so far" in cast.client("viewer").get(URL).content.decode()


def test_the_header_links_to_alerts(cast):
    body = cast.client("viewer").get(URL).content.decode()
    assert f'<a href="{URL}" aria-current="page">Alerts</a>' in body


def test_strangers_get_404(cast):
    assert cast.client("outsider").get(URL).status_code == 404
    assert cast.client("outsider").post(URL, VALID).status_code == 404


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["viewer", "editor"])
def test_viewers_and_editors_see_the_settings_read_only(cast, who):
    body = cast.client(who).get(URL).content.decode()
    assert "Only owners and admins can change these." in body
    assert 'name="webhook_secret"' not in body and "Save alert settings" not in body
    assert "<dd>the organization's owners and admins</dd>" in body
    response = cast.client(who).post(URL, VALID)
    assert response.status_code == 403
    assert not AlertSettings.objects.filter(organization=cast.org).exists()


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_owners_and_admins_save_the_settings_audited_with_the_secret_redacted(cast, admin, who):
    response = cast.client(who).post(URL, VALID)
    assert response.status_code == 302
    conf = AlertSettings.objects.get(organization=cast.org)
    assert conf.emails == ["ops@acme.test", "oncall@acme.test"]
    assert (conf.webhook_url, conf.webhook_secret) == ("https://hooks.acme.test/portico", SECRET)
    assert (conf.error_rate_percent, conf.min_requests, conf.traffic_spike_factor, conf.cert_expiry_days) == (5, 20, 3, 21)
    event = AuditEvent.objects.get(organization=cast.org, action="alert_settings.update")
    assert event.actor_name == f"{who}@acme.test"
    assert event.changes["webhook_secret"] == ["", "[redacted]"]
    assert event.changes["min_requests"] == [50, 20]
    assert SECRET not in str(event.changes)


def test_the_secret_is_never_shown_back(cast):
    cast.client("owner").post(URL, VALID)
    body = cast.client("owner").get(URL).content.decode()
    assert SECRET not in body
    assert "Currently set; it is never shown." in body
    assert 'value="https://hooks.acme.test/portico"' in body and "ops@acme.test\noncall@acme.test" in body
    assert "<dd>set</dd>" in cast.client("viewer").get(URL).content.decode()
    # Not even when the form comes back with an error next to another field.
    body = cast.client("owner").post(URL, {**VALID, "min_requests": "0"}).content.decode()
    assert SECRET not in body


def test_leaving_the_secret_empty_keeps_it_and_removing_it_needs_no_webhook(cast):
    client = cast.client("owner")
    client.post(URL, VALID)
    client.post(URL, {**VALID, "webhook_secret": "", "min_requests": "30"})
    conf = AlertSettings.objects.get(organization=cast.org)
    assert (conf.webhook_secret, conf.min_requests) == (SECRET, 30)
    # A webhook signs every delivery: its secret cannot go while the URL stays.
    body = client.post(URL, {**VALID, "webhook_secret": "", "clear_webhook_secret": "on"}).content.decode()
    assert 'id="id_webhook_secret_error">A webhook needs a secret' in body
    client.post(URL, {**VALID, "webhook_url": "", "webhook_secret": "", "clear_webhook_secret": "on"})
    conf.refresh_from_db()
    assert (conf.webhook_url, conf.webhook_secret) == ("", "")
    assert "Currently not set; it is never shown." in client.get(URL).content.decode()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("emails", "ops@acme.test\nnot-an-address", "Not an email address: not-an-address."),
    ("webhook_url", "ftp://hooks.acme.test/", "Give a full http:// or https:// address."),
    ("webhook_url", "http://169.254.169.254/latest/", "169.254.169.254 is in 169.254.0.0/16"),
    ("webhook_url", "http://metadata.google.internal/", "is a cloud metadata service"),
    ("webhook_secret", "short", "Between 16 and 100 characters."),
    ("error_rate_percent", "0", "Between 0.1 and 100."),
    ("error_rate_percent", "150", "Between 0.1 and 100."),
    ("min_requests", "0", "Between 1 and 1000000."),
    ("traffic_spike_factor", "1", "Between 1.5 and 1000."),
    ("cert_expiry_days", "365", "Between 1 and 90."),
    ("cert_expiry_days", "soon", "Enter a whole number."),
])
def test_mistakes_are_explained_next_to_their_field(cast, field, value, message):
    response = cast.client("owner").post(URL, {**VALID, field: value})
    assert response.status_code == 200
    body = response.content.decode()
    error = re.search(rf'<p class="error" id="id_{field}_error">([^<]*)</p>', body)
    assert error and message in error.group(1).replace("&#x27;", "'"), body[body.find("settings-h"):][:3000]
    assert not AlertSettings.objects.filter(organization=cast.org).exists()
    assert not AuditEvent.objects.filter(organization=cast.org, action="alert_settings.update").exists()


def test_a_test_alert_goes_to_the_saved_recipients_and_is_audited(cast, mailoutbox):
    client = cast.client("owner")
    client.post(URL, {**VALID, "webhook_url": "", "webhook_secret": ""})
    response = client.post(URL, {"action": "test"}, follow=True)
    assert [m.to for m in mailoutbox] == [["ops@acme.test", "oncall@acme.test"]]
    assert mailoutbox[0].subject == "[Portico] Alert: Test alert for Acme"
    assert "Test alert: email sent." in response.content.decode()
    event = AuditEvent.objects.get(organization=cast.org, action="alert_settings.test")
    assert event.changes == {"results": [{"channel": "email", "ok": True}]}
    assert not Alert.objects.exists()  # a test is not an incident


def test_a_test_alert_needs_the_admin_role(cast, mailoutbox):
    assert cast.client("editor").post(URL, {"action": "test"}).status_code == 403
    assert mailoutbox == []
