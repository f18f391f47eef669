"""The one view base every organization page uses.

It resolves the organization from the URL, answers 404 to anyone who is not a member (the same
answer as "no such organization"), computes the member's role, refuses writes from a role that is
too low with 403 before any form is read, and hands templates ``can_write`` / ``can_admin`` so
read-only members see no write buttons. Querysets come from ``scoped()``, which filters by the
organization, so a page cannot forget the tenant.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views import View
from tenancy.access import Actor, organizations_for, require
from tenancy.models import ROLE_RANK, Organization, Role


class OrgView(LoginRequiredMixin, View):
    # The role a POST needs. Services check again; this refuses before any input is parsed.
    write_role: str = Role.EDITOR
    # Pages that are only a write form (create, confirm delete): reading them needs write_role too.
    form_only: bool = False

    org: Organization
    actor: Actor
    role: str

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        slug = kwargs.pop("org_slug")
        self.actor = Actor.from_request(request)
        self.org = Organization.objects.filter(slug=slug).first()
        if self.org is None:
            raise Http404("No such organization.")
        self.role = require(self.actor, self.org)  # Http404 for strangers
        writes = self.form_only or request.method not in ("GET", "HEAD", "OPTIONS")
        if writes and not self.has_role(self.write_role):
            raise PermissionDenied(f"This needs the {self.write_role} role; you have {self.role}.")
        request.session["portico_org"] = self.org.slug
        return super().dispatch(request, *args, **kwargs)

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def scoped(self, model):
        """``model``'s rows of this organization only."""
        return model.objects.for_org(self.org)

    def get_scoped(self, model, **lookup):
        return get_object_or_404(self.scoped(model), **lookup)

    def context(self, **extra: Any) -> dict[str, Any]:
        return {
            "org": self.org,
            "role": self.role,
            "can_write": self.has_role(Role.EDITOR),
            "can_admin": self.has_role(Role.ADMIN),
            "is_owner": self.role == Role.OWNER,
            "my_orgs": organizations_for(self.actor).order_by("name"),
            **extra,
        }

    def page(self, template: str, status: int = 200, **extra: Any):
        return render(self.request, template, self.context(**extra), status=status)


def apply_errors(form: forms.Form, exc: ValidationError) -> None:
    """Put a service's ValidationError next to the fields it names; the rest above the form."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, messages in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, messages)
