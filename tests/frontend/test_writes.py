"""Every form that changes something, sent by each member of the cast: editors (and owners) change
it through the service, with an audit event; viewers get 403 and strangers 404, and neither changes
a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from audit.models import AuditEvent
from django.urls import reverse
from edge.models import Backend, Hostname, Policy, Route, Site
from tenancy.models import ApiToken, Invitation

from .conftest import WHO


@dataclass(frozen=True)
class Case:
    name: str
    url: Callable  # (cast) -> (url name, extra kwargs)
    data: Callable  # (cast) -> POST data
    done: Callable  # (cast) -> bool
    needs: str = "editor"

    def __str__(self) -> str:
        return self.name


def site(name, **extra):
    return lambda c: (name, {"site_id": c.site.pk, **{k: v(c) for k, v in extra.items()}})


CASES = [
    Case("site_create", lambda c: ("site_create", {}),
         lambda c: {"name": "Blog", "hostnames": "blog.acme.test", "tls_mode": "acme", "address": "10.0.0.9", "port": 80, "scheme": "http"},
         lambda c: Site.objects.filter(organization=c.org, name="Blog", backends__address="10.0.0.9").exists()),
    Case("site_pause", site("site_state", action=lambda c: "pause"), lambda c: {},
         lambda c: Site.objects.get(pk=c.site.pk).state == "paused"),
    Case("site_delete", site("site_delete"), lambda c: {"confirm": "Shop"}, lambda c: not Site.objects.filter(pk=c.site.pk).exists()),
    Case("site_balancing", site("site_section", section=lambda c: "balancing"),
         lambda c: {"balancing": "least_connections", "sticky_cookie": "", "max_body_bytes": 1000},
         lambda c: Site.objects.get(pk=c.site.pk).balancing == "least_connections"),
    Case("site_health", site("site_section", section=lambda c: "health"),
         lambda c: {"hc_enabled": "on", "hc_path": "/healthz", "hc_interval": 10, "hc_timeout": 1, "hc_expected_status": "200",
                    "hc_rise": 2, "hc_fall": 3},
         lambda c: Site.objects.get(pk=c.site.pk).hc_path == "/healthz"),
    Case("site_tls", site("site_section", section=lambda c: "tls"),
         lambda c: {"tls_mode": "internal", "tls_min_version": "1.3", "force_https": "on", "hsts_max_age": 0},
         lambda c: Site.objects.get(pk=c.site.pk).tls_min_version == "1.3"),
    Case("hostname_add", site("hostname_add"), lambda c: {"name": "www.acme.test"},
         lambda c: Hostname.objects.filter(name="www.acme.test", site=c.site).exists()),
    Case("backend_add", site("backend_add"),
         lambda c: {"pool": "default", "address": "10.0.0.2", "port": 81, "scheme": "http", "weight": 3, "tls_verify": "on", "sni": ""},
         lambda c: Backend.objects.filter(site=c.site, address="10.0.0.2", weight=3).exists()),
    Case("backend_weight", site("backend_update", backend_id=lambda c: c.backend.pk), lambda c: {"weight": 7},
         lambda c: Backend.objects.get(pk=c.backend.pk).weight == 7),
    Case("backend_drain", site("backend_update", backend_id=lambda c: c.backend.pk), lambda c: {"state": "draining"},
         lambda c: Backend.objects.get(pk=c.backend.pk).state == "draining"),
    Case("backend_remove", site("backend_remove", backend_id=lambda c: c.backend.pk), lambda c: {},
         lambda c: not Backend.objects.filter(pk=c.backend.pk).exists()),
    Case("route_add", site("route_add"), lambda c: {"path_prefix": "/static", "pool": "default"},
         lambda c: Route.objects.filter(site=c.site, path_prefix="/static").exists()),
    Case("route_remove", site("route_remove", route_id=lambda c: c.route.pk), lambda c: {},
         lambda c: not Route.objects.filter(pk=c.route.pk).exists()),
    Case("policy_add", site("policy_add"),
         lambda c: {"kind": "rate_limit", "name": "api", "enabled": "on", "settings": '{"requests": 5, "per_seconds": 1}'},
         lambda c: Policy.objects.filter(site=c.site, kind="rate_limit", settings__requests=5).exists()),
    Case("policy_update", site("policy_update", policy_id=lambda c: c.policy.pk),
         lambda c: {f"{c.policy.pk}-name": "cache", f"{c.policy.pk}-enabled": "on", f"{c.policy.pk}-settings": '{"default_ttl": 300}'},
         lambda c: Policy.objects.get(pk=c.policy.pk).settings["default_ttl"] == 300),
    Case("policy_remove", site("policy_remove", policy_id=lambda c: c.policy.pk), lambda c: {},
         lambda c: not Policy.objects.filter(pk=c.policy.pk).exists()),
    Case("token_create", lambda c: ("tokens", {}), lambda c: {"name": "ci", "scope": "write"},
         lambda c: ApiToken.objects.filter(organization=c.org, name="ci", scope="write").exists(), needs="owner"),
    Case("org_rename", lambda c: ("organization", {}), lambda c: {"action": "rename", "name": "Acme Corp"},
         lambda c: type(c.org).objects.get(pk=c.org.pk).name == "Acme Corp", needs="owner"),
    Case("org_invite", lambda c: ("organization", {}), lambda c: {"action": "invite", "email": "new@example.test", "role": "viewer"},
         lambda c: Invitation.objects.filter(organization=c.org, email="new@example.test").exists(), needs="owner"),
]


def post(cast, who: str, case: Case):
    name, kwargs = case.url(cast)
    return cast.client(who).post(reverse(f"frontend:{name}", kwargs={"org_slug": "acme", **kwargs}), case.data(cast))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("who", WHO)
def test_each_role_gets_what_it_may(cast, case, who):
    events = AuditEvent.objects.count()
    may = who == "owner" or (who == "editor" and case.needs == "editor")
    response = post(cast, who, case)
    if may:
        assert response.status_code in (200, 302), response.content.decode()[:2000]
        assert case.done(cast)
        assert AuditEvent.objects.filter(organization=cast.org).count() == events + 1
    else:
        assert response.status_code == (404 if who == "outsider" else 403)
        assert not case.done(cast)
        assert AuditEvent.objects.count() == events


def test_a_created_site_opens_its_page(cast):
    response = post(cast, "editor", CASES[0])
    created = Site.objects.get(name="Blog")
    assert response["Location"] == reverse("frontend:site", kwargs={"org_slug": "acme", "site_id": created.pk})


def test_a_new_token_is_shown_once(cast):
    response = post(cast, "owner", next(c for c in CASES if c.name == "token_create"))
    token = ApiToken.objects.get(name="ci")
    body = response.content.decode()
    assert f"pt_{token.lookup}_" in body and response["Cache-Control"] == "no-store"
    secret = body.split(f'value="pt_{token.lookup}_', 1)[1].split('"', 1)[0]
    assert token.matches(f"pt_{token.lookup}_{secret}")
    again = cast.client("owner").get(reverse("frontend:tokens", kwargs={"org_slug": "acme"})).content.decode()
    assert secret not in again


def test_a_token_is_revoked(cast):
    post(cast, "owner", next(c for c in CASES if c.name == "token_create"))
    token = ApiToken.objects.get(name="ci")
    url = reverse("frontend:token_revoke", kwargs={"org_slug": "acme", "token_id": token.pk})
    assert cast.client("viewer").post(url).status_code == 403
    assert cast.client("outsider").post(url).status_code == 404
    cast.client("owner").post(url)
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_writes_to_another_tenants_objects_are_404(cast):
    other_backend = Backend.objects.create(organization=cast.other_org, site=cast.other_site, address="10.9.9.9")
    client = cast.client("owner")
    # another tenant's site under my organization's URL
    url = reverse("frontend:site_state", kwargs={"org_slug": "acme", "site_id": cast.other_site.pk, "action": "pause"})
    assert client.post(url).status_code == 404
    # another tenant's backend under my site
    url = reverse("frontend:backend_remove", kwargs={"org_slug": "acme", "site_id": cast.site.pk, "backend_id": other_backend.pk})
    assert client.post(url).status_code == 404
    assert Backend.objects.filter(pk=other_backend.pk).exists()
    assert Site.objects.get(pk=cast.other_site.pk).state == "active"
