"""edge/services.py: sites, hostnames, backends, routes and policies.

Every service is tried by every kind of actor: a stranger gets 404, a viewer (or read token) gets
403, and neither changes a single row; editors and up succeed with exactly one audit event, written
in the same transaction as the change.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from audit.models import AuditEvent
from audit.services import verify_chain
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.http import Http404
from edge import services
from edge.models import Backend, Hostname, Policy, Route, Site
from fleet.compiler import compile_snapshot
from fleet.publisher import fleet_key
from tenancy.access import Actor, can
from tenancy.models import Organization, Role

from .actors import permitted, too_low


def _site(org: Organization, name: str, *hostnames: str, **fields: Any) -> Site:
    site = Site.objects.create(organization=org, name=name, **fields)
    for hostname in hostnames:
        Hostname.objects.create(organization=org, site=site, name=hostname)
    return site


@pytest.fixture
def shop(cast) -> SimpleNamespace:
    """cast.org's sites: an active shop with one of everything, and a paused blog."""
    site = _site(cast.org, "Shop", "shop.acme.test", "www.acme.test")
    return SimpleNamespace(
        site=site,
        www=Hostname.objects.get(name="www.acme.test"),
        backend=Backend.objects.create(organization=cast.org, site=site, address="10.0.0.1", port=8080),
        route=Route.objects.create(organization=cast.org, site=site, path_prefix="/api", pool="api"),
        policy=Policy.objects.create(organization=cast.org, site=site, kind="cache", name="cache", settings={"default_ttl": 60}),
        paused=_site(cast.org, "Blog", "blog.acme.test", state=Site.State.PAUSED),
    )


@dataclass(frozen=True)
class Case:
    service: str
    action: str
    call: Callable[[Actor, Organization, SimpleNamespace], Any]
    done: Callable[[SimpleNamespace], bool]
    takes_object: bool = True
    needs: str = Role.EDITOR

    def __str__(self) -> str:
        return self.service


def _fresh(obj):
    return type(obj).objects.filter(pk=obj.pk).first()


def _require_backend_tls(actor: Actor, org: Organization, w: SimpleNamespace):
    # The shop's backend is plain HTTP, which the setting refuses: it is switched to https first,
    # only for actors allowed to succeed and in the same transaction, so refused calls change nothing.
    with transaction.atomic():
        if can(actor, org, Role.ADMIN):
            Backend.objects.filter(pk=w.backend.pk).update(scheme="https")
        return services.organization_require_backend_tls(actor=actor, org=org, required=True)


CASES = [
    Case(
        "site_create",
        "site.create",
        lambda a, org, w: services.site_create(
            actor=a, org=org, name="New", hostnames=["new.acme.test"], backends=[{"address": "10.0.0.5", "port": 8080}]
        ),
        lambda w: Site.objects.filter(name="New", hostnames__name="new.acme.test", backends__port=8080).exists(),
        takes_object=False,
    ),
    Case(
        "site_update",
        "site.update",
        lambda a, org, w: services.site_update(actor=a, org=org, site=w.site, hc_path="/health"),
        lambda w: _fresh(w.site).hc_path == "/health",
    ),
    Case(
        "site_pause",
        "site.update",
        lambda a, org, w: services.site_pause(actor=a, org=org, site=w.site),
        lambda w: _fresh(w.site).state == Site.State.PAUSED,
    ),
    Case(
        "site_resume",
        "site.update",
        lambda a, org, w: services.site_resume(actor=a, org=org, site=w.paused),
        lambda w: _fresh(w.paused).state == Site.State.ACTIVE,
    ),
    Case(
        "site_delete",
        "site.delete",
        lambda a, org, w: services.site_delete(actor=a, org=org, site=w.site),
        lambda w: _fresh(w.site) is None and not Hostname.objects.filter(name="www.acme.test").exists(),
    ),
    Case(
        "organization_require_backend_tls",
        "organization.require_backend_tls",
        lambda a, org, w: _require_backend_tls(a, org, w),
        lambda w: Organization.objects.get(pk=w.site.organization_id).require_backend_tls is True,
        takes_object=False,
        needs=Role.ADMIN,
    ),
    Case(
        "hostname_add",
        "hostname.add",
        lambda a, org, w: services.hostname_add(actor=a, org=org, site=w.site, name="API.acme.test"),
        lambda w: Hostname.objects.filter(site=w.site, name="api.acme.test").exists(),
    ),
    Case(
        "hostname_remove",
        "hostname.remove",
        lambda a, org, w: services.hostname_remove(actor=a, org=org, hostname=w.www),
        lambda w: _fresh(w.www) is None,
    ),
    Case(
        "backend_create",
        "backend.create",
        lambda a, org, w: services.backend_create(actor=a, org=org, site=w.site, address="Origin.Acme.test", port=443, scheme="https"),
        lambda w: Backend.objects.filter(site=w.site, address="origin.acme.test", port=443).exists(),
    ),
    Case(
        "backend_update",
        "backend.update",
        lambda a, org, w: services.backend_update(actor=a, org=org, backend=w.backend, weight=5, state=Backend.State.DRAINING),
        lambda w: (_fresh(w.backend).weight, _fresh(w.backend).state) == (5, Backend.State.DRAINING),
    ),
    Case(
        "backend_delete",
        "backend.delete",
        lambda a, org, w: services.backend_delete(actor=a, org=org, backend=w.backend),
        lambda w: _fresh(w.backend) is None,
    ),
    Case(
        "route_create",
        "route.create",
        lambda a, org, w: services.route_create(actor=a, org=org, site=w.site, path_prefix="/static", pool="static"),
        lambda w: Route.objects.filter(site=w.site, path_prefix="/static", pool="static").exists(),
    ),
    Case(
        "route_update",
        "route.update",
        lambda a, org, w: services.route_update(actor=a, org=org, route=w.route, strip_prefix=True),
        lambda w: _fresh(w.route).strip_prefix is True,
    ),
    Case(
        "route_delete",
        "route.delete",
        lambda a, org, w: services.route_delete(actor=a, org=org, route=w.route),
        lambda w: _fresh(w.route) is None,
    ),
    Case(
        "policy_create",
        "policy.create",
        lambda a, org, w: services.policy_create(actor=a, org=org, site=w.site, kind="rate_limit", name="rl", settings={"requests": 10}),
        lambda w: Policy.objects.filter(site=w.site, kind="rate_limit", settings__requests=10).exists(),
    ),
    Case(
        "policy_create_org_default",
        "policy.create",
        lambda a, org, w: services.policy_create(actor=a, org=org, kind="compression", name="gzip", settings={"encodings": ["gzip"]}),
        lambda w: Policy.objects.filter(site=None, kind="compression").exists(),
        takes_object=False,
    ),
    Case(
        "policy_update",
        "policy.update",
        lambda a, org, w: services.policy_update(actor=a, org=org, policy=w.policy, enabled=False),
        lambda w: _fresh(w.policy).enabled is False,
    ),
    Case(
        "policy_delete",
        "policy.delete",
        lambda a, org, w: services.policy_delete(actor=a, org=org, policy=w.policy),
        lambda w: _fresh(w.policy) is None,
    ),
]
PERMITTED = permitted(CASES)
TOO_LOW = too_low(CASES)


def test_every_org_scoped_service_is_in_the_matrix():
    """A new service that takes an actor and an organization is tried by every actor below."""
    scoped = {
        name
        for name, function in inspect.getmembers(services, inspect.isfunction)
        if function.__module__ == services.__name__ and {"actor", "org"} <= set(inspect.signature(function).parameters)
    }
    assert scoped <= {case.service for case in CASES}


# --- who may do what ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_outsider_gets_404(case, cast, shop, db_state):
    before = db_state()
    with pytest.raises(Http404):
        case.call(cast.outsider, cast.org, shop)
    assert db_state() == before


@pytest.mark.parametrize("case", [c for c in CASES if c.takes_object], ids=str)
def test_outsider_cannot_reach_our_objects_through_their_own_org(case, cast, shop, db_state):
    before = db_state()
    with pytest.raises(Http404):
        case.call(cast.outsider, cast.other_org, shop)
    assert db_state() == before


@pytest.mark.parametrize(("case", "who"), TOO_LOW, ids=[f"{c}-{w}" for c, w in TOO_LOW])
def test_viewer_cannot_write(case, who, cast, shop, actor_named, db_state):
    actor = actor_named(who)
    before = db_state()
    with pytest.raises(PermissionDenied):
        case.call(actor, cast.org, shop)
    assert db_state() == before


@pytest.mark.parametrize(("case", "who"), PERMITTED, ids=[f"{c}-{w}" for c, w in PERMITTED])
def test_editor_and_up_succeed_with_one_audit_event(case, who, cast, shop, actor_named):
    actor = actor_named(who)
    case.call(actor, cast.org, shop)
    assert case.done(shop)
    (event,) = AuditEvent.objects.all()
    assert (event.organization_id, event.action) == (cast.org.pk, case.action)
    assert event.target_type == case.action.split(".")[0] and event.target_id and event.target_repr
    assert event.changes  # what changed, before and after
    assert event.actor_kind == actor.kind
    assert event.actor_name == actor.display
    assert (event.ip, event.user_agent, event.request_id) == (actor.ip, actor.user_agent, actor.request_id)
    assert verify_chain(cast.org) == []


@pytest.mark.parametrize("case", CASES, ids=str)
def test_change_and_audit_event_commit_together(case, cast, shop, db_state, monkeypatch):
    """If the audit event cannot be written, the change is not written either."""

    def broken_record(**kwargs):
        raise RuntimeError("audit storage is down")

    monkeypatch.setattr(services, "record", broken_record)
    before = db_state()
    with pytest.raises(RuntimeError, match="audit storage is down"):
        case.call(getattr(cast, case.needs), cast.org, shop)
    assert db_state() == before


# --- what the audit log says -------------------------------------------------------------------


def test_site_create_records_the_normalized_hostnames_and_backends(cast):
    site = services.site_create(
        actor=cast.editor,
        org=cast.org,
        name="  Docs ",
        hostnames=["Docs.Acme.TEST."],
        backends=[{"address": "10.0.0.7", "port": 81}],
        force_https=True,
    )
    event = AuditEvent.objects.get()
    assert (event.target_type, event.target_id, event.target_repr) == ("site", str(site.pk), "Docs")
    assert event.changes["hostnames"] == [None, ["docs.acme.test"]]
    assert event.changes["backends"] == [None, ["http://10.0.0.7:81"]]
    assert event.changes["name"] == [None, "Docs"]
    assert event.changes["force_https"] == [None, True]


def test_site_update_records_only_what_changed(cast, shop):
    services.site_update(actor=cast.editor, org=cast.org, site=shop.site, hc_path="/health", hc_interval=10.0, name="Shop")
    assert AuditEvent.objects.get().changes == {"hc_path": ["/", "/health"], "hc_interval": [5.0, 10.0]}


def test_an_update_that_changes_nothing_records_nothing(cast, shop):
    services.site_update(actor=cast.editor, org=cast.org, site=shop.site, name="Shop")
    services.backend_update(actor=cast.editor, org=cast.org, backend=shop.backend, weight=1)
    services.policy_update(actor=cast.editor, org=cast.org, policy=shop.policy, enabled=True)
    assert not AuditEvent.objects.exists()


def test_a_token_is_named_in_the_audit_event(cast, shop, actor_named):
    token_actor = actor_named("write_token")
    services.backend_update(actor=token_actor, org=cast.org, backend=shop.backend, weight=3)
    event = AuditEvent.objects.get()
    token = token_actor.token
    assert (event.actor_kind, event.actor_token, event.actor_user) == ("token", token, None)
    assert event.actor_ref == f"token:{token.pk}"
    assert event.actor_name == f"API token write bot ({token.lookup})"
    assert (event.ip, event.user_agent, event.request_id) == ("198.51.100.7", "portico-cli/1.0", "req-token-0001")
    assert event.changes == {"weight": [1, 3]}


def test_the_system_is_named_in_the_audit_event(cast, shop):
    services.site_pause(actor=Actor.system("abuse report 42"), org=cast.org, site=shop.site)
    event = AuditEvent.objects.get()
    assert (event.actor_kind, event.actor_user, event.actor_token, event.actor_ref) == ("system", None, None, "system")
    assert event.actor_name == "system: abuse report 42"
    assert event.changes == {"state": ["active", "paused"]}


def test_the_actor_name_outlives_the_user(cast, shop):
    services.site_pause(actor=cast.editor, org=cast.org, site=shop.site)
    user_pk = cast.editor.user.pk
    cast.editor.user.delete()
    event = AuditEvent.objects.get()
    assert (event.actor_user, event.actor_name, event.actor_ref) == (None, "editor@acme.test", f"user:{user_pk}")
    assert verify_chain(cast.org) == []


FAILURES = [
    (
        "site_create_bad_hostname",
        "hostnames",
        lambda a, org, w: services.site_create(actor=a, org=org, name="X", hostnames=["bad_host.test"]),
    ),
    ("site_create_no_hostname", "hostnames", lambda a, org, w: services.site_create(actor=a, org=org, name="X", hostnames=[])),
    (
        "site_create_unknown_field",
        "colour",
        lambda a, org, w: services.site_create(actor=a, org=org, name="X", hostnames=["x.test"], colour=1),
    ),
    (
        "site_create_bad_health_check",
        "hc_timeout",
        lambda a, org, w: services.site_create(actor=a, org=org, name="X", hostnames=["x.test"], hc_interval=1.0, hc_timeout=2.0),
    ),
    (
        # the site and its hostnames are already saved when the backend is checked
        "site_create_bad_backend",
        "address",
        lambda a, org, w: services.site_create(actor=a, org=org, name="X", hostnames=["x.test"], backends=[{"address": "http://x"}]),
    ),
    ("site_update_bad_path", "hc_path", lambda a, org, w: services.site_update(actor=a, org=org, site=w.site, hc_path="health")),
    (
        "site_update_bad_status",
        "hc_expected_status",
        lambda a, org, w: services.site_update(actor=a, org=org, site=w.site, hc_expected_status="2xx"),
    ),
    (
        "site_update_preload",
        "hsts_preload",
        lambda a, org, w: services.site_update(actor=a, org=org, site=w.site, hsts_preload=True, hsts_max_age=60),
    ),
    ("site_update_balancing", "balancing", lambda a, org, w: services.site_update(actor=a, org=org, site=w.site, balancing="random")),
    ("hostname_add_bad", "name", lambda a, org, w: services.hostname_add(actor=a, org=org, site=w.site, name="*.com")),
    (
        "hostname_remove_last",
        "name",
        lambda a, org, w: services.hostname_remove(actor=a, org=org, hostname=Hostname.objects.get(name="blog.acme.test")),
    ),
    ("backend_create_port", "port", lambda a, org, w: services.backend_create(actor=a, org=org, site=w.site, address="10.0.0.2", port=0)),
    (
        "backend_create_host_port",
        "address",
        lambda a, org, w: services.backend_create(actor=a, org=org, site=w.site, address="origin:8080"),
    ),
    ("backend_create_wildcard", "address", lambda a, org, w: services.backend_create(actor=a, org=org, site=w.site, address="*.acme.test")),
    (
        "backend_create_ca",
        "ca_pem",
        lambda a, org, w: services.backend_create(actor=a, org=org, site=w.site, address="10.0.0.2", ca_pem="x"),
    ),
    ("backend_update_weight", "weight", lambda a, org, w: services.backend_update(actor=a, org=org, backend=w.backend, weight=0)),
    ("backend_update_pool", "pool", lambda a, org, w: services.backend_update(actor=a, org=org, backend=w.backend, pool="Big Pool")),
    ("route_create_prefix", "path_prefix", lambda a, org, w: services.route_create(actor=a, org=org, site=w.site, path_prefix="api")),
    ("route_create_duplicate", "path_prefix", lambda a, org, w: services.route_create(actor=a, org=org, site=w.site, path_prefix="/api")),
    ("route_update_pool", "pool", lambda a, org, w: services.route_update(actor=a, org=org, route=w.route, pool="Big Pool")),
    (
        "policy_create_rate_0",
        "settings",
        lambda a, org, w: services.policy_create(actor=a, org=org, kind="rate_limit", name="rl", settings={"requests": 0}),
    ),
    ("policy_create_no_name", "name", lambda a, org, w: services.policy_create(actor=a, org=org, kind="cache", name=" ", settings={})),
    (
        "policy_update_settings",
        "settings",
        lambda a, org, w: services.policy_update(actor=a, org=org, policy=w.policy, settings={"max_ttl": -1}),
    ),
]


@pytest.mark.parametrize(("field", "call"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_invalid_change_is_rejected_with_the_field_and_no_audit_event(field, call, cast, shop, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        call(cast.editor, cast.org, shop)
    assert field in exc.value.message_dict
    assert db_state() == before


# --- hostnames -----------------------------------------------------------------------------------


def _create(cast, *hostnames: str, org: Organization | None = None) -> Site:
    actor = cast.outsider if org is not None else cast.editor
    return services.site_create(actor=actor, org=org or cast.org, name="Site", hostnames=list(hostnames))


def _names(site: Site) -> list[str]:
    return list(site.hostnames.order_by("name").values_list("name", flat=True))


def test_hostnames_are_lower_cased_and_idna_encoded(cast):
    site = _create(cast, "Bücher.Example.COM.", "WWW.Example.Com")
    assert _names(site) == ["www.example.com", "xn--bcher-kva.example.com"]


def test_a_wildcard_hostname_is_allowed(cast):
    site = _create(cast, "*.Example.com")
    assert _names(site) == ["*.example.com"]
    assert site.hostnames.get().is_wildcard


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "required"),
        ("exa mple.com", "bad label"),
        ("-shop.example.com", "bad label"),
        ("shop_1.example.com", "bad label"),
        ("a..example.com", "not a valid hostname"),
        ("x" * 64 + ".example.com", "not a valid hostname"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("foo.*.example.com", "only allowed as the whole first label"),
        ("*.com", "at least two labels"),
        ("192.0.2.1", "IP address"),
        ("https://example.com", "bad label"),
    ],
)
def test_bad_hostname_is_rejected_with_a_reason(name, reason, cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        _create(cast, name)
    assert reason in exc.value.message_dict["hostnames"][0]
    assert db_state() == before


@pytest.fixture
def globex(cast) -> Site:
    return _create(cast, "taken.example.com", "*.wild.example.com", "api.cover.example.com", org=cast.other_org)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("TAKEN.example.com.", "taken.example.com is already in use by another organization."),
        ("*.wild.example.com", "*.wild.example.com is already in use by another organization."),
        ("*.cover.example.com", "*.cover.example.com would cover api.cover.example.com, which another organization uses."),
        ("shop.wild.example.com", "shop.wild.example.com is covered by *.wild.example.com, which another organization uses."),
    ],
    ids=["exact_duplicate", "same_wildcard", "wildcard_over_their_name", "name_under_their_wildcard"],
)
def test_hostname_of_another_tenant_is_rejected_with_a_clear_message(name, reason, cast, globex, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        _create(cast, name)
    assert exc.value.message_dict["hostnames"] == [reason]
    assert "Globex" not in reason  # the other tenant is not named
    assert db_state() == before


def test_hostname_add_reports_a_conflict_on_the_name_field(cast, shop, globex, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.hostname_add(actor=cast.editor, org=cast.org, site=shop.site, name="x.wild.example.com")
    assert exc.value.message_dict == {"name": ["x.wild.example.com is covered by *.wild.example.com, which another organization uses."]}
    assert db_state() == before


def test_the_same_orgs_duplicate_is_rejected_too(cast, shop, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        _create(cast, "new.acme.test", "WWW.acme.test")
    assert exc.value.message_dict["hostnames"] == ["www.acme.test is already used by your site 'Shop'."]
    with pytest.raises(ValidationError) as exc:
        _create(cast, "twice.acme.test", "Twice.Acme.Test")
    assert exc.value.message_dict["hostnames"] == ["twice.acme.test is listed twice."]
    assert db_state() == before


@pytest.mark.django_db(transaction=True)
def test_removing_a_sites_last_two_names_at_once_leaves_one(cast, shop):
    """The second removal waits for the first, then sees it would take the site's last name."""
    outcome: list[BaseException | None] = []

    def remove_the_other() -> None:
        try:
            shop_name = Hostname.objects.get(name="shop.acme.test")
            services.hostname_remove(actor=Actor.for_user(cast.admin.user), org=cast.org, hostname=shop_name)
            outcome.append(None)
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)
        finally:
            connection.close()

    with transaction.atomic():
        services.hostname_remove(actor=cast.editor, org=cast.org, hostname=shop.www)
        rival = threading.Thread(target=remove_the_other)
        rival.start()
        rival.join(timeout=0.5)  # with the lock it waits for this commit; without it, it races ahead
    rival.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], ValidationError)
    assert _names(shop.site) == ["shop.acme.test"]
    compile_snapshot(version=1, fleet_key=fleet_key())  # the platform still compiles


def test_names_beside_another_tenants_wildcard_are_free(cast, globex):
    """A wildcard covers exactly one label: its parent and deeper names stay available."""
    site = _create(cast, "wild.example.com", "a.b.wild.example.com", "*.b.wild.example.com", "cover.example.com")
    assert _names(site) == ["*.b.wild.example.com", "a.b.wild.example.com", "cover.example.com", "wild.example.com"]


def test_an_org_may_cover_its_own_names_with_a_wildcard(cast, shop):
    services.hostname_add(actor=cast.editor, org=cast.org, site=shop.site, name="*.acme.test")
    assert set(_names(shop.site)) == {"*.acme.test", "shop.acme.test", "www.acme.test"}


# --- policies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "policy_settings", "field", "says"),
    [
        ("rate_limit", {"requests": 0}, "settings", "requests"),
        ("rate_limit", {"requests": 5, "key": "header"}, "settings", "header"),
        ("rate_limit", {"requests": 5, "burst": "lots"}, "settings", "burst"),
        ("ip_rules", {"deny": ["10.0.0.300/8"]}, "settings", "10.0.0.300/8"),
        ("waf", {"rules": [{"id": "r1", "conditions": [{"field": "path", "op": "regex", "value": "(unclosed"}]}]}, "settings", "regex"),
        ("waf", {"managed": {"everything": "block"}}, "settings", "everything"),
        ("cache", {"default_ttl": 60, "colour": "blue"}, "settings", "colour"),
        ("headers", [{"direction": "sideways", "op": "add", "name": "x"}], "settings", "direction"),
        ("basic_auth", {"users": {}}, "settings", "users"),
        ("teleport", {}, "kind", "teleport"),
    ],
    ids=[
        "rate_0",
        "rate_header",
        "rate_burst",
        "bad_cidr",
        "bad_regex",
        "managed_group",
        "unknown_field",
        "header_dir",
        "no_users",
        "kind",
    ],
)
def test_policy_validation_names_the_field(kind, policy_settings, field, says, cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.policy_create(actor=cast.editor, org=cast.org, kind=kind, name="p", settings=policy_settings)
    assert field in exc.value.message_dict
    assert says in exc.value.message_dict[field][0]
    assert db_state() == before


def test_policy_settings_are_stored_normalized(cast):
    policy = services.policy_create(
        actor=cast.editor, org=cast.org, kind="rate_limit", name="api", settings={"requests": 10, "per_seconds": 60}
    )
    assert policy.settings == {"requests": 10, "per_seconds": 60.0}
    assert Policy.objects.get(pk=policy.pk).site is None


def test_a_second_enabled_cache_policy_on_a_site_is_refused(cast, shop):
    with pytest.raises(ValidationError) as err:
        services.policy_create(actor=cast.editor, org=cast.org, site=shop.site, kind="cache", name="other", settings={})
    assert "already has an enabled caching policy ('cache')" in err.value.message_dict["kind"][0]
    # rate limits add up: a second one is fine
    services.policy_create(actor=cast.editor, org=cast.org, site=shop.site, kind="rate_limit", name="a", settings={"requests": 5})
    services.policy_create(actor=cast.editor, org=cast.org, site=shop.site, kind="rate_limit", name="b", settings={"requests": 9})


def test_enabling_a_disabled_duplicate_is_refused_until_the_other_is_disabled(cast, shop):
    spare = services.policy_create(actor=cast.editor, org=cast.org, site=shop.site, kind="cache", name="spare",
                                   settings={}, enabled=False)
    with pytest.raises(ValidationError):
        services.policy_update(actor=cast.editor, org=cast.org, policy=spare, enabled=True)
    services.policy_update(actor=cast.editor, org=cast.org, policy=shop.policy, enabled=False)
    services.policy_update(actor=cast.editor, org=cast.org, policy=spare, enabled=True)
    assert Policy.objects.filter(site=shop.site, kind="cache", enabled=True).get().name == "spare"


def test_an_org_default_and_a_site_policy_of_one_kind_coexist(cast, shop):
    services.policy_create(actor=cast.editor, org=cast.org, kind="cache", name="default", settings={"default_ttl": 5})
    with pytest.raises(ValidationError):
        services.policy_create(actor=cast.editor, org=cast.org, kind="cache", name="default-2", settings={})


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "[fe80::1]", "0.0.0.0", "metadata.google.internal"])
def test_backends_may_not_point_at_metadata_or_link_local_addresses(cast, shop, address):
    with pytest.raises(ValidationError) as err:
        services.backend_create(actor=cast.editor, org=cast.org, site=shop.site, address=address, port=80)
    assert "may not use" in err.value.message_dict["address"][0]


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.1.10", "::1", "origin.internal"])
def test_loopback_and_private_origins_stay_allowed(cast, shop, address):
    services.backend_create(actor=cast.editor, org=cast.org, site=shop.site, address=address, port=80)


@pytest.mark.parametrize("call", [
    lambda c, s: services.site_update(actor=c.editor, org=c.org, site=s.site, colour="blue"),
    lambda c, s: services.backend_update(actor=c.editor, org=c.org, backend=s.backend, colour="blue"),
    lambda c, s: services.backend_create(actor=c.editor, org=c.org, site=s.site, address="10.0.0.9", colour="blue"),
    lambda c, s: services.route_update(actor=c.editor, org=c.org, route=s.route, colour="blue"),
    lambda c, s: services.policy_update(actor=c.editor, org=c.org, policy=s.policy, colour="blue"),
], ids=["site_update", "backend_update", "backend_create", "route_update", "policy_update"])
def test_an_unknown_field_is_a_400_naming_it_and_nothing_changes(call, cast, shop, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as err:
        call(cast, shop)
    assert err.value.message_dict == {"colour": ["Unknown field."]}
    assert db_state() == before
