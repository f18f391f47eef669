"""A bad request is a 400 that names the field and says why, in words a person understands."""

from __future__ import annotations

from edge.models import Backend, Hostname, Policy

from .conftest import client_for, url


def _error(response, field: str) -> str:
    assert response.status_code == 400, (response.status_code, response.content)
    body = response.json()
    assert field in body, body
    return " ".join(map(str, body[field]))


def test_a_hostname_owned_by_another_tenant(cast, other_world):
    client = client_for(cast.acme.write_token)
    response = client.post(url("acme", "sites/"), {"name": "Mine", "hostnames": ["shop.globex.test"]})
    assert _error(response, "hostnames") == "shop.globex.test is already in use by another organization."


def test_a_hostname_added_that_another_tenant_owns(cast, world, other_world):
    response = client_for(cast.acme.write_token).post(url("acme", f"sites/{world.site.pk}/hostnames/"), {"name": "WWW.Globex.Test"})
    assert _error(response, "name") == "www.globex.test is already in use by another organization."
    assert not Hostname.objects.filter(site=world.site, name="www.globex.test").exists()


def test_a_hostname_under_another_tenants_wildcard(cast, world):
    globex = cast.globex
    client_for(globex.write_token).post(url("globex", "sites/"), {"name": "All", "hostnames": ["*.globex.example"]})
    response = client_for(cast.acme.write_token).post(url("acme", f"sites/{world.site.pk}/hostnames/"), {"name": "a.globex.example"})
    assert "covered by *.globex.example" in _error(response, "name")


def test_a_backend_address_that_is_not_a_host(cast, world):
    client = client_for(cast.acme.write_token)
    path = url("acme", f"sites/{world.site.pk}/backends/")
    assert "is not a host" in _error(client.post(path, {"address": "http://10.0.0.5/app", "port": 80}), "address")
    assert "put the port in the port field" in _error(client.post(path, {"address": "10.0.0.5:8080"}), "address")
    assert _error(client.post(path, {"address": "10.0.0.5", "port": 0}), "port")
    assert Backend.objects.filter(site=world.site).count() == 1


def test_an_update_to_a_bad_backend_address_changes_nothing(cast, world):
    path = url("acme", f"sites/{world.site.pk}/backends/{world.backend.pk}/")
    response = client_for(cast.acme.write_token).patch(path, {"address": "https://origin.example.com"})
    assert "is not a host" in _error(response, "address")
    world.backend.refresh_from_db()
    assert world.backend.address == "10.0.0.1"


def test_a_cidr_that_does_not_parse(cast):
    response = client_for(cast.acme.write_token).post(
        url("acme", "policies/"), {"kind": "ip_rules", "name": "Office", "settings": {"allow": ["10.0.0.0/33"]}}, format="json"
    )
    assert _error(response, "settings") == "IP rule '10.0.0.0/33' is not a CIDR"
    assert not Policy.objects.filter(name="Office").exists()


def test_a_rate_of_zero(cast, world):
    response = client_for(cast.acme.write_token).post(
        url("acme", "policies/"),
        {"kind": "rate_limit", "name": "API", "site": str(world.site.pk), "settings": {"requests": 0}},
        format="json",
    )
    message = _error(response, "settings")
    assert "requests" in message and ">= 1" in message


def test_a_policy_on_another_tenants_site(cast, world, other_world):
    response = client_for(cast.acme.write_token).post(
        url("acme", "policies/"),
        {"kind": "cache", "name": "x", "site": str(other_world.site.pk), "settings": {}},
        format="json",
    )
    # the same answer as for a site that does not exist
    assert _error(response, "site") == f"No site {other_world.site.pk} in this organization."


def test_an_unknown_policy_kind(cast):
    response = client_for(cast.acme.write_token).post(url("acme", "policies/"), {"kind": "magic", "name": "x", "settings": {}})
    assert "not a valid choice" in _error(response, "kind")


def test_a_site_without_hostnames(cast):
    response = client_for(cast.acme.write_token).post(url("acme", "sites/"), {"name": "x", "hostnames": []})
    assert _error(response, "hostnames")


def test_a_health_check_timeout_longer_than_its_interval(cast, world):
    response = client_for(cast.acme.write_token).patch(url("acme", f"sites/{world.site.pk}/"), {"hc_interval": 1, "hc_timeout": 2})
    assert _error(response, "hc_timeout") == "The timeout must not exceed the interval."


def test_a_site_name_that_is_too_long(cast):
    response = client_for(cast.acme.write_token).post(url("acme", "sites/"), {"name": "x" * 101, "hostnames": ["a.acme.test"]})
    assert "no more than 100 characters" in _error(response, "name")


def test_a_body_that_is_not_json(cast):
    response = client_for(cast.acme.write_token).generic("POST", url("acme", "sites/"), "{nope", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_a_bad_filter_value(cast):
    response = client_for(cast.acme.read_token).get(url("acme", "audit-events/"), {"since": "yesterday"})
    assert _error(response, "since")


def test_a_route_without_a_path_prefix(cast, world):
    response = client_for(cast.acme.write_token).post(url("acme", f"sites/{world.site.pk}/routes/"), {})
    assert _error(response, "path_prefix") == "This field is required."


def test_a_time_filter_far_from_utc(cast):
    # Python accepts offsets up to ±23:59, Postgres only ±15:59: compared in UTC, it works.
    response = client_for(cast.acme.read_token).get(url("acme", "audit-events/"), {"until": "0569-10-07T21:01:43+21:00"})
    assert response.status_code == 200


def test_settings_with_a_nul_character(cast):
    body = {"kind": "headers", "name": "x", "settings": [{"direction": "response", "op": "set", "name": "X-A", "value": "a\u0000b"}]}
    response = client_for(cast.acme.write_token).post(url("acme", "policies/"), body, format="json")
    assert _error(response, "settings") == "Settings cannot contain NUL characters."


def test_an_unknown_api_url_is_a_json_404(cast):
    client = client_for(cast.acme.read_token)
    response = client.get("/api/v1/orgs/acme/nothing-here/")
    assert response.status_code == 404 and response.json() == {"detail": "No such API endpoint: see /api/docs/."}
    assert client.post("/api/v1/orgs/acme%0A/sites/x/routes/", {}).json()["detail"].startswith("No such API endpoint")
    assert client.get("/api/v1/orgs/acme/sites").json() == {"detail": "No such API endpoint; did you mean /api/v1/orgs/acme/sites/ ?"}


def test_an_unknown_ordering_is_400(cast):
    response = client_for(cast.acme.read_token).get(url("acme", "sites/"), {"ordering": "secret_field"})
    assert _error(response, "ordering").startswith("Sort by one of: name, created_at")
