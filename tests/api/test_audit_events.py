"""The audit log through the API: filters by actor, action, target and time; CSV and JSON Lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from audit.models import AuditEvent
from tenancy.models import ApiToken

from .conftest import client_for, url


def _actions(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [e["action"] for e in response.json()["results"]]


def test_it_lists_events_newest_first(cast, world):
    events = client_for(cast.acme.read_token).get(url("acme", "audit-events/")).json()["results"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs, reverse=True)
    assert events[0]["action"] == "purge.create"
    assert all("hash" in e and "prev_hash" in e for e in events)


def test_it_filters_by_actor(cast, world):
    client = client_for(cast.acme.write_token)
    client.post(url("acme", "purges/"), {"kind": "all"})
    token = ApiToken.objects.get(organization=cast.acme.org, name="write bot")
    reader = client_for(cast.acme.read_token)
    assert _actions(reader.get(url("acme", "audit-events/"), {"actor": f"token:{token.pk}"})) == ["purge.create"]
    by_owner = _actions(reader.get(url("acme", "audit-events/"), {"actor": "owner@acme"}))
    assert "site.create" in by_owner and len(by_owner) > 3
    assert _actions(reader.get(url("acme", "audit-events/"), {"actor_kind": "token"})) == ["purge.create"]


def test_it_filters_by_action_and_target(cast, world):
    reader = client_for(cast.acme.read_token)
    assert _actions(reader.get(url("acme", "audit-events/"), {"action": "site.create"})) == ["site.create", "site.create"]
    assert set(_actions(reader.get(url("acme", "audit-events/"), {"action": "policy.*"}))) == {"policy.create"}
    on_site = _actions(reader.get(url("acme", "audit-events/"), {"target": f"site:{world.site.pk}"}))
    assert on_site == ["site.create"]
    assert _actions(reader.get(url("acme", "audit-events/"), {"target": str(world.site.pk)})) == ["site.create"]


def test_it_filters_by_time(cast, world):
    reader = client_for(cast.acme.read_token)
    newest = AuditEvent.objects.filter(organization=cast.acme.org).order_by("-seq").first()
    AuditEvent.objects.filter(pk=newest.pk).update(created_at=newest.created_at + dt.timedelta(days=2))
    cut = (newest.created_at + dt.timedelta(days=1)).isoformat()
    assert _actions(reader.get(url("acme", "audit-events/"), {"since": cut})) == [newest.action]
    assert newest.action not in _actions(reader.get(url("acme", "audit-events/"), {"until": cut, "action": newest.action}))


def test_it_never_shows_another_organizations_events(cast, world, other_world):
    events = client_for(cast.acme.read_token).get(url("acme", "audit-events/"), {"page_size": 500}).json()["results"]
    assert all("globex" not in json.dumps(e) for e in events)


def test_it_exports_csv(cast, world):
    response = client_for(cast.acme.read_token).get(url("acme", "audit-events/export/"), {"format": "csv", "action": "site.*"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="audit-acme-' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["action"] for r in rows] == ["site.create", "site.create"]  # oldest first
    assert int(rows[0]["seq"]) < int(rows[1]["seq"])
    assert json.loads(rows[0]["changes"])["name"] == [None, "Shop"]


def test_it_exports_json_lines(cast, world):
    response = client_for(cast.acme.read_token).get(url("acme", "audit-events/export/"), {"format": "jsonl"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    lines = b"".join(response.streaming_content).decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == AuditEvent.objects.filter(organization=cast.acme.org).count()
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_a_csv_cell_cannot_become_a_spreadsheet_formula(cast):
    client = client_for(cast.acme.write_token)
    client.post(url("acme", "sites/"), {"name": "=HYPERLINK(\"http://evil\")", "hostnames": ["f.acme.test"]})
    body = b"".join(client.get(url("acme", "audit-events/export/"), {"format": "csv"}).streaming_content).decode()
    row = next(r for r in csv.DictReader(io.StringIO(body)) if r["action"] == "site.create")
    assert row["target_repr"].startswith("'=")


def test_an_export_error_is_answered_in_json(cast):
    response = client_for(cast.globex.read_token).get(url("acme", "audit-events/export/"), {"format": "csv"})
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "No such organization."}
