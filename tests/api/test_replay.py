"""POST .../sites/{site}/requests/{id}/replay/: a write token replays a captured request against a
real backend on 127.0.0.1; read tokens get 403, other tenants 404, bad backends a 400 naming the
field; it is in the schema."""

from __future__ import annotations

import pytest
from audit.models import AuditEvent
from django.utils import timezone
from edge import services as edge
from traffic.models import RequestSample

from ..proxyworker.conftest import Backend
from .conftest import client_for, url


@pytest.fixture
def origin():
    b = Backend("origin").start()
    yield b
    b.stop()


@pytest.fixture
def local(cast, world, origin):
    """A backend of acme's shop on the real origin, and a sample the worker chose it for."""
    backend = edge.backend_create(actor=cast.acme.actor("owner"), org=cast.acme.org, site=world.site,
                                  address="127.0.0.1", port=origin.port)
    sample = RequestSample.objects.create(
        organization=cast.acme.org, site=world.site, at=timezone.now(), kind="sample", worker="edge", method="GET",
        host="shop.acme.test", path="/cart?id=7", status=200, backend_id=str(backend.pk),
        request_headers=[["Host", "shop.acme.test"], ["Authorization", "***"], ["Accept", "text/html"]],
    )
    return backend, sample


def replay_url(site, sample) -> str:
    return url("acme", f"sites/{site.pk}/requests/{sample.pk}/replay/")


def test_a_write_token_replays_against_the_chosen_backend(cast, world, origin, local):
    backend, sample = local
    response = client_for(cast.acme.write_token).post(replay_url(world.site, sample), {"backend": str(backend.pk)})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == 200 and body["backend"] == str(backend.pk) and body["target"] == "/cart?id=7"
    assert {"name": "Authorization", "reason": "masked on the worker: its value was never stored"} in body["omitted"]
    method, target, headers = origin.requests[-1]
    assert (method, target, headers["host"]) == ("GET", "/cart?id=7", "shop.acme.test")
    assert "authorization" not in headers
    event = AuditEvent.objects.get(organization=cast.acme.org, action="request.replay")
    assert event.actor_name.startswith("API token write bot") and event.changes["sample"] == sample.pk


def test_without_a_backend_the_one_the_worker_chose_is_used(cast, world, origin, local):
    _, sample = local
    response = client_for(cast.acme.write_token).post(replay_url(world.site, sample), {}, format="json")
    assert response.status_code == 200, response.json()
    assert len(origin.requests) == 1


@pytest.mark.parametrize("who", ["read_token", "viewer"])
def test_read_only_callers_get_403(cast, world, origin, local, who):
    _, sample = local
    client = client_for(cast.acme.read_token) if who == "read_token" else client_for(user=cast.acme.users["viewer"])
    assert client.post(replay_url(world.site, sample), {}, format="json").status_code == 403
    assert origin.requests == []


def test_another_tenants_sample_is_404(cast, world, other_world, origin, local):
    backend, _ = local
    theirs = other_world.request_sample
    for path in (url("acme", f"sites/{world.site.pk}/requests/{theirs.pk}/replay/"),
                 url("acme", f"sites/{other_world.site.pk}/requests/{theirs.pk}/replay/"),
                 url("globex", f"sites/{other_world.site.pk}/requests/{theirs.pk}/replay/")):
        response = client_for(cast.acme.write_token).post(path, {"backend": str(backend.pk)})
        assert response.status_code == 404, path
    assert origin.requests == []


def test_a_backend_of_another_site_or_tenant_is_a_400_naming_the_field(cast, world, other_world, origin, local):
    _, sample = local
    blog_backend = edge.backend_create(actor=cast.acme.actor("owner"), org=cast.acme.org, site=world.other_site,
                                       address="127.0.0.1", port=origin.port)
    client = client_for(cast.acme.write_token)
    for backend in (blog_backend.pk, other_world.backend.pk, "not-a-uuid"):
        response = client.post(replay_url(world.site, sample), {"backend": str(backend)})
        assert response.status_code == 400
        assert list(response.json()) == ["backend"], response.json()
    assert origin.requests == []


def test_a_post_without_confirm_is_a_400_naming_confirm(cast, world, origin, local):
    backend, sample = local
    sample.method = "DELETE"
    sample.save()
    client = client_for(cast.acme.write_token)
    response = client.post(replay_url(world.site, sample), {"backend": str(backend.pk)})
    assert response.status_code == 400 and "confirm" in response.json()
    assert origin.requests == []
    response = client.post(replay_url(world.site, sample), {"backend": str(backend.pk), "confirm": True}, format="json")
    assert response.status_code == 200 and origin.requests[-1][0] == "DELETE"


def test_too_many_replays_are_a_429_with_retry_after(cast, world, origin, local, settings):
    settings.PORTICO_REPLAY_PER_MINUTE = 1
    backend, sample = local
    client = client_for(cast.acme.write_token)
    assert client.post(replay_url(world.site, sample), {"backend": str(backend.pk)}).status_code == 200
    limited = client.post(replay_url(world.site, sample), {"backend": str(backend.pk)})
    assert limited.status_code == 429 and 1 <= int(limited["Retry-After"]) <= 60
    assert "replays a minute" in limited.json()["detail"]


def test_the_replay_is_in_the_schema(db):
    schema = client_for().get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/orgs/{org_slug}/sites/{site_pk}/requests/{id}/replay/"]["post"]
    assert {"200", "400", "403", "404", "429"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][body]["properties"]) == {"backend", "confirm"}
