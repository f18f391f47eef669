"""The owner / editor / viewer / outsider cast for the dashboard, each with a signed-in client."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client
from edge.models import Backend, Hostname, Policy, Route, Site
from tenancy.models import Membership, Organization, Role, User

WHO = ("owner", "editor", "viewer", "outsider")


@dataclass
class Cast:
    org: Organization
    other_org: Organization
    site: Site
    other_site: Site  # belongs to other_org
    backend: Backend
    route: Route
    policy: Policy
    users: dict[str, User]

    def client(self, who: str) -> Client:
        client = Client()
        client.force_login(self.users[who])
        return client


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def no_publish(monkeypatch):
    # Publishing is the fleet's business, tested elsewhere; the pages only need the rows.
    monkeypatch.setattr("fleet.publisher._request_publish", lambda: None)


@pytest.fixture
def cast(db, no_publish) -> Cast:
    org = Organization.objects.create(name="Acme", slug="acme")
    other = Organization.objects.create(name="Globex", slug="globex")
    users = {}
    for role in (Role.OWNER, Role.EDITOR, Role.VIEWER):
        users[str(role)] = User.objects.create_user(email=f"{role}@acme.test", password="correct horse battery")
        Membership.objects.create(organization=org, user=users[str(role)], role=role)
    users["outsider"] = User.objects.create_user(email="owner@globex.test", password="correct horse battery")
    Membership.objects.create(organization=other, user=users["outsider"], role=Role.OWNER)
    site = Site.objects.create(organization=org, name="Shop")
    Hostname.objects.create(organization=org, site=site, name="shop.acme.test")
    other_site = Site.objects.create(organization=other, name="Secret")
    Hostname.objects.create(organization=other, site=other_site, name="secret.globex.test")
    return Cast(
        org=org,
        other_org=other,
        site=site,
        other_site=other_site,
        backend=Backend.objects.create(organization=org, site=site, address="10.0.0.1", port=8080),
        route=Route.objects.create(organization=org, site=site, path_prefix="/api", pool="default"),
        policy=Policy.objects.create(organization=org, site=site, kind="cache", name="cache", settings={"default_ttl": 60}),
        users=users,
    )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's chromium, never a downloaded browser; as root it needs --no-sandbox."""
    import shutil

    return {
        **browser_type_launch_args,
        "executable_path": shutil.which("chromium") or "/usr/bin/chromium",
        "args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    }
