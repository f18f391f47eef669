"""Sites, hostnames, routes, backends and policies through the API; lists page, filter and sort."""

from __future__ import annotations

from edge.models import Backend, Policy, Site

from .conftest import client_for, url


def test_the_readme_walk_through(cast):
    """Create a site, add a backend, read them back (what platform/api/README.md shows)."""
    client = client_for(cast.acme.write_token)
    site = client.post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"], "force_https": True}).json()
    assert site["hostnames"] == ["shop.acme.test"] and site["force_https"] is True
    backend = client.post(url("acme", f"sites/{site['id']}/backends/"), {"address": "10.0.0.7", "port": 8080, "weight": 2})
    assert backend.status_code == 201
    assert backend.json()["site"] == site["id"]
    listed = client.get(url("acme", f"sites/{site['id']}/backends/")).json()
    assert [b["address"] for b in listed["results"]] == ["10.0.0.7"]


def test_a_site_is_created_with_its_first_backends(cast):
    client = client_for(cast.acme.write_token)
    response = client.post(
        url("acme", "sites/"),
        {
            "name": "Shop",
            "hostnames": ["shop.acme.test", "*.shop.acme.test"],
            "backends": [{"address": "origin.acme.test", "port": 443, "scheme": "https"}],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    site = Site.objects.get(pk=response.json()["id"])
    assert sorted(response.json()["hostnames"]) == ["*.shop.acme.test", "shop.acme.test"]
    assert [(b.address, b.port, b.scheme) for b in site.backends.all()] == [("origin.acme.test", 443, "https")]


def test_a_bad_inline_backend_names_its_field(cast):
    body = {"name": "Shop", "hostnames": ["shop.acme.test"], "backends": [{"address": "10.0.0.1", "port": 70000}]}
    response = client_for(cast.acme.write_token).post(url("acme", "sites/"), body, format="json")
    assert response.status_code == 400
    assert "port" in response.json()["backends"]["0"]
    assert not Site.objects.exists()


def test_put_replaces_and_patch_changes_some(cast, world):
    client = client_for(cast.acme.write_token)
    path = url("acme", f"sites/{world.site.pk}/backends/{world.backend.pk}/")
    response = client.put(path, {"address": "10.1.1.1", "port": 9000, "pool": "blue"})
    assert response.status_code == 200
    assert (response.json()["address"], response.json()["port"], response.json()["pool"]) == ("10.1.1.1", 9000, "blue")
    assert client.patch(path, {"state": "draining"}).json()["state"] == "draining"
    backend = Backend.objects.get(pk=world.backend.pk)
    assert (backend.address, backend.pool, backend.state) == ("10.1.1.1", "blue", "draining")


def test_a_site_can_be_paused_and_resumed(cast, world):
    client = client_for(cast.acme.write_token)
    assert client.post(url("acme", f"sites/{world.site.pk}/pause/")).json()["state"] == "paused"
    assert client.post(url("acme", f"sites/{world.site.pk}/resume/")).json()["state"] == "active"


def test_the_last_hostname_cannot_be_removed(cast, world):
    client = client_for(cast.acme.write_token)
    only = world.other_site.hostnames.get()
    response = client.delete(url("acme", f"sites/{world.other_site.pk}/hostnames/{only.pk}/"))
    assert response.status_code == 400
    assert "at least one hostname" in response.json()["name"][0]


def test_a_hostname_of_one_site_is_not_reachable_through_another(cast, world):
    path = url("acme", f"sites/{world.other_site.pk}/hostnames/{world.hostname.pk}/")
    assert client_for(cast.acme.write_token).delete(path).status_code == 404


def test_policies_list_org_defaults_and_site_policies(cast, world):
    client = client_for(cast.acme.read_token)
    every = client.get(url("acme", "policies/")).json()["results"]
    assert {p["name"] for p in every} == {"API", "Default"}
    defaults = client.get(url("acme", "policies/"), {"site": "none"}).json()["results"]
    assert [(p["name"], p["site"]) for p in defaults] == [("Default", None)]
    on_site = client.get(url("acme", "policies/"), {"site": str(world.site.pk)}).json()["results"]
    assert [p["name"] for p in on_site] == ["API"]
    assert client.get(url("acme", "policies/"), {"site": "garbage"}).status_code == 400


def test_basic_auth_passwords_are_never_shown_and_survive_a_round_trip(cast, world):
    client = client_for(cast.acme.write_token)
    created = client.post(
        url("acme", "policies/"),
        {"kind": "basic_auth", "name": "Staff", "site": str(world.site.pk), "settings": {"users": {"ann": "s3cret-pass"}}},
        format="json",
    ).json()
    assert created["settings"]["users"] == {"ann": "[redacted]"}
    stored = Policy.objects.get(pk=created["id"]).settings["users"]["ann"]
    assert stored.startswith("pbkdf2_sha256$")
    # send back what was read, plus a new user
    settings = {**created["settings"], "users": {"ann": "[redacted]", "bob": "another-pass"}}
    response = client.patch(url("acme", f"policies/{created['id']}/"), {"settings": settings}, format="json")
    assert response.status_code == 200, response.json()
    users = Policy.objects.get(pk=created["id"]).settings["users"]
    assert users["ann"] == stored and users["bob"].startswith("pbkdf2_sha256$")
    # a new user needs a real password
    settings = {"users": {"carl": "[redacted]"}}
    assert client.patch(url("acme", f"policies/{created['id']}/"), {"settings": settings}, format="json").status_code == 400


def test_lists_are_paginated(cast):
    client = client_for(cast.acme.write_token)
    for i in range(5):
        client.post(url("acme", "sites/"), {"name": f"site {i}", "hostnames": [f"s{i}.acme.test"]})
    page = client.get(url("acme", "sites/"), {"page_size": 2}).json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
    last = client.get(url("acme", "sites/"), {"page_size": 2, "page": 3}).json()
    assert [s["name"] for s in last["results"]] == ["site 4"] and last["next"] is None


def test_lists_filter_and_sort(cast, world):
    client = client_for(cast.acme.read_token)
    names = [s["name"] for s in client.get(url("acme", "sites/"), {"ordering": "-name"}).json()["results"]]
    assert names == ["Shop", "Blog"]
    found = client.get(url("acme", "sites/"), {"hostnames__name": "www.acme.test"}).json()["results"]
    assert [s["name"] for s in found] == ["Shop"]
    assert client.get(url("acme", "sites/"), {"name__icontains": "blo"}).json()["count"] == 1


def test_a_list_shows_only_this_organizations_objects(cast, world, other_world):
    client = client_for(cast.acme.read_token)
    sites = client.get(url("acme", "sites/")).json()["results"]
    assert {s["name"] for s in sites} == {"Shop", "Blog"}
    assert all(h.endswith("acme.test") for s in sites for h in s["hostnames"])
    policies = client.get(url("acme", "policies/")).json()["results"]
    assert {p["id"] for p in policies} == {str(world.policy.pk), str(world.org_policy.pk)}


def test_members_can_read_roles_and_admins_change_them(cast, world):
    admin = client_for(user=cast.acme.users["admin"])
    members = admin.get(url("acme", "members/")).json()["results"]
    assert {m["user"]["email"]: m["role"] for m in members} == {
        "owner@acme.test": "owner", "admin@acme.test": "admin", "editor@acme.test": "editor", "viewer@acme.test": "viewer",
    }
    response = admin.patch(url("acme", f"members/{world.member.pk}/"), {"role": "viewer"})
    assert response.status_code == 200 and response.json()["role"] == "viewer"
    # only an owner makes owners
    assert admin.patch(url("acme", f"members/{world.member.pk}/"), {"role": "owner"}).status_code == 403


def test_a_member_can_leave(cast):
    viewer = cast.acme.users["viewer"]
    client = client_for(user=viewer)
    mine = next(m for m in client.get(url("acme", "members/")).json()["results"] if m["user"]["email"] == viewer.email)
    assert client.delete(url("acme", f"members/{mine['id']}/")).status_code == 204
    assert client.get(url("acme", "sites/")).status_code == 404


def test_invitations_are_created_and_revoked_by_admins(cast):
    admin = client_for(user=cast.acme.users["admin"])
    created = admin.post(url("acme", "invitations/"), {"email": "New@Example.com", "role": "editor"})
    assert created.status_code == 201
    assert created.json()["email"] == "new@example.com" and created.json()["token"]
    assert "token" not in admin.get(url("acme", f"invitations/{created.json()['id']}/")).json()
    revoked = admin.post(url("acme", f"invitations/{created.json()['id']}/revoke/"))
    assert revoked.json()["status"] == "revoked"
