"""Replay of an inspected request, sent by the platform to a real backend on 127.0.0.1: what the
backend receives (and never receives), the SSRF guard at replay time, confirmation for methods that
change things, the audit entry, the rate limit, TLS as the backend is configured."""

from __future__ import annotations

import gzip
import ipaddress
import json

import pytest
from audit.models import AuditEvent
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone
from edge.models import Backend as BackendRow
from edge.models import Route, Site
from tenancy.access import Actor
from tenancy.models import Membership, Organization, Role, User
from traffic import replay
from traffic.models import RequestSample

from ..proxyworker.conftest import Backend
from ..proxyworker.conftest import TestCA as CertificateAuthority

SECRET_HEADERS = [
    ["Host", "shop.acme.test"],
    ["Authorization", "***"],
    ["Cookie", "***"],
    ["X-Api-Key", "***"],
    ["Accept", "application/json"],
    ["User-Agent", "curl/8.5"],
    ["Connection", "keep-alive, X-Hop"],
    ["X-Hop", "1"],
    ["Content-Length", "12"],
]


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def origin():
    b = Backend("origin").start()
    yield b
    b.stop()


@pytest.fixture
def people(org):
    users = {}
    for role in (Role.EDITOR, Role.VIEWER):
        users[str(role)] = User.objects.create_user(email=f"{role}@acme.test", password="x")
        Membership.objects.create(organization=org, user=users[str(role)], role=role)
    return {k: Actor.for_user(u) for k, u in users.items()}


def local_backend(site: Site, port: int, **fields) -> BackendRow:
    return BackendRow.objects.create(organization=site.organization, site=site, address="127.0.0.1", port=port, **fields)


def sample_of(site: Site, *, method="GET", path="/search?q=shoes&token=***", headers=None, backend=None, **fields):
    return RequestSample.objects.create(
        organization=site.organization, site=site, at=timezone.now(), kind=RequestSample.Kind.SAMPLE, worker="w1",
        method=method, host="shop.acme.test", path=path, status=200,
        request_headers=headers if headers is not None else SECRET_HEADERS,
        backend_id=str(backend.pk) if backend else "", **fields,
    )


def test_the_backend_gets_method_path_and_host_but_no_masked_or_hop_by_hop_header(shop, origin, people):
    backend = local_backend(shop, origin.port)
    result = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=backend)

    assert result.status == 200 and not result.error
    method, target, headers = origin.requests[-1]
    assert (method, target) == ("GET", "/search?q=shoes")
    assert headers["host"] == "shop.acme.test"
    assert headers["accept"] == "application/json" and headers["user-agent"] == "curl/8.5"
    for left_out in ("authorization", "cookie", "x-api-key", "x-hop", "content-length"):
        assert left_out not in headers, left_out
    assert "***" not in json.dumps(headers)
    omitted = dict(result.omitted)
    assert "masked" in omitted["Authorization"] and "masked" in omitted["Cookie"] and "masked" in omitted["X-Api-Key"]
    assert "hop-by-hop" in omitted["Connection"] and "hop-by-hop" in omitted["X-Hop"]
    assert "masked" in omitted["query parameter token"]
    assert any("12 bytes" in note and "without one" in note for note in result.notes)
    assert json.loads(result.body)["headers"]["host"] == "shop.acme.test"
    assert result.timing["total"] > 0 and result.timing["wait"] is not None
    assert ("X-Backend", "origin") in result.response_headers


def test_a_secret_a_worker_failed_to_mask_is_not_replayed(shop, origin, people):
    backend = local_backend(shop, origin.port)
    sample = sample_of(shop, headers=[["Host", "shop.acme.test"], ["Authorization", "Bearer abc123"], ["Accept", "*/*"]])
    result = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend)
    assert "authorization" not in origin.requests[-1][2] and origin.requests[-1][2]["accept"] == "*/*"
    assert "abc123" not in json.dumps(result.as_dict())


def test_a_route_that_rewrites_the_prefix_is_applied(shop, origin, people):
    Route.objects.create(organization=shop.organization, site=shop, path_prefix="/api/", pool="default", rewrite_prefix="/v2/")
    backend = local_backend(shop, origin.port)
    sample = sample_of(shop, path="/api/items?page=2", headers=[["Host", "shop.acme.test"]])
    result = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend)
    assert origin.requests[-1][1] == "/v2/items?page=2"
    assert any("/v2/items?page=2" in note for note in result.notes)


def test_a_backend_in_a_denied_network_is_refused_at_replay_time(shop, origin, people, settings):
    backend = local_backend(shop, origin.port)  # allowed when it was saved...
    settings.BACKEND_DENY_NETWORKS = [*settings.BACKEND_DENY_NETWORKS, ipaddress.ip_network("127.0.0.0/8")]  # ...not now
    with pytest.raises(ValidationError) as refused:
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=backend)
    assert "127.0.0.0/8" in refused.value.message_dict["backend"][0]
    assert origin.requests == []
    assert not AuditEvent.objects.filter(action="request.replay").exists()


def test_a_name_that_now_resolves_into_a_denied_network_is_refused(shop, origin, people, settings):
    backend = BackendRow.objects.create(organization=shop.organization, site=shop, address="localhost", port=origin.port)
    settings.REPLAY_DENY_NETWORKS = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    with pytest.raises(ValidationError) as refused:
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=backend)
    assert "localhost resolves to" in refused.value.message_dict["backend"][0]
    assert origin.requests == []


def test_metadata_hostnames_and_mapped_addresses_are_refused(shop, people):
    metadata = BackendRow.objects.create(organization=shop.organization, site=shop, address="metadata.google.internal", port=80)
    mapped = BackendRow.objects.create(organization=shop.organization, site=shop, address="::ffff:169.254.169.254", port=80)
    for backend in (metadata, mapped):
        with pytest.raises(ValidationError) as refused:
            replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=backend)
        assert "backend" in refused.value.message_dict


def test_a_method_that_changes_things_needs_confirmation(shop, origin, people):
    backend = local_backend(shop, origin.port)
    sample = sample_of(shop, method="POST", path="/orders", headers=[["Host", "shop.acme.test"], ["Content-Length", "30"]])
    with pytest.raises(ValidationError) as refused:
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend)
    assert "POST can change data" in refused.value.message_dict["confirm"][0]
    assert origin.requests == []

    result = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend, confirm=True)
    assert result.status == 200
    method, target, headers = origin.requests[-1]
    assert (method, target) == ("POST", "/orders")
    assert json.loads(result.body)["body_length"] == 0
    assert any("30 bytes" in note for note in result.notes)


def test_each_replay_is_audited_without_header_values(shop, origin, people):
    backend = local_backend(shop, origin.port)
    sample = sample_of(shop)
    replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend)
    event = AuditEvent.objects.get(action="request.replay")
    assert event.actor_name == "editor@acme.test"
    assert event.target_id == str(backend.pk)
    assert event.changes["sample"] == sample.pk and event.changes["method"] == "GET"
    assert event.changes["path"] == "/search?q=shoes" and event.changes["status"] == 200
    text = json.dumps(event.changes)
    assert "curl/8.5" not in text and "application/json" not in text


def test_viewers_and_other_tenants_cannot_replay(shop, origin, people):
    backend = local_backend(shop, origin.port)
    with pytest.raises(PermissionDenied):
        replay.replay_sample(actor=people["viewer"], org=shop.organization, sample=sample_of(shop), backend=backend)
    other = Organization.objects.create(name="Globex", slug="globex")
    other_site = Site.objects.create(organization=other, name="secret")
    theirs = sample_of(other_site)
    with pytest.raises(Http404):
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=theirs, backend=backend)
    assert origin.requests == []


def test_a_backend_of_another_site_is_refused_naming_the_field(shop, origin, people):
    blog = Site.objects.create(organization=shop.organization, name="blog")
    theirs = local_backend(blog, origin.port)
    with pytest.raises(ValidationError) as refused:
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=theirs)
    assert "not a backend of this request's site" in refused.value.message_dict["backend"][0]


def test_replays_are_rate_limited_per_organization(shop, origin, people, settings):
    settings.PORTICO_REPLAY_PER_MINUTE = 2
    backend = local_backend(shop, origin.port)
    sample = sample_of(shop)
    for _ in range(2):
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend)
    with pytest.raises(replay.ReplayRateLimited) as limited:
        replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample, backend=backend)
    assert 1 <= limited.value.retry_after <= 60
    assert len(origin.requests) == 2


def test_a_slow_backend_is_given_up_on(shop, people, settings):
    settings.PORTICO_REPLAY_TIMEOUT = 1
    slow = Backend("slow", delay=3).start()
    try:
        result = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop),
                                      backend=local_backend(shop, slow.port))
    finally:
        slow.stop()
    assert result.status is None and result.error == "No answer within 1 s."
    assert AuditEvent.objects.get(action="request.replay").changes["error"] == result.error


def test_https_backends_are_verified_with_their_ca_and_sni(shop, people, tmp_path):
    ca = CertificateAuthority(tmp_path)
    origin = Backend("tls-origin", tls=ca.server_context("origin.internal")).start()
    try:
        trusted = local_backend(shop, origin.port, scheme="https", ca_pem=ca.ca_pem, sni="origin.internal")
        ok = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=trusted)
        assert ok.status == 200 and ok.timing["tls"] is not None
        untrusted = local_backend(shop, origin.port, scheme="https", sni="origin.internal")  # system store only
        refused = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=untrusted)
        assert refused.status is None and "certificate" in refused.error
        unverified = local_backend(shop, origin.port, scheme="https", tls_verify=False)
        anyway = replay.replay_sample(actor=people["editor"], org=shop.organization, sample=sample_of(shop), backend=unverified)
        assert anyway.status == 200
    finally:
        origin.stop()
    assert len(origin.requests) == 2


def test_gzip_bodies_are_decoded_for_display_and_binary_ones_are_not_shown():
    text, note = replay._displayable(gzip.compress(b'{"ok": true}'), "gzip", "application/json", 65536)
    assert text == '{"ok": true}' and "gzip" in note
    text, note = replay._displayable(b"\x89PNG\r\n\x1a\n\x00\x00", "", "image/png", 65536)
    assert text == "" and "binary" in note
    bomb = gzip.compress(b"a" * 10_000_000)
    text, _ = replay._displayable(bomb, "gzip", "text/plain", 1024)
    assert len(text) == 1024
