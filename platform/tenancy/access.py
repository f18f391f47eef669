"""Who is acting, and what they may do in an organization.

Every service takes an ``Actor`` and calls ``require(actor, org, role)`` first. A stranger to the
organization gets ``Http404`` (the same answer as "does not exist", so organizations cannot be
probed); a member whose role is too low gets ``PermissionDenied``. DRF and Django views turn both
into 404 and 403 responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import ROLE_RANK, TOKEN_ROLE, Membership, Organization, Role

if TYPE_CHECKING:
    from .models import ApiToken, User


@dataclass(frozen=True)
class Actor:
    kind: Literal["user", "token", "system"]
    user: User | None = None
    token: ApiToken | None = None
    ip: str | None = None
    user_agent: str = ""
    request_id: str = ""
    _roles: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def system(cls, reason: str = "") -> Actor:
        return cls(kind="system", user_agent=reason)

    @classmethod
    def for_user(cls, user: User, *, ip: str | None = None, user_agent: str = "", request_id: str = "") -> Actor:
        return cls(kind="user", user=user, ip=ip, user_agent=user_agent, request_id=request_id)

    @classmethod
    def for_token(
        cls, token: ApiToken, *, ip: str | None = None, user_agent: str = "", request_id: str = ""
    ) -> Actor:
        return cls(kind="token", token=token, ip=ip, user_agent=user_agent, request_id=request_id)

    @classmethod
    def from_request(cls, request) -> Actor:
        """The actor behind an HTTP request: an API token if the request used one, else the user."""
        meta = dict(
            ip=getattr(request, "client_ip", None) or request.META.get("REMOTE_ADDR"),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:300],
            request_id=getattr(request, "request_id", ""),
        )
        from .models import ApiToken

        token = getattr(request, "auth", None)  # set by the API's token authentication
        if isinstance(token, ApiToken):
            return cls.for_token(token, **meta)
        return cls.for_user(request.user, **meta)

    @property
    def display(self) -> str:
        if self.kind == "user" and self.user is not None:
            return self.user.email
        if self.kind == "token" and self.token is not None:
            return f"API token {self.token.name} ({self.token.lookup})"
        return f"system{': ' + self.user_agent if self.user_agent else ''}"

    def role_in(self, org: Organization) -> str | None:
        if self.kind == "system":
            return Role.OWNER
        if self.kind == "token":
            token = self.token
            if token is None or token.organization_id != org.pk or not token.is_active:
                return None
            return TOKEN_ROLE[token.scope]
        if self.user is None or not self.user.is_authenticated:
            return None
        if org.pk not in self._roles:
            self._roles[org.pk] = (
                Membership.objects.filter(organization=org, user=self.user).values_list("role", flat=True).first()
            )
        return self._roles[org.pk]


def require(actor: Actor, org: Organization, role: str = Role.VIEWER) -> str:
    """Return the actor's role in ``org``; 404 for strangers, 403 for a role below ``role``."""
    have = actor.role_in(org)
    if have is None:
        raise Http404("No such organization.")
    if ROLE_RANK[have] < ROLE_RANK[role]:
        raise PermissionDenied(f"This needs the {role} role; you have {have}.")
    return have


def ensure_in_org(obj, org: Organization) -> None:
    """Services re-check that an object handed to them belongs to the organization acted on."""
    if obj.organization_id != org.pk:
        raise Http404("Not found.")


def can(actor: Actor, org: Organization, role: str) -> bool:
    have = actor.role_in(org)
    return have is not None and ROLE_RANK[have] >= ROLE_RANK[role]


def organizations_for(actor: Actor):
    """The organizations an actor can see at all."""
    if actor.kind == "system":
        return Organization.objects.all()
    if actor.kind == "token":
        return Organization.objects.filter(pk=actor.token.organization_id) if actor.token else Organization.objects.none()
    if actor.user is None or not actor.user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=actor.user)
