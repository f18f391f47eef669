"""Every change to organizations, members, invitations and API tokens. Each function checks the
actor's role, writes in one transaction and records an audit event in it."""

from __future__ import annotations

import datetime as dt
import secrets

from audit.services import record
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from .access import Actor, ensure_in_org, require
from .models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Role,
    TokenScope,
    User,
    _hash_secret,
)

INVITATION_DAYS = 7


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def organization_create(*, actor: Actor, name: str) -> Organization:
    """Create an organization with the acting user as its owner."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A name is required."})
    if actor.kind != "user" or actor.user is None:
        raise PermissionDenied("Only a signed-in person can create an organization.")
    with transaction.atomic():
        org = Organization.objects.create(name=name, slug=_unique_slug(name))
        Membership.objects.create(organization=org, user=actor.user, role=Role.OWNER)
        record(org=org, actor=actor, action="organization.create", target=org, after={"name": name, "slug": org.slug})
    return org


def organization_rename(*, actor: Actor, org: Organization, name: str) -> Organization:
    require(actor, org, Role.ADMIN)
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A name is required."})
    with transaction.atomic():
        before = {"name": org.name}
        org.name = name
        org.save(update_fields=["name"])
        record(org=org, actor=actor, action="organization.rename", target=org, before=before, after={"name": name})
    return org


def _owner_count(org: Organization) -> int:
    # Lock the organization row before counting: two owners demoting (or removing) each other at
    # the same time would otherwise both count two owners and leave the organization with none.
    Organization.objects.select_for_update().only("pk").get(pk=org.pk)
    return Membership.objects.filter(organization=org, role=Role.OWNER).count()


def membership_set_role(*, actor: Actor, org: Organization, membership: Membership, role: str) -> Membership:
    have = require(actor, org, Role.ADMIN)
    ensure_in_org(membership, org)
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; use one of {', '.join(Role.values)}."})
    # Only owners make or unmake owners.
    if Role.OWNER in (role, membership.role) and have != Role.OWNER:
        raise PermissionDenied("Only an owner can grant or take away the owner role.")
    with transaction.atomic():
        if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(org) <= 1:
            raise ValidationError({"role": "An organization needs at least one owner; make someone else owner first."})
        before = {"role": membership.role}
        membership.role = role
        membership.save(update_fields=["role"])
        record(
            org=org, actor=actor, action="member.role", target=membership, before=before, after={"role": role}
        )
    return membership


def membership_remove(*, actor: Actor, org: Organization, membership: Membership) -> None:
    """Remove a member; any member may remove themselves (leave)."""
    leaving = actor.kind == "user" and actor.user is not None and membership.user_id == actor.user.pk
    have = require(actor, org, Role.VIEWER if leaving else Role.ADMIN)
    ensure_in_org(membership, org)
    if membership.role == Role.OWNER and not leaving and have != Role.OWNER:
        raise PermissionDenied("Only an owner can remove an owner.")
    with transaction.atomic():
        if membership.role == Role.OWNER and _owner_count(org) <= 1:
            raise ValidationError({"role": "The last owner cannot leave; transfer ownership first."})
        record(
            org=org,
            actor=actor,
            action="member.leave" if leaving else "member.remove",
            target=membership,
            before={"user": membership.user.email, "role": membership.role},
        )
        # A person who leaves takes their API tokens with them: a token must not outlive the
        # membership that allowed creating it.
        tokens = ApiToken.objects.filter(organization=org, created_by_id=membership.user_id, revoked_at__isnull=True)
        for token in tokens:
            record(org=org, actor=actor, action="token.revoke", target=token,
                   before={"name": token.name}, after={"reason": "creator left the organization"})
        tokens.update(revoked_at=timezone.now())
        membership.delete()


def owner_transfer(*, actor: Actor, org: Organization, to: Membership) -> None:
    """Make ``to`` an owner and the acting owner an admin."""
    require(actor, org, Role.OWNER)
    ensure_in_org(to, org)
    if actor.kind != "user" or actor.user is None:
        raise PermissionDenied("Only an owner who is a person can hand over ownership.")
    if to.user_id == actor.user.pk:
        # Without this the one row would be saved as owner, then as admin: no owner left.
        raise ValidationError({"to": "You are already an owner; choose another member."})
    with transaction.atomic():
        mine = Membership.objects.select_for_update().get(organization=org, user=actor.user)
        to.role, mine.role = Role.OWNER, Role.ADMIN
        to.save(update_fields=["role"])
        mine.save(update_fields=["role"])
        record(org=org, actor=actor, action="organization.transfer", target=org, after={"owner": to.user.email})


def invitation_create(*, actor: Actor, org: Organization, email: str, role: str = Role.VIEWER) -> tuple[Invitation, str]:
    """Invite an email address. Returns the invitation and its one-time token (for the link)."""
    have = require(actor, org, Role.ADMIN)
    email = email.strip().lower()
    if "@" not in email:
        raise ValidationError({"email": "Enter a valid email address."})
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; use one of {', '.join(Role.values)}."})
    if role == Role.OWNER and have != Role.OWNER:
        raise PermissionDenied("Only an owner can invite an owner.")
    if Membership.objects.filter(organization=org, user__email=email).exists():
        raise ValidationError({"email": f"{email} is already a member."})
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        inv = Invitation.objects.create(
            organization=org,
            email=email,
            role=role,
            token_hash=_hash_secret(token),
            invited_by=actor.user,
            expires_at=timezone.now() + dt.timedelta(days=INVITATION_DAYS),
        )
        record(org=org, actor=actor, action="invitation.create", target=inv, after={"email": email, "role": role})
    return inv, token


def invitation_revoke(*, actor: Actor, org: Organization, invitation: Invitation) -> None:
    require(actor, org, Role.ADMIN)
    ensure_in_org(invitation, org)
    with transaction.atomic():
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        record(org=org, actor=actor, action="invitation.revoke", target=invitation, before={"email": invitation.email})


def invitation_accept(*, user: User, token: str) -> Membership:
    """Accept an invitation with the token from its link; the invited email must be the user's."""
    inv = Invitation.objects.filter(token_hash=_hash_secret(token)).select_related("organization").first()
    if inv is None or not inv.is_pending:
        raise ValidationError({"token": "This invitation does not exist, has expired or was already used."})
    if inv.email != user.email.lower():
        raise ValidationError({"token": f"This invitation is for {inv.email}; sign in with that address."})
    actor = Actor.for_user(user)
    with transaction.atomic():
        inv.accepted_at = timezone.now()
        inv.save(update_fields=["accepted_at"])
        membership, _ = Membership.objects.get_or_create(
            organization=inv.organization, user=user, defaults={"role": inv.role}
        )
        record(org=inv.organization, actor=actor, action="invitation.accept", target=membership, after={"role": inv.role})
    return membership


def token_create(
    *,
    actor: Actor,
    org: Organization,
    name: str,
    scope: str = TokenScope.READ,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create an API token. Returns the row and the token, which is shown once and never stored."""
    require(actor, org, Role.ADMIN)
    if actor.kind == "token":
        raise PermissionDenied("API tokens cannot create API tokens.")
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A name is required."})
    if scope not in TokenScope.values:
        raise ValidationError({"scope": f"Unknown scope {scope!r}; use read or write."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    token, lookup, token_hash = ApiToken.generate()
    with transaction.atomic():
        row = ApiToken.objects.create(
            organization=org,
            name=name,
            lookup=lookup,
            token_hash=token_hash,
            scope=scope,
            created_by=actor.user,
            expires_at=expires_at,
        )
        record(
            org=org,
            actor=actor,
            action="token.create",
            target=row,
            after={"name": name, "scope": scope, "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return row, token


def token_revoke(*, actor: Actor, org: Organization, token: ApiToken) -> None:
    require(actor, org, Role.ADMIN)
    ensure_in_org(token, org)
    with transaction.atomic():
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record(org=org, actor=actor, action="token.revoke", target=token, before={"name": token.name})


def token_authenticate(raw: str) -> ApiToken | None:
    """The active token for a presented ``pt_<lookup>_<secret>`` string, or None.

    Updates ``last_used_at`` at most once a minute per token, so that busy automation does not
    turn every read into a write.
    """
    if not raw.startswith("pt_"):
        return None
    lookup = raw[3:].split("_", 1)[0]
    token = ApiToken.objects.filter(lookup=lookup).select_related("organization").first()
    if token is None or not token.matches(raw) or not token.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
