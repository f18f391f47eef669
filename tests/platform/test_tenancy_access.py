"""tenancy/access.py: who is acting and what they may do. The role matrices in the service tests
cover every service; these are the rules those rest on."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory
from django.utils import timezone
from edge import services as edge
from tenancy import services as tenancy
from tenancy.access import Actor, can, organizations_for, require
from tenancy.models import ApiToken, Organization, Role, TokenScope


def test_member_gets_their_role_and_a_stranger_gets_404(cast):
    assert require(cast.editor, cast.org, Role.VIEWER) == Role.EDITOR
    with pytest.raises(Http404):
        require(cast.outsider, cast.org, Role.VIEWER)


def test_role_below_the_need_gets_403_naming_both_roles(cast):
    with pytest.raises(PermissionDenied, match="needs the admin role; you have editor"):
        require(cast.editor, cast.org, Role.ADMIN)


def test_can_answers_without_raising(cast):
    assert can(cast.admin, cast.org, Role.EDITOR)
    assert not can(cast.viewer, cast.org, Role.EDITOR)
    assert not can(cast.outsider, cast.org, Role.VIEWER)


def test_an_anonymous_visitor_is_a_stranger(cast):
    anonymous = Actor.for_user(AnonymousUser())
    with pytest.raises(Http404):
        require(anonymous, cast.org)
    assert not organizations_for(anonymous).exists()


@pytest.fixture
def tokens(cast) -> dict[str, Actor]:
    made = {}
    for scope in TokenScope:
        row, _ = tenancy.token_create(actor=cast.admin, org=cast.org, name=f"{scope} bot", scope=scope)
        made[str(scope)] = Actor.for_token(row)
    return made


def test_read_token_acts_as_a_viewer(cast, tokens):
    assert require(tokens["read"], cast.org) == Role.VIEWER
    with pytest.raises(PermissionDenied):
        edge.site_create(actor=tokens["read"], org=cast.org, name="X", hostnames=["x.acme.test"])


def test_write_token_acts_as_an_editor(cast, tokens):
    assert require(tokens["write"], cast.org) == Role.EDITOR
    site = edge.site_create(actor=tokens["write"], org=cast.org, name="X", hostnames=["x.acme.test"])
    assert site.organization == cast.org


def test_write_token_cannot_manage_members_or_tokens(cast, tokens):
    token = tokens["write"]
    with pytest.raises(PermissionDenied):
        tenancy.token_create(actor=token, org=cast.org, name="more")
    with pytest.raises(PermissionDenied):
        tenancy.invitation_create(actor=token, org=cast.org, email="new@example.test")
    with pytest.raises(PermissionDenied):
        tenancy.token_revoke(actor=token, org=cast.org, token=tokens["read"].token)


@pytest.mark.parametrize("spoil", ["revoked", "expired"])
def test_a_dead_token_is_a_stranger(spoil, cast, tokens):
    row = tokens["write"].token
    if spoil == "revoked":
        row.revoked_at = timezone.now()
    else:
        row.expires_at = timezone.now() - dt.timedelta(seconds=1)
    with pytest.raises(Http404):
        require(Actor.for_token(row), cast.org)


def test_a_token_is_a_stranger_to_other_organizations(cast, tokens):
    with pytest.raises(Http404):
        require(tokens["write"], cast.other_org)
    assert list(organizations_for(tokens["write"])) == [cast.org]


def test_people_see_their_organizations_and_the_system_sees_all(cast):
    assert list(organizations_for(cast.viewer)) == [cast.org]
    assert list(organizations_for(cast.outsider)) == [cast.other_org]
    assert set(organizations_for(Actor.system())) == set(Organization.objects.all())
    assert require(Actor.system("renewal"), cast.org, Role.OWNER) == Role.OWNER


def test_actor_from_a_request_carries_ip_agent_and_request_id(cast):
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.5", HTTP_USER_AGENT="curl/8")
    request.user = cast.editor.user
    request.request_id = "abc12345"
    actor = Actor.from_request(request)
    assert (actor.kind, actor.user, actor.ip, actor.user_agent, actor.request_id) == (
        "user",
        cast.editor.user,
        "203.0.113.5",
        "curl/8",
        "abc12345",
    )


def test_actor_from_a_token_request_is_the_token(cast, tokens):
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.5")
    request.user = AnonymousUser()
    request.auth = tokens["read"].token
    actor = Actor.from_request(request)
    assert (actor.kind, actor.token) == ("token", tokens["read"].token)
    assert actor.display == f"API token read bot ({tokens['read'].token.lookup})"


def test_token_lookup_is_stored_in_clear_and_unique(cast, tokens):
    lookups = list(ApiToken.objects.values_list("lookup", flat=True))
    assert len(set(lookups)) == len(lookups) == 2
    assert all(len(lookup) == 12 for lookup in lookups)
