"""Who may call an endpoint, checked before the request body is even read.

Roles come from ``tenancy.access``: a stranger to the organization gets 404 (as if it did not
exist), a member whose role is too low gets 403. On a detail URL the role check runs after the
object lookup, so another organization's object is a 404 whatever the method and whoever asks.
The services check again inside their transactions; this early check is what makes a read-only
caller get 403 rather than a validation error about a body it may not send anyway.
"""

from __future__ import annotations

from rest_framework import permissions
from tenancy.access import require
from tenancy.models import ApiToken


def is_authenticated(request) -> bool:
    return isinstance(request.auth, ApiToken) or bool(request.user and request.user.is_authenticated)


class OrgRole(permissions.BasePermission):
    """Safe methods need the view's ``read_role``; the others the role ``view.write_role_for()``
    names for the action. On detail URLs the check waits for the object lookup."""

    def has_permission(self, request, view) -> bool:
        if not is_authenticated(request):
            return False
        org = getattr(view, "org", None)
        if org is not None and not view.detail:
            require(view.actor, org, self._needed(request, view))
        # No organization: the platform-level list of organizations, where the services decide.
        return True

    def has_object_permission(self, request, view, obj) -> bool:
        require(view.actor, view.org, self._needed(request, view))
        return True

    @staticmethod
    def _needed(request, view) -> str:
        if request.method in permissions.SAFE_METHODS:
            return view.read_role
        return view.write_role_for(view.action)
