"""Idempotency-Key on POST: a retried request acts once."""

from __future__ import annotations

import datetime as dt

from api.models import IdempotencyKey
from audit.models import AuditEvent
from edge.models import Purge, Site
from tenancy.models import ApiToken

from .conftest import client_for, url

SITE = {"name": "Shop", "hostnames": ["shop.acme.test"]}


def test_the_same_key_and_body_replays_the_first_answer(cast):
    client = client_for(cast.acme.write_token)
    first = client.post(url("acme", "sites/"), SITE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    events = AuditEvent.objects.count()
    second = client.post(url("acme", "sites/"), SITE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["ETag"] == first["ETag"]
    assert second["Idempotent-Replayed"] == "true"
    assert Site.objects.for_org(cast.acme.org).count() == 1
    assert AuditEvent.objects.count() == events


def test_the_same_key_with_another_body_is_422(cast):
    client = client_for(cast.acme.write_token)
    assert client.post(url("acme", "sites/"), SITE, format="json", HTTP_IDEMPOTENCY_KEY="k-1").status_code == 201
    other = {**SITE, "name": "Other", "hostnames": ["other.acme.test"]}
    response = client.post(url("acme", "sites/"), other, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 422
    assert "different request" in response.json()["detail"]
    assert Site.objects.for_org(cast.acme.org).count() == 1


def test_the_same_key_on_another_url_is_422(cast, world):
    client = client_for(cast.acme.write_token)
    body = {"kind": "all"}
    assert client.post(url("acme", "purges/"), body, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 202
    assert client.post(url("globex", "purges/"), body, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 404
    assert client.post(url("acme", "policies/"), body, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 422


def test_keys_belong_to_their_caller(cast):
    body = {"kind": "all"}
    a = client_for(cast.acme.write_token).post(url("acme", "purges/"), body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    b = client_for(user=cast.acme.users["editor"]).post(url("acme", "purges/"), body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    assert Purge.objects.for_org(cast.acme.org).count() == 2


def test_a_failed_request_is_not_remembered(cast):
    client = client_for(cast.acme.write_token)
    bad = client.post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["not a host"]}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.filter(key="k-2").exists()
    # the same key can carry the corrected request
    good = client.post(url("acme", "sites/"), SITE, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert good.status_code == 201


def test_a_replayed_token_creation_does_not_show_the_token_again(cast):
    client = client_for(user=cast.acme.users["admin"])
    body = {"name": "ci", "scope": "read"}
    first = client.post(url("acme", "tokens/"), body, format="json", HTTP_IDEMPOTENCY_KEY="t-1")
    second = client.post(url("acme", "tokens/"), body, format="json", HTTP_IDEMPOTENCY_KEY="t-1")
    assert first.json()["token"].startswith("pt_")
    assert second.status_code == 201 and second.json()["token"] is None
    assert second.json()["id"] == first.json()["id"]
    assert ApiToken.objects.filter(name="ci").count() == 1
    # nor is it stored for replays
    stored = IdempotencyKey.objects.get(key="t-1")
    assert first.json()["token"] not in str(stored.body)


def test_an_expired_key_acts_again(cast):
    client = client_for(cast.acme.write_token)
    client.post(url("acme", "purges/"), {"kind": "all"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyKey.objects.filter(key="old").update(expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    client.post(url("acme", "purges/"), {"kind": "all"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    assert Purge.objects.for_org(cast.acme.org).count() == 2


def test_an_unusable_key_is_400(cast):
    client = client_for(cast.acme.write_token)
    response = client.post(url("acme", "purges/"), {"kind": "all"}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 256)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
