"""Platform policies: only staff change them, every organization's audit log records the change,
the compiler applies them on top of each tenant's own rules, and tenants can read but not change them."""

from __future__ import annotations

import pytest
from audit.models import AuditEvent
from audit.services import verify_chain
from django.core.exceptions import PermissionDenied, ValidationError
from edge import services as edge
from edge.models import PlatformPolicy
from edge.platform_policies import platform_policy_set
from fleet.compiler import compile_snapshot
from fleet.publisher import fleet_key
from rest_framework.test import APIClient
from tenancy.access import Actor
from tenancy.models import User


@pytest.fixture
def staff(db) -> Actor:
    return Actor.for_user(User.objects.create_user(email="ops@portico.test", password="x", is_staff=True))


def _site(cast, name="shop", **fields):
    return edge.site_create(actor=cast.editor, org=cast.org, name=name, hostnames=[f"{name}.acme.test"],
                            backends=[{"address": "10.0.0.5", "port": 8080}], tls_mode="off", **fields)


def _compiled(name: str):
    return next(s for s in compile_snapshot(version=1, fleet_key=fleet_key()).sites if s.name == name)


def test_only_staff_change_platform_policies(cast, staff):
    for actor in (cast.owner, cast.admin):
        with pytest.raises(PermissionDenied):
            platform_policy_set(actor=actor, kind="min_tls", settings={"version": "1.3"})
    assert not PlatformPolicy.objects.exists()
    platform_policy_set(actor=staff, kind="min_tls", settings={"version": "1.3"})
    assert PlatformPolicy.objects.get().settings == {"version": "1.3"}


def test_bad_settings_are_refused_naming_the_problem(staff):
    with pytest.raises(ValidationError, match="not-a-network"):
        platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": ["not-a-network"]})
    with pytest.raises(ValidationError, match="bogus"):
        platform_policy_set(actor=staff, kind="managed_waf", settings={"groups": ["bogus"]})
    with pytest.raises(ValidationError, match="kind"):
        platform_policy_set(actor=staff, kind="everything", settings={})


def test_a_change_is_audited_in_every_organization(cast, staff):
    platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": ["203.0.113.7"]}, note="abuse report #12")
    for org in (cast.org, cast.other_org):
        event = AuditEvent.objects.get(organization=org, action="platform_policy.update")
        assert event.actor_name == "ops@portico.test"
        assert event.changes["settings"] == [None, {"deny": ["203.0.113.7/32"]}]
        assert verify_chain(org) == []
    platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": ["203.0.113.7"]}, note="abuse report #12")
    assert AuditEvent.objects.filter(action="platform_policy.update").count() == 2  # unchanged: not again


def test_the_compiler_adds_the_blocklist_to_every_site_keeping_the_tenants_own(cast, staff):
    site = _site(cast)
    _site(cast, "blog")
    edge.policy_create(actor=cast.editor, org=cast.org, site=site, kind="ip_rules", name="mine",
                       settings={"allow": ["10.0.0.0/8"], "deny": ["10.9.9.9/32"]})
    assert _compiled("blog").policies.ip_rules is None
    platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": ["10.1.0.0/16", "10.9.9.9/32"]})
    assert _compiled("shop").policies.ip_rules.deny == ["10.9.9.9/32", "10.1.0.0/16"]
    assert _compiled("shop").policies.ip_rules.allow == ["10.0.0.0/8"]
    assert _compiled("blog").policies.ip_rules.deny == ["10.1.0.0/16", "10.9.9.9/32"]


def test_the_minimum_tls_version_is_raised_never_lowered(cast, staff):
    _site(cast, "shop")
    _site(cast, "strict", tls_min_version="1.3")
    platform_policy_set(actor=staff, kind="min_tls", settings={"version": "1.3"})
    assert _compiled("shop").tls_min_version == "1.3"
    platform_policy_set(actor=staff, kind="min_tls", settings={"version": "1.2"})
    assert _compiled("strict").tls_min_version == "1.3" and _compiled("shop").tls_min_version == "1.2"


def test_managed_waf_groups_block_even_where_the_tenant_turned_them_down(cast, staff):
    site = _site(cast)
    edge.policy_create(actor=cast.editor, org=cast.org, site=site, kind="waf", name="mine",
                       settings={"managed": {"sqli": "log", "xss": "off", "scanners": "block"},
                                 "rules": [{"id": "env", "conditions": [{"field": "path", "op": "contains", "value": ".env"}]}]})
    platform_policy_set(actor=staff, kind="managed_waf", settings={"groups": ["sqli", "xss"]})
    waf = _compiled("shop").policies.waf
    assert waf.managed == {"sqli": "block", "xss": "block", "scanners": "block"}
    assert [r.id for r in waf.rules] == ["env"]
    assert waf.enforced == ["sqli", "xss"]  # the tenant's own allow rules cannot skip these
    platform_policy_set(actor=staff, kind="managed_waf", settings={"groups": ["sqli", "xss"]}, enabled=False)
    assert _compiled("shop").policies.waf.managed["sqli"] == "log"


def test_tenants_read_platform_policies_and_cannot_change_them(cast, staff):
    platform_policy_set(actor=staff, kind="min_tls", settings={"version": "1.3"}, note="PCI DSS")
    platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": []}, enabled=False)
    client = APIClient()
    client.force_login(cast.owner.user)
    listed = client.get("/api/v1/orgs/acme/platform-policies/")
    assert listed.status_code == 200
    assert [(p["kind"], p["settings"], p["note"]) for p in listed.json()["results"]] == [("min_tls", {"version": "1.3"}, "PCI DSS")]
    assert client.get("/api/v1/orgs/acme/platform-policies/min_tls/").json()["settings"] == {"version": "1.3"}
    assert client.post("/api/v1/orgs/acme/platform-policies/", {"kind": "min_tls"}, format="json").status_code == 405
    assert client.patch("/api/v1/orgs/acme/platform-policies/min_tls/", {"settings": {}}, format="json").status_code == 405
    assert client.get("/api/v1/orgs/globex/platform-policies/").status_code == 404  # not a member there
