"""The cast and the world the API tests share: two organizations, a member of every role, API
tokens, and one of every kind of object, made through the services as a person would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from certs.models import Certificate
from django.apps import apps
from django.core.cache import cache
from django.utils import timezone
from edge import services as edge
from edge.models import Backend, Hostname, Policy, Purge, Route, Site
from edge.platform_policies import platform_policy_set
from edge.purges import purge_create
from fleet.models import ConfigVersion, Worker
from fleet.publisher import publish
from rest_framework.test import APIClient
from tenancy import services as tenancy
from tenancy.access import Actor
from tenancy.models import Invitation, Membership, Organization, Role, TokenScope, User
from traffic.models import Alert, RequestSample

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _fast_and_fresh(settings):
    # Django's default PBKDF2 costs ~0.4 s per user; the cast alone would make every test slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Throttle counters live in the cache and would carry over from test to test.
    settings.PORTICO_API_RATE = "100000/min"
    cache.clear()
    yield
    cache.clear()


@dataclass
class Org:
    """One organization with a member of each role (users) and API tokens (raw strings)."""

    org: Organization
    users: dict[str, User]
    read_token: str = ""
    write_token: str = ""

    @property
    def slug(self) -> str:
        return self.org.slug

    def actor(self, role: str = "owner") -> Actor:
        return Actor.for_user(self.users[role])


def _org(name: str, slug: str, roles=(Role.OWNER, Role.ADMIN, Role.EDITOR, Role.VIEWER)) -> Org:
    org = Organization.objects.create(name=name, slug=slug)
    users = {}
    for role in roles:
        user = User.objects.create_user(email=f"{role}@{slug}.test", password=PASSWORD)
        Membership.objects.create(organization=org, user=user, role=role)
        users[str(role)] = user
    cast = Org(org=org, users=users)
    owner = cast.actor("owner")
    cast.read_token = tenancy.token_create(actor=owner, org=org, name="read bot", scope=TokenScope.READ)[1]
    cast.write_token = tenancy.token_create(actor=owner, org=org, name="write bot", scope=TokenScope.WRITE)[1]
    return cast


@dataclass
class Cast:
    acme: Org
    globex: Org  # the other tenant: every one of its members and tokens is an outsider to acme


@pytest.fixture
def cast(db) -> Cast:
    return Cast(acme=_org("Acme", "acme"), globex=_org("Globex", "globex"))


def client_for(token: str | None = None, *, user: User | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def as_token() -> Callable[[str], APIClient]:
    return client_for


@dataclass
class World:
    """One object of every kind in an organization, to aim requests at."""

    site: Site
    other_site: Site
    hostname: Hostname
    route: Route
    backend: Backend
    policy: Policy
    org_policy: Policy
    invitation: Invitation
    purge: Purge
    certificate: Certificate
    member: Membership
    alert: Alert
    request_sample: RequestSample
    ids: dict[str, str] = field(default_factory=dict)


def build_world(cast: Org) -> World:
    owner, org, slug = cast.actor("owner"), cast.org, cast.slug
    site = edge.site_create(
        actor=owner,
        org=org,
        name="Shop",
        hostnames=[f"shop.{slug}.test", f"www.{slug}.test"],
        backends=[{"address": "10.0.0.1", "port": 8080}],
    )
    other_site = edge.site_create(actor=owner, org=org, name="Blog", hostnames=[f"blog.{slug}.test"])
    hostname = Hostname.objects.get(name=f"www.{slug}.test")
    route = edge.route_create(actor=owner, org=org, site=site, path_prefix="/api/", pool="api")
    backend = Backend.objects.get(site=site)
    policy = edge.policy_create(actor=owner, org=org, site=site, kind="rate_limit", name="API", settings={"requests": 10})
    org_policy = edge.policy_create(actor=owner, org=org, kind="compression", name="Default", settings={})
    invitation, _ = tenancy.invitation_create(actor=owner, org=org, email=f"new@{slug}.test", role=Role.EDITOR)
    purge = purge_create(actor=owner, org=org, site=None, kind="all")
    certificate = Certificate.objects.create(
        organization=org, hostnames=[f"shop.{slug}.test"], source=Certificate.Source.ACME, status=Certificate.Status.PENDING
    )
    member = Membership.objects.get(organization=org, user=cast.users["editor"])
    # Reported by the workers and the alerting job, not made by people: rows as they would write them.
    alert = Alert.objects.create(
        organization=org, kind=Alert.Kind.BACKEND_DOWN, subject=str(backend.pk), site=site, summary="backend 10.0.0.1 is down"
    )
    request_sample = RequestSample.objects.create(
        organization=org, site=site, at=timezone.now(), kind=RequestSample.Kind.choices[0][0], worker="edge",
        method="GET", host=f"shop.{slug}.test", path="/", status=200,
    )
    return World(
        site=site, other_site=other_site, hostname=hostname, route=route, backend=backend, policy=policy,
        org_policy=org_policy, invitation=invitation, purge=purge, certificate=certificate, member=member,
        alert=alert, request_sample=request_sample,
    )


@pytest.fixture
def world(cast) -> World:
    """acme's world. globex has one too (``other_world``), to aim acme's requests at."""
    return build_world(cast.acme)


@pytest.fixture
def other_world(cast) -> World:
    return build_world(cast.globex)


@pytest.fixture
def make_worker(db) -> Callable[..., Worker]:
    """Workers with names no real agent uses, whose broker queues are deleted afterwards: a
    publish or purge in a test puts messages on the real broker."""
    names: list[str] = []

    def make(**fields) -> Worker:
        name = f"api-test-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return Worker.objects.create(name=name, last_heartbeat=timezone.now(), **fields)

    yield make
    from config.celery import app
    from fleet.distribution import agent_queue

    with app.connection_for_write() as conn:
        for name in names:
            agent_queue(name)(conn.default_channel).delete()


@pytest.fixture
def fleet(make_worker) -> tuple[Worker, ConfigVersion]:
    """The platform's own objects: a rule staff set, a config version, a worker that applied it."""
    platform_policy_set(actor=Actor.system("tests"), kind="min_tls", settings={"version": "1.2"}, note="TLS 1.2 or newer")
    version = publish(force=True)
    return make_worker(version=version.number), version


_STATE_APPS = ("tenancy", "audit", "edge", "certs", "fleet", "traffic", "api")
# Touched by reading, on purpose: when a token was last used, when a person last signed in.
_VOLATILE = {"tenancy.ApiToken": {"last_used_at"}, "tenancy.User": {"last_login"}}


@pytest.fixture
def db_state(db) -> Callable[[], str]:
    """Every row the control plane owns, as one comparable text: equal texts, nothing changed."""

    def dump() -> str:
        rows = {}
        for app in _STATE_APPS:
            for model in apps.get_app_config(app).get_models():
                label = model._meta.label
                skip = _VOLATILE.get(label, set())
                rows[label] = [{k: v for k, v in row.items() if k not in skip} for row in model.objects.order_by("pk").values()]
        return json.dumps(rows, sort_keys=True, default=str)

    return dump


def url(slug: str, path: str = "") -> str:
    return f"/api/v1/orgs/{slug}/{path}"
