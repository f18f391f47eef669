"""tenancy/services.py: organizations, members, invitations and API tokens.

Every org-scoped service is tried by every kind of actor: a stranger gets 404, a role too low
gets 403, and neither changes a single row; a permitted role succeeds with exactly one audit event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
from django.utils import timezone
from tenancy import services
from tenancy.access import Actor
from tenancy.models import ApiToken, Invitation, Membership, Organization, Role, TokenScope, User

from .actors import permitted, too_low


@pytest.fixture
def world(cast) -> SimpleNamespace:
    """Things in cast.org for the services to act on."""
    target = User.objects.create_user(email="target@acme.test")
    membership = Membership.objects.create(organization=cast.org, user=target, role=Role.VIEWER)
    invitation = Invitation.objects.create(
        organization=cast.org,
        email="invitee@example.test",
        role=Role.VIEWER,
        token_hash="0" * 64,
        expires_at=timezone.now() + dt.timedelta(days=7),
    )
    _, lookup, token_hash = ApiToken.generate()
    token = ApiToken.objects.create(organization=cast.org, name="deploy", lookup=lookup, token_hash=token_hash)
    return SimpleNamespace(membership=membership, invitation=invitation, token=token)


@dataclass(frozen=True)
class Case:
    service: str
    needs: str  # the lowest role allowed
    action: str  # the audit action it records
    call: Callable[[Actor, Organization, SimpleNamespace], Any]
    done: Callable[[SimpleNamespace], bool]  # the change really happened
    takes_object: bool = True  # hands the service an object that belongs to the organization

    def __str__(self) -> str:
        return self.service


CASES = [
    Case(
        "organization_rename",
        Role.ADMIN,
        "organization.rename",
        lambda a, org, w: services.organization_rename(actor=a, org=org, name="Acme Corp"),
        lambda w: Organization.objects.get(slug="acme").name == "Acme Corp",
        takes_object=False,
    ),
    Case(
        "membership_set_role",
        Role.ADMIN,
        "member.role",
        lambda a, org, w: services.membership_set_role(actor=a, org=org, membership=w.membership, role=Role.EDITOR),
        lambda w: Membership.objects.get(pk=w.membership.pk).role == Role.EDITOR,
    ),
    Case(
        "membership_remove",
        Role.ADMIN,
        "member.remove",
        lambda a, org, w: services.membership_remove(actor=a, org=org, membership=w.membership),
        lambda w: not Membership.objects.filter(pk=w.membership.pk).exists(),
    ),
    Case(
        "owner_transfer",
        Role.OWNER,
        "organization.transfer",
        lambda a, org, w: services.owner_transfer(actor=a, org=org, to=w.membership),
        lambda w: Membership.objects.get(pk=w.membership.pk).role == Role.OWNER,
    ),
    Case(
        "invitation_create",
        Role.ADMIN,
        "invitation.create",
        lambda a, org, w: services.invitation_create(actor=a, org=org, email="New@Example.test", role=Role.EDITOR),
        lambda w: Invitation.objects.filter(email="new@example.test", role=Role.EDITOR).exists(),
        takes_object=False,
    ),
    Case(
        "invitation_revoke",
        Role.ADMIN,
        "invitation.revoke",
        lambda a, org, w: services.invitation_revoke(actor=a, org=org, invitation=w.invitation),
        lambda w: Invitation.objects.get(pk=w.invitation.pk).revoked_at is not None,
    ),
    Case(
        "token_create",
        Role.ADMIN,
        "token.create",
        lambda a, org, w: services.token_create(actor=a, org=org, name="ci", scope=TokenScope.WRITE),
        lambda w: ApiToken.objects.filter(name="ci", scope=TokenScope.WRITE).exists(),
        takes_object=False,
    ),
    Case(
        "token_revoke",
        Role.ADMIN,
        "token.revoke",
        lambda a, org, w: services.token_revoke(actor=a, org=org, token=w.token),
        lambda w: ApiToken.objects.get(pk=w.token.pk).revoked_at is not None,
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


# --- who may do what --------------------------------------------------------------------------


def test_the_unchanged_check_sees_any_change(cast, world, db_state):
    """The refused-call tests compare db_state before and after: it must notice a single field."""
    before = db_state()
    Organization.objects.filter(pk=cast.org.pk).update(audit_head_seq=1)
    assert db_state() != before
    Organization.objects.filter(pk=cast.org.pk).update(audit_head_seq=0)
    assert db_state() == before
    Membership.objects.filter(pk=world.membership.pk).update(role=Role.EDITOR)
    assert db_state() != before


@pytest.mark.parametrize("case", CASES, ids=str)
def test_outsider_gets_404(case, cast, world, db_state):
    before = db_state()
    with pytest.raises(Http404):
        case.call(cast.outsider, cast.org, world)
    assert db_state() == before


@pytest.mark.parametrize("case", [c for c in CASES if c.takes_object], ids=str)
def test_outsider_cannot_reach_our_objects_through_their_own_org(case, cast, world, db_state):
    before = db_state()
    with pytest.raises(Http404):
        case.call(cast.outsider, cast.other_org, world)
    assert db_state() == before


@pytest.mark.parametrize(("case", "who"), TOO_LOW, ids=[f"{c}-{w}" for c, w in TOO_LOW])
def test_role_too_low_gets_403(case, who, cast, world, actor_named, db_state):
    actor = actor_named(who)
    before = db_state()
    with pytest.raises(PermissionDenied):
        case.call(actor, cast.org, world)
    assert db_state() == before


@pytest.mark.parametrize(("case", "who"), PERMITTED, ids=[f"{c}-{w}" for c, w in PERMITTED])
def test_permitted_role_succeeds_with_one_audit_event(case, who, cast, world, actor_named):
    actor = actor_named(who)
    seen = set(AuditEvent.objects.values_list("pk", flat=True))
    case.call(actor, cast.org, world)
    assert case.done(world)
    (event,) = AuditEvent.objects.exclude(pk__in=seen)
    assert event.organization_id == cast.org.pk
    assert event.action == case.action
    target_type = {"member": "membership", "token": "apitoken"}.get(case.action.split(".")[0], case.action.split(".")[0])
    assert event.target_type == target_type and event.target_id and event.target_repr
    assert event.changes  # what changed, before and after
    assert (event.actor_kind, event.actor_user, event.actor_name) == ("user", actor.user, actor.user.email)
    assert (event.ip, event.user_agent, event.request_id) == ("192.0.2.10", "pytest", "req-test-0001")
    assert verify_chain(cast.org) == []


@pytest.mark.parametrize("case", CASES, ids=str)
def test_change_and_audit_event_commit_together(case, cast, world, db_state, monkeypatch):
    """If the audit event cannot be written, the change is not written either."""

    def broken_record(**kwargs):
        raise RuntimeError("audit storage is down")

    monkeypatch.setattr(services, "record", broken_record)
    before = db_state()
    with pytest.raises(RuntimeError, match="audit storage is down"):
        case.call(cast.owner, cast.org, world)
    assert db_state() == before


@pytest.mark.parametrize("who", ["viewer", "read_token", "write_token", "admin"])
def test_only_owners_and_admins_manage_tokens_and_tokens_never_make_tokens(who, cast, actor_named):
    if who == "admin":
        services.token_create(actor=actor_named(who), org=cast.org, name="ok")
    else:
        with pytest.raises(PermissionDenied):
            services.token_create(actor=actor_named(who), org=cast.org, name="nope")


# --- organizations ------------------------------------------------------------------------------


def test_any_signed_in_person_creates_an_organization_and_owns_it(cast):
    org = services.organization_create(actor=cast.viewer, name="Viewer's Own Shop")
    assert org.slug == "viewers-own-shop"
    assert Membership.objects.get(organization=org).user == cast.viewer.user
    assert Membership.objects.get(organization=org).role == Role.OWNER
    (event,) = AuditEvent.objects.filter(organization=org)
    assert event.action == "organization.create"
    assert event.changes == {"name": [None, "Viewer's Own Shop"], "slug": [None, "viewers-own-shop"]}


def test_organization_slugs_stay_unique(cast):
    first = services.organization_create(actor=cast.viewer, name="Acme")
    second = services.organization_create(actor=cast.editor, name="Acme")
    assert (first.slug, second.slug) == ("acme-2", "acme-3")  # "acme" is cast.org


@pytest.mark.parametrize("kind", ["token", "system"])
def test_only_a_person_can_create_an_organization(kind, cast, actor_named, db_state):
    actor = actor_named("write_token") if kind == "token" else Actor.system("cron")
    before = db_state()
    with pytest.raises(PermissionDenied):
        services.organization_create(actor=actor, name="Robots Inc")
    assert db_state() == before


def test_a_blank_name_is_rejected_without_an_audit_event(cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.organization_rename(actor=cast.owner, org=cast.org, name="   ")
    assert "name" in exc.value.message_dict
    assert db_state() == before


def test_rename_records_before_and_after(cast):
    services.organization_rename(actor=cast.admin, org=cast.org, name="Acme Corp")
    event = AuditEvent.objects.get(action="organization.rename")
    assert event.changes == {"name": ["Acme", "Acme Corp"]}
    assert (event.target_type, event.target_id) == ("organization", str(cast.org.pk))


# --- members ------------------------------------------------------------------------------------


def _membership(cast, actor: Actor) -> Membership:
    return Membership.objects.get(organization=cast.org, user=actor.user)


def test_role_change_is_audited_with_before_and_after(cast):
    editor = _membership(cast, cast.editor)
    services.membership_set_role(actor=cast.admin, org=cast.org, membership=editor, role=Role.VIEWER)
    event = AuditEvent.objects.get(action="member.role")
    assert event.changes == {"role": ["editor", "viewer"]}
    assert (event.target_type, event.target_id) == ("membership", str(editor.pk))


def test_unknown_role_is_rejected(cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.membership_set_role(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.viewer), role="god")
    assert "role" in exc.value.message_dict
    assert db_state() == before


def test_admin_cannot_make_an_owner(cast, db_state):
    before = db_state()
    with pytest.raises(PermissionDenied):
        services.membership_set_role(actor=cast.admin, org=cast.org, membership=_membership(cast, cast.editor), role=Role.OWNER)
    assert db_state() == before


def test_admin_cannot_demote_or_remove_an_owner(cast, db_state):
    owner = _membership(cast, cast.owner)
    before = db_state()
    with pytest.raises(PermissionDenied):
        services.membership_set_role(actor=cast.admin, org=cast.org, membership=owner, role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        services.membership_remove(actor=cast.admin, org=cast.org, membership=owner)
    assert db_state() == before


def test_owner_can_make_another_owner(cast):
    services.membership_set_role(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.admin), role=Role.OWNER)
    assert _membership(cast, cast.admin).role == Role.OWNER


def test_last_owner_cannot_be_demoted(cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.membership_set_role(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.owner), role=Role.ADMIN)
    assert "at least one owner" in exc.value.message_dict["role"][0]
    assert db_state() == before


def test_last_owner_cannot_leave(cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.membership_remove(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.owner))
    assert "last owner" in exc.value.message_dict["role"][0]
    assert db_state() == before


def test_an_owner_can_leave_when_another_owner_remains(cast):
    services.membership_set_role(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.admin), role=Role.OWNER)
    services.membership_remove(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.owner))
    assert not Membership.objects.filter(organization=cast.org, user=cast.owner.user).exists()
    assert list(Membership.objects.filter(organization=cast.org, role=Role.OWNER).values_list("user__email", flat=True)) == [
        "admin@acme.test"
    ]


def test_any_member_can_leave(cast):
    services.membership_remove(actor=cast.viewer, org=cast.org, membership=_membership(cast, cast.viewer))
    assert not Membership.objects.filter(organization=cast.org, user=cast.viewer.user).exists()
    event = AuditEvent.objects.get(organization=cast.org)
    assert event.action == "member.leave"
    assert event.changes == {"role": ["viewer", None], "user": ["viewer@acme.test", None]}


def test_viewer_cannot_remove_someone_else(cast, db_state):
    before = db_state()
    with pytest.raises(PermissionDenied):
        services.membership_remove(actor=cast.viewer, org=cast.org, membership=_membership(cast, cast.editor))
    assert db_state() == before


def test_owner_transfer_swaps_roles(cast):
    services.owner_transfer(actor=cast.owner, org=cast.org, to=_membership(cast, cast.editor))
    assert _membership(cast, cast.editor).role == Role.OWNER
    assert _membership(cast, cast.owner).role == Role.ADMIN
    event = AuditEvent.objects.get(action="organization.transfer")
    assert event.changes == {"owner": [None, "editor@acme.test"]}


def test_owner_transfer_to_yourself_is_refused_and_keeps_the_owner(cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError):
        services.owner_transfer(actor=cast.owner, org=cast.org, to=_membership(cast, cast.owner))
    assert db_state() == before
    assert _membership(cast, cast.owner).role == Role.OWNER


def test_the_system_cannot_transfer_ownership(cast, db_state):
    before = db_state()
    with pytest.raises(PermissionDenied):
        services.owner_transfer(actor=Actor.system("migration"), org=cast.org, to=_membership(cast, cast.editor))
    assert db_state() == before


# --- invitations ---------------------------------------------------------------------------------


@pytest.fixture
def invitee(cast) -> User:
    return User.objects.create_user(email="new@example.test")


def test_invitation_is_accepted_by_the_invited_address(cast, invitee):
    invitation, token = services.invitation_create(actor=cast.admin, org=cast.org, email="NEW@example.test", role=Role.EDITOR)
    assert invitation.email == "new@example.test"
    membership = services.invitation_accept(user=invitee, token=token)
    assert (membership.organization, membership.user, membership.role) == (cast.org, invitee, Role.EDITOR)
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None and not invitation.is_pending
    event = AuditEvent.objects.get(action="invitation.accept")
    assert (event.actor_kind, event.actor_user, event.actor_name) == ("user", invitee, "new@example.test")
    assert verify_chain(cast.org) == []


def test_invitation_token_is_stored_only_as_a_hash(cast):
    invitation, token = services.invitation_create(actor=cast.admin, org=cast.org, email="new@example.test")
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(list(Invitation.objects.values()))
    assert token not in str(list(AuditEvent.objects.values()))


def test_invitation_for_another_address_is_refused(cast, db_state):
    _, token = services.invitation_create(actor=cast.admin, org=cast.org, email="new@example.test")
    someone = User.objects.create_user(email="someone@example.test")
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.invitation_accept(user=someone, token=token)
    assert "new@example.test" in exc.value.message_dict["token"][0]
    assert db_state() == before


@pytest.mark.parametrize("spoil", ["revoked", "expired", "accepted", "wrong_token"])
def test_spoiled_invitation_cannot_be_accepted(spoil, cast, invitee, db_state):
    invitation, token = services.invitation_create(actor=cast.admin, org=cast.org, email="new@example.test")
    if spoil == "revoked":
        services.invitation_revoke(actor=cast.admin, org=cast.org, invitation=invitation)
    elif spoil == "expired":
        Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    elif spoil == "accepted":
        services.invitation_accept(user=invitee, token=token)
        Membership.objects.filter(user=invitee).delete()
    else:
        token = token[:-2] + "xx"
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.invitation_accept(user=invitee, token=token)
    assert "token" in exc.value.message_dict
    assert db_state() == before
    assert not Membership.objects.filter(user=invitee).exists()


def test_only_an_owner_can_invite_an_owner(cast):
    with pytest.raises(PermissionDenied):
        services.invitation_create(actor=cast.admin, org=cast.org, email="boss@example.test", role=Role.OWNER)
    invitation, _ = services.invitation_create(actor=cast.owner, org=cast.org, email="boss@example.test", role=Role.OWNER)
    assert invitation.role == Role.OWNER


@pytest.mark.parametrize(
    ("email", "role", "field"),
    [("not-an-address", Role.VIEWER, "email"), ("viewer@acme.test", Role.VIEWER, "email"), ("x@example.test", "god", "role")],
    ids=["bad_address", "already_member", "unknown_role"],
)
def test_bad_invitation_is_rejected_with_the_field(email, role, field, cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.invitation_create(actor=cast.owner, org=cast.org, email=email, role=role)
    assert field in exc.value.message_dict
    assert db_state() == before


# --- API tokens ----------------------------------------------------------------------------------


def test_token_is_stored_hashed_with_a_lookup_prefix(cast):
    row, raw = services.token_create(actor=cast.admin, org=cast.org, name="ci", scope=TokenScope.WRITE)
    assert raw.startswith(f"pt_{row.lookup}_")
    assert row.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    secret = raw.split("_", 2)[2]
    stored = str(list(ApiToken.objects.filter(pk=row.pk).values()))
    assert raw not in stored and secret not in stored


def test_good_token_authenticates_and_is_marked_used(cast):
    row, raw = services.token_create(actor=cast.admin, org=cast.org, name="ci")
    assert row.last_used_at is None
    found = services.token_authenticate(raw)
    assert found == row and found.organization == cast.org
    row.refresh_from_db()
    assert row.last_used_at is not None and timezone.now() - row.last_used_at < dt.timedelta(seconds=5)


def test_last_used_is_written_at_most_once_a_minute(cast):
    row, raw = services.token_create(actor=cast.admin, org=cast.org, name="ci")
    recent = timezone.now() - dt.timedelta(seconds=30)
    stale = timezone.now() - dt.timedelta(minutes=5)
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=recent)
    services.token_authenticate(raw)
    row.refresh_from_db()
    assert row.last_used_at == recent
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=stale)
    services.token_authenticate(raw)
    row.refresh_from_db()
    assert row.last_used_at > stale


@pytest.mark.parametrize("spoil", ["wrong_secret", "revoked", "expired", "unknown_lookup", "no_prefix", "empty"])
def test_bad_token_is_rejected(spoil, cast):
    row, raw = services.token_create(actor=cast.admin, org=cast.org, name="ci")
    if spoil == "wrong_secret":
        raw = raw[:-4] + ("aaaa" if not raw.endswith("aaaa") else "bbbb")
    elif spoil == "revoked":
        services.token_revoke(actor=cast.admin, org=cast.org, token=row)
    elif spoil == "expired":
        ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    elif spoil == "unknown_lookup":
        raw = "pt_000000000000_" + raw.split("_", 2)[2]
    elif spoil == "no_prefix":
        raw = raw[3:]
    else:
        raw = ""
    assert services.token_authenticate(raw) is None
    row.refresh_from_db()
    assert row.last_used_at is None


def test_token_with_an_expiry_in_the_past_cannot_be_created(cast, db_state):
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        services.token_create(actor=cast.admin, org=cast.org, name="old", expires_at=timezone.now() - dt.timedelta(days=1))
    assert "expires_at" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        services.token_create(actor=cast.admin, org=cast.org, name="odd", scope="admin")
    assert "scope" in exc.value.message_dict
    assert db_state() == before


def test_token_expiring_later_works_until_then(cast):
    row, raw = services.token_create(actor=cast.admin, org=cast.org, name="ci", expires_at=timezone.now() + dt.timedelta(hours=1))
    assert services.token_authenticate(raw) == row
    event = AuditEvent.objects.get(action="token.create")
    assert event.changes["expires_at"][1] == row.expires_at.isoformat()


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(cast):
    """A second owner's demotion of the first waits for the first's demotion of the second."""
    services.membership_set_role(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.admin), role=Role.OWNER)
    second_owner = Actor.for_user(cast.admin.user)
    outcome: list[BaseException | None] = []

    def demote_first_owner() -> None:
        try:
            services.membership_set_role(actor=second_owner, org=cast.org, membership=_membership(cast, cast.owner), role=Role.ADMIN)
            outcome.append(None)
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)
        finally:
            connection.close()

    with transaction.atomic():
        services.membership_set_role(actor=cast.owner, org=cast.org, membership=_membership(cast, cast.admin), role=Role.ADMIN)
        rival = threading.Thread(target=demote_first_owner)
        rival.start()
        rival.join(timeout=0.5)  # with the lock it waits for this commit; without it, it races ahead
    rival.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], ValidationError)
    assert Membership.objects.filter(organization=cast.org, role=Role.OWNER).count() == 1
    assert verify_chain(cast.org) == []


def test_a_member_who_leaves_takes_their_tokens_with_them(cast):
    admin = Membership.objects.get(organization=cast.org, user=cast.admin.user)
    token, raw = services.token_create(actor=cast.admin, org=cast.org, name="ci", scope=TokenScope.WRITE)
    kept, kept_raw = services.token_create(actor=cast.owner, org=cast.org, name="owner's", scope=TokenScope.READ)
    assert services.token_authenticate(raw) is not None

    services.membership_remove(actor=cast.owner, org=cast.org, membership=admin)

    assert services.token_authenticate(raw) is None
    assert services.token_authenticate(kept_raw) is not None
    revoke = AuditEvent.objects.get(organization=cast.org, action="token.revoke")
    assert revoke.target_id == str(token.pk)
    assert revoke.changes["reason"] == [None, "creator left the organization"]
    assert verify_chain(cast.org) == []
