"""A mistake in a form is explained next to the field it is about, and nothing changes."""

from __future__ import annotations

import pytest
from django.urls import reverse
from edge.models import Backend, Hostname, Policy, Site


def site_url(cast, name: str, **extra) -> str:
    return reverse(f"frontend:{name}", kwargs={"org_slug": "acme", "site_id": cast.site.pk, **extra})


def error_of(body: str, field_id: str) -> str:
    marker = f'id="{field_id}_error">'
    assert marker in body, f"no error shown for {field_id}"
    return body.split(marker, 1)[1].split("</p>", 1)[0]


def test_a_backend_address_with_a_scheme_is_explained(cast):
    response = cast.client("editor").post(
        site_url(cast, "backend_add"), {"pool": "default", "address": "http://10.0.0.5/", "port": 80, "scheme": "http", "weight": 1}
    )
    assert response.status_code == 200
    assert "is not a host" in error_of(response.content.decode(), "id_address")
    assert Backend.objects.filter(site=cast.site).count() == 1


def test_a_hostname_of_another_organization_is_refused_at_creation(cast):
    response = cast.client("editor").post(
        reverse("frontend:site_create", kwargs={"org_slug": "acme"}),
        {"name": "Steal", "hostnames": "secret.globex.test", "tls_mode": "acme", "address": "10.0.0.1", "port": 80, "scheme": "http"},
    )
    assert "in use by another organization" in error_of(response.content.decode(), "id_hostnames")
    assert not Site.objects.filter(name="Steal").exists()


def test_a_health_check_timeout_longer_than_the_interval_is_explained(cast):
    response = cast.client("editor").post(
        site_url(cast, "site_section", section="health"),
        {"hc_enabled": "on", "hc_path": "/", "hc_interval": 1, "hc_timeout": 5, "hc_rise": 2, "hc_fall": 3, "hc_expected_status": ""},
    )
    assert "must not exceed the interval" in error_of(response.content.decode(), "id_hc_timeout")
    assert Site.objects.get(pk=cast.site.pk).hc_timeout == 2.0


def test_hsts_preload_without_a_year_is_explained(cast):
    response = cast.client("editor").post(
        site_url(cast, "site_section", section="tls"),
        {"tls_mode": "acme", "tls_min_version": "1.2", "hsts_max_age": 60, "hsts_preload": "on"},
    )
    assert "at least one year" in error_of(response.content.decode(), "id_hsts_preload")


@pytest.mark.parametrize(
    "text, message",
    [('{"requests": ', "Not valid JSON"), ('{"requests": 0}', "at `requests`"), ('{"per_seconds": 1}', "requests")],
)
def test_a_bad_policy_is_explained_next_to_its_settings(cast, text, message):
    response = cast.client("editor").post(
        site_url(cast, "policy_add"), {"kind": "rate_limit", "name": "api", "enabled": "on", "settings": text}
    )
    assert message in error_of(response.content.decode(), "id_settings")
    assert not Policy.objects.filter(kind="rate_limit").exists()


def test_the_last_hostname_cannot_be_removed(cast):
    hostname = Hostname.objects.get(site=cast.site)
    response = cast.client("editor").post(site_url(cast, "hostname_remove", hostname_id=hostname.pk))
    assert "at least one hostname" in error_of(response.content.decode(), "hostnames")
    assert Hostname.objects.filter(pk=hostname.pk).exists()


def test_deleting_a_site_needs_its_name_typed(cast):
    response = cast.client("editor").post(site_url(cast, "site_delete"), {"confirm": "shop"})
    assert "Type the name of the site exactly" in response.content.decode()
    assert Site.objects.filter(pk=cast.site.pk).exists()


def test_a_backend_weight_out_of_range_is_explained(cast):
    response = cast.client("editor").post(site_url(cast, "backend_update", backend_id=cast.backend.pk), {"weight": 5000})
    assert "A weight between 1 and 1000" in response.content.decode()
    assert Backend.objects.get(pk=cast.backend.pk).weight == 1


def test_a_token_expiry_in_the_past_is_explained(cast):
    response = cast.client("owner").post(
        reverse("frontend:tokens", kwargs={"org_slug": "acme"}), {"name": "old", "scope": "read", "expires_on": "2001-01-01"}
    )
    assert "must be in the future" in error_of(response.content.decode(), "id_expires_on")
