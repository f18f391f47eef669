"""Who gets in: API tokens (Bearer) and dashboard sessions."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from edge.models import Site
from rest_framework.test import APIClient
from tenancy import services as tenancy
from tenancy.models import ApiToken, Membership, TokenScope

from .conftest import client_for, url


def test_it_needs_credentials(cast):
    response = APIClient().get(url("acme", "sites/"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_token_is_401(cast):
    for raw in ("pt_nothere_secret", cast.acme.read_token + "x", "not-a-token", "pt_"):
        response = client_for(raw).get(url("acme", "sites/"))
        assert response.status_code == 401, raw
        assert response.json()["detail"] == "This token is not valid, was revoked or has expired."


def test_a_malformed_authorization_header_is_401(cast):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two words")
    assert client.get(url("acme", "sites/")).status_code == 401


def test_a_revoked_token_is_401(cast):
    row = ApiToken.objects.get(organization=cast.acme.org, name="read bot")
    tenancy.token_revoke(actor=cast.acme.actor(), org=cast.acme.org, token=row)
    assert client_for(cast.acme.read_token).get(url("acme", "sites/")).status_code == 401


def test_an_expired_token_is_401(cast):
    ApiToken.objects.filter(organization=cast.acme.org, name="read bot").update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert client_for(cast.acme.read_token).get(url("acme", "sites/")).status_code == 401


def test_a_token_not_yet_expired_works(cast):
    ApiToken.objects.filter(organization=cast.acme.org, name="read bot").update(expires_at=timezone.now() + dt.timedelta(hours=1))
    assert client_for(cast.acme.read_token).get(url("acme", "sites/")).status_code == 200


def test_it_records_when_a_token_was_last_used(cast):
    row = ApiToken.objects.get(organization=cast.acme.org, name="read bot")
    assert row.last_used_at is None
    client_for(cast.acme.read_token).get(url("acme", "sites/"))
    row.refresh_from_db()
    assert row.last_used_at is not None
    assert timezone.now() - row.last_used_at < dt.timedelta(seconds=30)


def test_a_token_only_reaches_its_own_organization(cast, world):
    response = client_for(cast.globex.write_token).get(url("acme", "sites/"))
    assert response.status_code == 404
    # the same answer as an organization that does not exist
    missing = client_for(cast.globex.write_token).get(url("no-such-org", "sites/"))
    assert missing.status_code == 404
    assert response.json() == missing.json()


def test_a_read_token_that_writes_gets_403(cast, world):
    response = client_for(cast.acme.read_token).post(url("acme", "sites/"), {"name": "x", "hostnames": ["x.acme.test"]})
    assert response.status_code == 403
    assert not Site.objects.filter(name="x").exists()


def test_a_write_token_writes(cast):
    response = client_for(cast.acme.write_token).post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"]})
    assert response.status_code == 201, response.json()
    assert Site.objects.for_org(cast.acme.org).get().name == "Shop"


def test_a_token_cannot_create_tokens(cast):
    before = ApiToken.objects.count()
    response = client_for(cast.acme.write_token).post(url("acme", "tokens/"), {"name": "child", "scope": "write"})
    assert response.status_code == 403
    assert ApiToken.objects.count() == before


def test_a_token_cannot_manage_members(cast):
    membership = Membership.objects.get(organization=cast.acme.org, user=cast.acme.users["viewer"])
    client = client_for(cast.acme.write_token)
    assert client.patch(url("acme", f"members/{membership.pk}/"), {"role": "admin"}).status_code == 403
    assert client.delete(url("acme", f"members/{membership.pk}/")).status_code == 403
    assert client.post(url("acme", "invitations/"), {"email": "x@example.com"}).status_code == 403
    membership.refresh_from_db()
    assert membership.role == "viewer"


def test_a_token_cannot_create_organizations(cast):
    response = client_for(cast.acme.write_token).post("/api/v1/orgs/", {"name": "Mine"})
    assert response.status_code == 403


def test_a_signed_in_person_uses_the_session(cast):
    client = client_for(user=cast.acme.users["editor"])
    assert client.get(url("acme", "sites/")).status_code == 200
    assert client.post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"]}).status_code == 201


def test_a_session_write_needs_the_csrf_token(cast):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(cast.acme.users["editor"])
    response = client.post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"]}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_a_bearer_token_needs_no_csrf_token(cast):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {cast.acme.write_token}")
    response = client.post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"]}, format="json")
    assert response.status_code == 201


def test_a_person_creates_an_organization_and_owns_it(cast):
    client = client_for(user=cast.acme.users["viewer"])
    response = client.post("/api/v1/orgs/", {"name": "Side project"})
    assert response.status_code == 201
    assert response.json()["role"] == "owner"
    assert response.json()["slug"] == "side-project"


def test_a_person_creates_a_token_and_sees_it_once(cast):
    client = client_for(user=cast.acme.users["admin"])
    response = client.post(url("acme", "tokens/"), {"name": "ci", "scope": TokenScope.WRITE})
    assert response.status_code == 201
    token = response.json()["token"]
    assert token.startswith("pt_")
    detail = client.get(url("acme", f"tokens/{response.json()['id']}/")).json()
    assert "token" not in detail and "token_hash" not in detail
    assert token not in str(client.get(url("acme", "tokens/")).json())
    # and the token works
    assert client_for(token).get(url("acme", "sites/")).status_code == 200
