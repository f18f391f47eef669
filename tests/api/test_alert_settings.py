"""``/api/v1/orgs/{org}/alert-settings/``: read by any member, changed by admins, owners and
read-write tokens; the webhook secret goes in and never comes out, not even in the audit log."""

from __future__ import annotations

import pytest
from audit.models import AuditEvent
from traffic.models import AlertSettings

from .conftest import client_for, url

SECRET = "whsec-api-secret-0123456789abcdef"


def settings_url(slug: str = "acme") -> str:
    return url(slug, "alert-settings/")


def test_members_read_the_defaults_without_anything_being_written(cast):
    for client in (client_for(cast.acme.read_token), client_for(user=cast.acme.users["viewer"])):
        response = client.get(settings_url())
        assert response.status_code == 200
        assert response.json() == {
            "enabled": True, "emails": [], "webhook_url": "", "webhook_secret_set": False, "error_rate_percent": 10.0,
            "min_requests": 50, "traffic_spike_factor": 5.0, "cert_expiry_days": 14,
        }
        assert response.headers["ETag"]
    assert not AlertSettings.objects.exists()


@pytest.mark.parametrize("who", ["owner", "admin", "write_token"])
def test_admins_owners_and_write_tokens_change_them(cast, who):
    client = client_for(cast.acme.write_token) if who == "write_token" else client_for(user=cast.acme.users[who])
    response = client.patch(settings_url(), {"emails": ["ops@acme.test"], "webhook_url": "https://hooks.acme.test/x",
                                             "webhook_secret": SECRET, "min_requests": 100}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["emails"] == ["ops@acme.test"] and body["min_requests"] == 100 and body["webhook_secret_set"] is True
    assert "webhook_secret" not in body and SECRET not in response.content.decode()
    conf = AlertSettings.objects.get(organization=cast.acme.org)
    assert (conf.webhook_secret, conf.min_requests, conf.error_rate_percent) == (SECRET, 100, 10.0)
    event = AuditEvent.objects.get(organization=cast.acme.org, action="alert_settings.update")
    assert event.actor_kind == ("token" if who == "write_token" else "user")
    assert event.changes["webhook_secret"] == ["", "[redacted]"]
    assert event.changes["min_requests"] == [50, 100]
    assert SECRET not in str(event.changes)


@pytest.mark.parametrize("who", ["editor", "viewer", "read_token"])
def test_others_may_not_change_them(cast, who):
    client = client_for(cast.acme.read_token) if who == "read_token" else client_for(user=cast.acme.users[who])
    for method in ("put", "patch"):
        response = getattr(client, method)(settings_url(), {"min_requests": 1}, format="json")
        assert response.status_code == 403
    assert not AlertSettings.objects.exists()


def test_another_organization_is_404_and_its_settings_stay_apart(cast):
    client_for(user=cast.globex.users["owner"]).patch(settings_url("globex"), {"min_requests": 7}, format="json")
    for client in (client_for(cast.globex.write_token), client_for(user=cast.globex.users["owner"])):
        assert client.get(settings_url()).status_code == 404
        assert client.patch(settings_url(), {"min_requests": 1}, format="json").status_code == 404
    assert client_for(user=cast.acme.users["owner"]).get(settings_url()).json()["min_requests"] == 50
    assert not AlertSettings.objects.filter(organization=cast.acme.org).exists()


def test_secret_kept_when_left_out_removed_when_empty(cast):
    client = client_for(user=cast.acme.users["owner"])
    client.patch(settings_url(), {"webhook_url": "https://hooks.acme.test/x", "webhook_secret": SECRET}, format="json")
    assert client.put(settings_url(), {"cert_expiry_days": 30}, format="json").json()["webhook_secret_set"] is True
    refused = client.patch(settings_url(), {"webhook_secret": ""}, format="json")
    assert refused.status_code == 400 and "webhook_secret" in refused.json()  # a webhook needs its secret
    cleared = client.patch(settings_url(), {"webhook_url": "", "webhook_secret": ""}, format="json")
    assert cleared.json()["webhook_secret_set"] is False
    assert AlertSettings.objects.get(organization=cast.acme.org).webhook_secret == ""


@pytest.mark.parametrize(("body", "field"), [
    ({"emails": ["ops@acme.test", "nope"]}, "emails"),
    ({"emails": "ops@acme.test"}, "emails"),
    ({"webhook_url": "file:///etc/passwd"}, "webhook_url"),
    ({"webhook_url": "http://169.254.169.254/latest/meta-data/", "webhook_secret": SECRET}, "webhook_url"),
    ({"webhook_url": "http://[fe80::1]/", "webhook_secret": SECRET}, "webhook_url"),
    ({"webhook_url": "https://hooks.acme.test/x"}, "webhook_secret"),
    ({"webhook_url": "https://hooks.acme.test/x", "webhook_secret": "short"}, "webhook_secret"),
    ({"error_rate_percent": 0}, "error_rate_percent"),
    ({"min_requests": "many"}, "min_requests"),
    ({"traffic_spike_factor": 1}, "traffic_spike_factor"),
    ({"cert_expiry_days": 91}, "cert_expiry_days"),
    ({"enabled": "perhaps"}, "enabled"),
    ({"webhok_url": "https://hooks.acme.test/x"}, "webhok_url"),
])
def test_bad_values_are_a_400_naming_the_field(cast, body, field):
    response = client_for(user=cast.acme.users["owner"]).patch(settings_url(), body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field], response.json()
    assert not AlertSettings.objects.exists()
    assert not AuditEvent.objects.filter(action="alert_settings.update").exists()


def test_what_a_get_returned_can_be_put_back(cast):
    client = client_for(user=cast.acme.users["owner"])
    read = client.get(settings_url())
    response = client.put(settings_url(), {**read.json(), "min_requests": 75}, format="json", HTTP_IF_MATCH=read.headers["ETag"])
    assert response.status_code == 200 and response.json()["min_requests"] == 75
    stale = client.put(settings_url(), {**read.json(), "min_requests": 80}, format="json", HTTP_IF_MATCH=read.headers["ETag"])
    assert stale.status_code == 412


def test_it_is_in_the_schema(cast):
    schema = client_for(user=cast.acme.users["viewer"]).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    item = schema["paths"]["/api/v1/orgs/{org_slug}/alert-settings/"]
    assert set(item) >= {"get", "put", "patch"} and "post" not in item and "delete" not in item
    props = schema["components"]["schemas"]["AlertSettings"]["properties"]
    assert "webhook_secret" not in props and props["webhook_secret_set"]["readOnly"] is True
    assert props["cert_expiry_days"]["maximum"] == 90
    assert "webhook_secret" in schema["components"]["schemas"]["PatchedAlertSettingsRequest"]["properties"]
