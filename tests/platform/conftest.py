"""The owner / editor / viewer / outsider cast every control-plane test draws on."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.db import connection
from tenancy.access import Actor
from tenancy.models import ApiToken, Membership, Organization, Role, TokenScope, User


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


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Django's default PBKDF2 costs ~0.4 s per user; the cast alone would make every test slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


def _token_actor(org: Organization, scope: str) -> Actor:
    token, lookup, token_hash = ApiToken.generate()
    row = ApiToken.objects.create(organization=org, name=f"{scope} bot", lookup=lookup, token_hash=token_hash, scope=scope)
    return Actor.for_token(row, ip="198.51.100.7", user_agent="portico-cli/1.0", request_id="req-token-0001")


@pytest.fixture
def actor_named(cast) -> Callable[[str], Actor]:
    """An actor by name: a cast member, or "read_token" / "write_token" (API tokens of cast.org)."""
    made: dict[str, Actor] = {}

    def get(name: str) -> Actor:
        if name not in made:
            if name == "read_token":
                made[name] = _token_actor(cast.org, TokenScope.READ)
            elif name == "write_token":
                made[name] = _token_actor(cast.org, TokenScope.WRITE)
            else:
                made[name] = getattr(cast, name)
        return made[name]

    return get


_STATE_APPS = ("tenancy", "audit", "edge", "certs", "fleet")


@pytest.fixture
def db_state(db) -> Callable[[], dict[str, str]]:
    """A digest of every row the control plane owns, per table: equal digests, nothing changed."""
    tables = sorted(model._meta.db_table for app in _STATE_APPS for model in apps.get_app_config(app).get_models())

    def dump() -> dict[str, str]:
        if connection.vendor == "postgresql":
            # One query for all tables: these checks run in hundreds of tests.
            sql = " UNION ALL ".join(
                f"SELECT '{table}', md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM {connection.ops.quote_name(table)} r"
                for table in tables
            )
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return dict(cursor.fetchall())
        return {
            model._meta.db_table: json.dumps(list(model.objects.order_by("pk").values()), sort_keys=True, default=str)
            for app in _STATE_APPS
            for model in apps.get_app_config(app).get_models()
        }

    return dump
