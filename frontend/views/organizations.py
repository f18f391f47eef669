"""Starting point, organizations (create, switch, rename), members, invitations, ownership."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from edge import services as edge_services
from tenancy import services
from tenancy.access import Actor, organizations_for
from tenancy.models import Invitation, Membership, Role, _hash_secret

from ..forms import InvitationForm, MemberRoleForm, OrganizationForm
from ..org_view import OrgView, apply_errors


@login_required
def home(request):
    """The last organization visited, else the first one, else a form to create one."""
    orgs = organizations_for(Actor.from_request(request))
    org = orgs.filter(slug=request.session.get("portico_org", "")).first() or orgs.order_by("name").first()
    if org is None:
        return redirect("frontend:org_create")
    return redirect("frontend:sites", org_slug=org.slug)


@login_required
@require_http_methods(["GET", "POST"])
def organization_create(request):
    actor = Actor.from_request(request)
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = services.organization_create(actor=actor, name=form.cleaned_data["name"])
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            return redirect("frontend:sites", org_slug=org.slug)
    return render(request, "frontend/org_create.html", {"form": form, "my_orgs": organizations_for(actor).order_by("name")})


@login_required
@require_http_methods(["GET", "POST"])
def invitation_accept(request, token: str):
    error = ""
    invitation = Invitation.objects.filter(token_hash=_token_hash(token)).select_related("organization").first()
    if request.method == "POST":
        try:
            membership = services.invitation_accept(user=request.user, token=token)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            return redirect("frontend:sites", org_slug=membership.organization.slug)
    elif invitation is None or not invitation.is_pending:
        error = "This invitation does not exist, has expired or was already used."
    return render(
        request,
        "frontend/invitation_accept.html",
        {"invitation": invitation if not error else None, "error": error, "my_orgs": organizations_for(Actor.from_request(request))},
    )


def _token_hash(token: str) -> str:
    return _hash_secret(token)


class OrganizationView(OrgView):
    """Settings and members. Reading is open to every member; the forms need admin (or owner)."""

    write_role = Role.VIEWER  # leaving is open to everyone; the services check each action's role

    def settings_page(self, **bound):
        forms = {
            "rename_form": OrganizationForm(initial={"name": self.org.name}),
            "invite_form": InvitationForm(),
            **bound,
        }
        members = self.scoped(Membership).select_related("user").order_by("created_at")
        return self.page(
            "frontend/organization.html",
            members=[(m, MemberRoleForm(initial={"role": m.role}, prefix=f"m{m.pk}")) for m in members],
            invitations=[i for i in self.scoped(Invitation).filter(accepted_at=None, revoked_at=None) if i.is_pending],
            me=members.filter(user=self.request.user).first(),
            **forms,
        )

    def get(self, request):
        return self.settings_page()

    def post(self, request):
        action = request.POST.get("action", "")
        handler = getattr(self, f"do_{action}", None)
        if handler is None:
            return redirect("frontend:organization", org_slug=self.org.slug)
        return handler(request)

    def _back(self):
        return redirect("frontend:organization", org_slug=self.org.slug)

    def do_rename(self, request):
        form = OrganizationForm(request.POST)
        if form.is_valid():
            try:
                services.organization_rename(actor=self.actor, org=self.org, name=form.cleaned_data["name"])
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return self._back()
        return self.settings_page(rename_form=form)

    def do_require_backend_tls(self, request):
        """End-to-end encryption for every site: refused, with the plain backends named, while any remain."""
        required = request.POST.get("require_backend_tls") == "on"
        try:
            edge_services.organization_require_backend_tls(actor=self.actor, org=self.org, required=required)
        except ValidationError as exc:
            return self.settings_page(tls_error=" ".join(exc.message_dict.get("require_backend_tls", exc.messages)))
        self.org.refresh_from_db(fields=["require_backend_tls"])
        return self._back()

    def do_invite(self, request):
        form = InvitationForm(request.POST)
        if form.is_valid():
            try:
                invitation, token = services.invitation_create(actor=self.actor, org=self.org, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                link = request.build_absolute_uri(reverse("frontend:invitation_accept", kwargs={"token": token}))
                send_mail(
                    f"You are invited to {self.org.name} on Portico",
                    f"{self.actor.display} invited you to join {self.org.name} as {invitation.role}.\n\n"
                    f"Accept the invitation (valid for {services.INVITATION_DAYS} days):\n{link}\n",
                    None,
                    [invitation.email],
                    fail_silently=True,
                )
                return self.settings_page(invitation_link=link, invited=invitation)
        return self.settings_page(invite_form=form)

    def do_revoke_invitation(self, request):
        invitation = self.get_scoped(Invitation, pk=request.POST.get("invitation"))
        services.invitation_revoke(actor=self.actor, org=self.org, invitation=invitation)
        return self._back()

    def _member(self, request) -> Membership:
        return self.get_scoped(Membership, pk=request.POST.get("member"))

    def do_set_role(self, request):
        member = self._member(request)
        form = MemberRoleForm(request.POST, prefix=f"m{member.pk}")
        if form.is_valid():
            try:
                services.membership_set_role(actor=self.actor, org=self.org, membership=member, role=form.cleaned_data["role"])
            except ValidationError as exc:
                return self.settings_page(member_error=f"{member.user.email}: {' '.join(exc.messages)}")
        return self._back()

    def do_remove(self, request):
        member = self._member(request)
        try:
            services.membership_remove(actor=self.actor, org=self.org, membership=member)
        except ValidationError as exc:
            return self.settings_page(member_error=f"{member.user.email}: {' '.join(exc.messages)}")
        if member.user_id == request.user.pk:
            messages.info(request, f"You left {self.org.name}.")
            return redirect("frontend:home")
        return self._back()

    def do_transfer(self, request):
        member = self._member(request)
        try:
            services.owner_transfer(actor=self.actor, org=self.org, to=member)
        except ValidationError as exc:
            return self.settings_page(member_error=f"{member.user.email}: {' '.join(exc.messages)}")
        return self._back()

