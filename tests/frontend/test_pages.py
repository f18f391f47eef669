"""Every dashboard page, read by each member of the cast: members see it, strangers get the same 404
as for an organization that does not exist, and read-only members see no write buttons."""

from __future__ import annotations

import pytest
from django.urls import reverse

from .conftest import WHO

PAGES = {
    # page name: (extra URL kwargs from the cast, a write control only editors and up may see)
    "sites": (lambda c: {}, "Create a site"),
    "site": (lambda c: {"site_id": c.site.pk}, "Add backend"),
    "site_live": (lambda c: {"site_id": c.site.pk}, "Drain"),
    "certificates": (lambda c: {}, "Upload"),
    "certificate_progress": (lambda c: {}, None),
    "tokens": (lambda c: {}, "Create token"),
    "audit": (lambda c: {}, None),
    "fleet": (lambda c: {}, None),
    "organization": (lambda c: {}, "Invite"),
}
# Pages whose forms are writes by nature: a viewer may look, the forms are not shown.
WRITE_CONTROL_NEEDS = {"tokens": "owner", "organization": "owner"}


def url(cast, name: str, org=None) -> str:
    extra, _ = PAGES[name]
    return reverse(f"frontend:{name}", kwargs={"org_slug": (org or cast.org).slug, **extra(cast)})


@pytest.mark.parametrize("name", PAGES)
@pytest.mark.parametrize("who", WHO)
def test_members_see_every_page_and_strangers_get_404(cast, name, who):
    response = cast.client(who).get(url(cast, name))
    assert response.status_code == (404 if who == "outsider" else 200)


@pytest.mark.parametrize("name", PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(cast, name):
    response = cast.client("owner").__class__().get(url(cast, name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


@pytest.mark.parametrize("name", [n for n, (_, control) in PAGES.items() if control])
@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_write_controls_only_for_roles_that_may_write(cast, name, who):
    _, control = PAGES[name]
    needs = WRITE_CONTROL_NEEDS.get(name, "editor")
    may_write = who == "owner" or (who == "editor" and needs == "editor")
    body = cast.client(who).get(url(cast, name)).content.decode()
    assert (control in body) is may_write


FORM_PAGES = {"site_create": lambda c: {}, "site_delete": lambda c: {"site_id": c.site.pk}}


@pytest.mark.parametrize("name", FORM_PAGES)
@pytest.mark.parametrize("who", WHO)
def test_pages_that_are_only_a_write_form_need_the_editor_role(cast, name, who):
    response = cast.client(who).get(reverse(f"frontend:{name}", kwargs={"org_slug": "acme", **FORM_PAGES[name](cast)}))
    assert response.status_code == {"owner": 200, "editor": 200, "viewer": 403, "outsider": 404}[who]


def test_unknown_organization_is_the_same_404(cast):
    response = cast.client("owner").get(reverse("frontend:sites", kwargs={"org_slug": "no-such-org"}))
    assert response.status_code == 404


def test_another_tenants_site_is_404_under_my_organization(cast):
    response = cast.client("owner").get(reverse("frontend:site", kwargs={"org_slug": "acme", "site_id": cast.other_site.pk}))
    assert response.status_code == 404


def test_pages_never_show_another_tenants_sites(cast):
    body = cast.client("owner").get(url(cast, "sites")).content.decode()
    assert "Shop" in body and "shop.acme.test" in body
    assert "Secret" not in body and "secret.globex.test" not in body


def test_pages_carry_a_strict_content_security_policy(cast):
    response = cast.client("viewer").get(url(cast, "site"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    body = response.content.decode()
    # no inline script or style: every <script> has a src or is a JSON data block
    for chunk in body.split("<script")[1:]:
        tag = chunk.split(">", 1)[0]
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert "style=" not in body
