"""The start page, creating and switching organizations, accepting invitations."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse
from tenancy import services
from tenancy.access import Actor
from tenancy.models import Membership, Organization, Role, User


def test_home_sends_a_member_to_their_sites(cast):
    response = cast.client("viewer").get("/")
    assert response["Location"] == reverse("frontend:sites", kwargs={"org_slug": "acme"})


def test_home_remembers_the_last_organization(cast):
    Membership.objects.create(organization=cast.other_org, user=cast.users["owner"], role=Role.VIEWER)
    client = cast.client("owner")
    client.get(reverse("frontend:sites", kwargs={"org_slug": "globex"}))
    assert client.get("/")["Location"] == reverse("frontend:sites", kwargs={"org_slug": "globex"})


def test_home_asks_someone_without_organization_to_create_one(db):
    client = Client()
    client.force_login(User.objects.create_user(email="new@example.test", password="x" * 12))
    assert client.get("/")["Location"] == reverse("frontend:org_create")


def test_creating_an_organization_makes_me_its_owner(db):
    user = User.objects.create_user(email="new@example.test", password="x" * 12)
    client = Client()
    client.force_login(user)
    response = client.post(reverse("frontend:org_create"), {"name": "Initech"})
    org = Organization.objects.get(name="Initech")
    assert response["Location"] == reverse("frontend:sites", kwargs={"org_slug": org.slug})
    assert Membership.objects.get(organization=org, user=user).role == Role.OWNER


def test_creating_an_organization_without_a_name_shows_the_error(db):
    client = Client()
    client.force_login(User.objects.create_user(email="new@example.test", password="x" * 12))
    response = client.post(reverse("frontend:org_create"), {"name": "   "})
    assert response.status_code == 200
    assert 'id="id_name_error"' in response.content.decode()
    assert not Organization.objects.exists()


def test_the_organization_menu_lists_only_my_organizations(cast):
    body = cast.client("viewer").get(reverse("frontend:sites", kwargs={"org_slug": "acme"})).content.decode()
    assert "Acme" in body and "Globex" not in body


def test_an_invited_person_joins_with_the_link(cast):
    owner = Actor.for_user(cast.users["owner"])
    _, token = services.invitation_create(actor=owner, org=cast.org, email="new@example.test", role=Role.EDITOR)
    newcomer = User.objects.create_user(email="new@example.test", password="x" * 12)
    client = Client()
    client.force_login(newcomer)
    link = reverse("frontend:invitation_accept", kwargs={"token": token})
    assert "Join Acme" in client.get(link).content.decode()
    response = client.post(link)
    assert response["Location"] == reverse("frontend:sites", kwargs={"org_slug": "acme"})
    assert Membership.objects.get(organization=cast.org, user=newcomer).role == Role.EDITOR


def test_an_invitation_for_someone_else_is_refused(cast):
    owner = Actor.for_user(cast.users["owner"])
    _, token = services.invitation_create(actor=owner, org=cast.org, email="new@example.test")
    client = cast.client("outsider")
    response = client.post(reverse("frontend:invitation_accept", kwargs={"token": token}))
    assert "This invitation is for new@example.test" in response.content.decode()
    assert not Membership.objects.filter(organization=cast.org, user=cast.users["outsider"]).exists()


def test_an_unknown_invitation_says_so(cast):
    response = cast.client("viewer").get(reverse("frontend:invitation_accept", kwargs={"token": "nope"}))
    assert "does not exist" in response.content.decode()
