"""Members and ownership on the organization page."""

from __future__ import annotations

from django.urls import reverse
from tenancy.models import Invitation, Membership, Role

URL = reverse("frontend:organization", kwargs={"org_slug": "acme"})


def member(cast, who: str) -> Membership:
    return Membership.objects.get(organization=cast.org, user=cast.users[who])


def test_an_owner_changes_a_members_role(cast):
    m = member(cast, "viewer")
    cast.client("owner").post(URL, {"action": "set_role", "member": m.pk, f"m{m.pk}-role": "editor"})
    assert member(cast, "viewer").role == Role.EDITOR


def test_an_editor_cannot_change_roles(cast):
    m = member(cast, "viewer")
    response = cast.client("editor").post(URL, {"action": "set_role", "member": m.pk, f"m{m.pk}-role": "owner"})
    assert response.status_code == 403
    assert member(cast, "viewer").role == Role.VIEWER


def test_a_viewer_can_leave(cast):
    response = cast.client("viewer").post(URL, {"action": "remove", "member": member(cast, "viewer").pk})
    assert response["Location"] == reverse("frontend:home")
    assert not Membership.objects.filter(organization=cast.org, user=cast.users["viewer"]).exists()


def test_a_viewer_cannot_remove_someone_else(cast):
    response = cast.client("viewer").post(URL, {"action": "remove", "member": member(cast, "editor").pk})
    assert response.status_code == 403
    assert Membership.objects.filter(pk=member(cast, "editor").pk).exists()


def test_the_last_owner_cannot_leave(cast):
    response = cast.client("owner").post(URL, {"action": "remove", "member": member(cast, "owner").pk})
    assert "transfer ownership first" in response.content.decode()
    assert member(cast, "owner").role == Role.OWNER


def test_an_owner_transfers_ownership(cast):
    cast.client("owner").post(URL, {"action": "transfer", "member": member(cast, "editor").pk})
    assert member(cast, "editor").role == Role.OWNER
    assert member(cast, "owner").role == Role.ADMIN


def test_an_invitation_is_emailed_with_its_link(cast, mailoutbox):
    response = cast.client("owner").post(URL, {"action": "invite", "email": "new@example.test", "role": "editor"})
    body = response.content.decode()
    assert "/invitations/" in body
    assert mailoutbox[0].to == ["new@example.test"]
    assert "/invitations/" in mailoutbox[0].body


def test_an_invitation_is_revoked(cast):
    cast.client("owner").post(URL, {"action": "invite", "email": "new@example.test", "role": "viewer"})
    invitation = Invitation.objects.get(email="new@example.test")
    cast.client("owner").post(URL, {"action": "revoke_invitation", "invitation": invitation.pk})
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None


def test_members_of_another_organization_are_404(cast):
    stranger = Membership.objects.get(organization=cast.other_org)
    response = cast.client("owner").post(URL, {"action": "remove", "member": stranger.pk})
    assert response.status_code == 404
    assert Membership.objects.filter(pk=stranger.pk).exists()


def test_requiring_tls_to_backends_names_the_plain_backends_then_holds_once_they_are_gone(cast):
    from edge.models import Backend

    response = cast.client("owner").post(URL, {"action": "require_backend_tls", "require_backend_tls": "on"})
    assert response.status_code == 200
    assert "http://10.0.0.1:8080" in response.content.decode()  # the plain backend that blocks it, named
    cast.org.refresh_from_db()
    assert cast.org.require_backend_tls is False

    Backend.objects.filter(pk=cast.backend.pk).update(scheme="https", port=443)
    response = cast.client("owner").post(URL, {"action": "require_backend_tls", "require_backend_tls": "on"})
    assert response.status_code == 302
    cast.org.refresh_from_db()
    assert cast.org.require_backend_tls is True
    assert "checked" in cast.client("owner").get(URL).content.decode()


def test_only_admins_change_the_tls_requirement(cast):
    response = cast.client("editor").post(URL, {"action": "require_backend_tls", "require_backend_tls": "on"})
    assert response.status_code == 403
    cast.org.refresh_from_db()
    assert cast.org.require_backend_tls is False
    assert "not required organization-wide" in cast.client("viewer").get(URL).content.decode()
