"""The owner / editor / viewer / outsider cast every control-plane test draws on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tenancy.access import Actor
from tenancy.models import Membership, Organization, Role, User


@dataclass
class Cast:
    org: Organization
    other_org: Organization
    owner: Actor
    admin: Actor
    editor: Actor
    viewer: Actor
    outsider: Actor  # owner of other_org, stranger to org


def _user(email: str) -> User:
    return User.objects.create_user(email=email, password="correct horse battery")


@pytest.fixture
def cast(db) -> Cast:
    org = Organization.objects.create(name="Acme", slug="acme")
    other = Organization.objects.create(name="Globex", slug="globex")
    actors = {}
    for role in (Role.OWNER, Role.ADMIN, Role.EDITOR, Role.VIEWER):
        user = _user(f"{role}@acme.test")
        Membership.objects.create(organization=org, user=user, role=role)
        actors[str(role)] = Actor.for_user(user, ip="192.0.2.10", user_agent="pytest", request_id="req-test-0001")
    stranger = _user("owner@globex.test")
    Membership.objects.create(organization=other, user=stranger, role=Role.OWNER)
    return Cast(org=org, other_org=other, outsider=Actor.for_user(stranger), **actors)
