"""Every write through the API lands in the audit log, with the token (or person) as actor."""

from __future__ import annotations

from audit.models import AuditEvent
from tenancy.models import ApiToken

from .conftest import client_for, url


def _newest(org) -> AuditEvent:
    return AuditEvent.objects.filter(organization=org).order_by("-seq").first()


def test_a_token_write_is_audited_with_the_token_as_actor(cast):
    client = client_for(cast.acme.write_token)
    response = client.post(
        url("acme", "sites/"),
        {"name": "Shop", "hostnames": ["shop.acme.test"]},
        HTTP_X_REQUEST_ID="req-from-client-42",
        HTTP_USER_AGENT="portico-cli/2.0",
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 201
    event = _newest(cast.acme.org)
    token = ApiToken.objects.get(organization=cast.acme.org, name="write bot")
    assert event.action == "site.create"
    assert event.actor_kind == "token"
    assert event.actor_token_id == token.pk
    assert event.actor_ref == f"token:{token.pk}"
    assert event.actor_name == f"API token write bot ({token.lookup})"
    assert event.target_id == response.json()["id"]
    assert event.request_id == "req-from-client-42"
    assert event.user_agent == "portico-cli/2.0"
    assert event.ip == "203.0.113.9"


def test_every_kind_of_api_write_is_audited(cast, world):
    client = client_for(cast.acme.write_token)
    site = world.site.pk
    writes = [
        ("patch", url("acme", f"sites/{site}/"), {"force_https": True}, "site.update"),
        ("post", url("acme", f"sites/{site}/pause/"), None, "site.update"),
        ("post", url("acme", f"sites/{site}/hostnames/"), {"name": "api.acme.test"}, "hostname.add"),
        ("delete", url("acme", f"sites/{site}/hostnames/{world.hostname.pk}/"), None, "hostname.remove"),
        ("post", url("acme", f"sites/{site}/routes/"), {"path_prefix": "/static/", "pool": "default"}, "route.create"),
        ("patch", url("acme", f"sites/{site}/routes/{world.route.pk}/"), {"strip_prefix": True}, "route.update"),
        ("delete", url("acme", f"sites/{site}/routes/{world.route.pk}/"), None, "route.delete"),
        ("post", url("acme", f"sites/{site}/backends/"), {"address": "10.0.0.2", "port": 80}, "backend.create"),
        ("patch", url("acme", f"sites/{site}/backends/{world.backend.pk}/"), {"weight": 5}, "backend.update"),
        ("delete", url("acme", f"sites/{site}/backends/{world.backend.pk}/"), None, "backend.delete"),
        ("post", url("acme", "policies/"), {"kind": "ip_rules", "name": "Office", "settings": {"allow": ["10.0.0.0/8"]}}, "policy.create"),
        ("patch", url("acme", f"policies/{world.policy.pk}/"), {"enabled": False}, "policy.update"),
        ("delete", url("acme", f"policies/{world.org_policy.pk}/"), None, "policy.delete"),
        ("post", url("acme", "purges/"), {"kind": "tag", "value": "product-42"}, "purge.create"),
        ("delete", url("acme", f"sites/{world.other_site.pk}/"), None, "site.delete"),
    ]
    token = ApiToken.objects.get(organization=cast.acme.org, name="write bot")
    for method, path, body, action in writes:
        before = _newest(cast.acme.org).seq
        response = getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)
        assert response.status_code in (200, 201, 202, 204), (path, response.status_code, response.content)
        event = _newest(cast.acme.org)
        assert event.seq == before + 1, path
        assert (event.action, event.actor_ref) == (action, f"token:{token.pk}"), path


def test_a_session_write_is_audited_with_the_person_as_actor(cast):
    editor = cast.acme.users["editor"]
    response = client_for(user=editor).post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"]})
    assert response.status_code == 201
    event = _newest(cast.acme.org)
    assert (event.actor_kind, event.actor_user_id, event.actor_name) == ("user", editor.pk, editor.email)


def test_a_refused_write_leaves_no_audit_event(cast, world):
    before = _newest(cast.acme.org).seq
    response = client_for(cast.acme.write_token).post(
        url("acme", f"sites/{world.site.pk}/backends/"), {"address": "http://10.0.0.1/", "port": 80}
    )
    assert response.status_code == 400
    assert _newest(cast.acme.org).seq == before
