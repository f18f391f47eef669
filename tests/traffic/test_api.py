"""The traffic endpoints: scoped to the organization, in the OpenAPI schema."""

from __future__ import annotations

from django.utils import timezone
from rest_framework.test import APIClient
from tenancy.models import Membership, Organization, Role, User
from traffic import services

from .conftest import minute_of, report


def client_of(org, role=Role.VIEWER) -> APIClient:
    user = User.objects.create_user(email=f"{org.slug}-{role}@example.com", password="x")
    Membership.objects.create(organization=org, user=user, role=role)
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_traffic_inspector_and_alerts_are_readable_by_members_and_404_for_others(shop):
    m = minute_of(timezone.now())
    services.ingest(worker="w1", minutes=[report(shop, m, requests=10, status=(0, 8, 0, 2, 0), blocked=[("ip", "deny", 2)])],
                    samples=[{"site": str(shop.pk), "at": timezone.now().timestamp(), "method": "GET", "path": "/x",
                              "status": 403, "blocked": {"reason": "ip", "rule": "deny"},
                              "request_headers": [["authorization", "***"]]}])
    base = f"/api/v1/orgs/{shop.organization.slug}/sites/{shop.pk}"
    member = client_of(shop.organization)
    traffic = member.get(f"{base}/traffic/?window=1h").json()
    assert traffic["summary"]["requests"] == 10
    assert traffic["summary"]["blocked_by"] == [{"reason": "ip", "rule": "deny", "count": 2}]
    assert len(traffic["points"]) == 60
    assert member.get(f"{base}/traffic/?window=2y").status_code == 400
    samples = member.get(f"{base}/requests/?kind=blocked").json()["results"]
    assert samples[0]["blocked_rule"] == "deny" and samples[0]["request_headers"] == [["authorization", "***"]]
    assert member.get(f"/api/v1/orgs/{shop.organization.slug}/alerts/").status_code == 200

    other = Organization.objects.create(name="Globex", slug="globex")
    stranger = client_of(other)
    assert stranger.get(f"{base}/traffic/").status_code == 404
    assert stranger.get(f"/api/v1/orgs/globex/sites/{shop.pk}/requests/").status_code == 404


def test_the_endpoints_are_in_the_schema(db):
    schema = APIClient().get("/api/schema/?format=json").json()
    paths = schema["paths"]
    for suffix in ("/traffic/", "/requests/", "/backend-health/"):
        assert any(p.endswith(suffix) for p in paths), suffix
    assert "/api/v1/orgs/{org_slug}/alerts/" in paths
