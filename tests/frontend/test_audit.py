"""The audit log page: filters, each event's changes, CSV and JSON export, tenant isolation."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse
from edge import services as edge
from tenancy import services as tenancy
from tenancy.access import Actor

URL = reverse("frontend:audit", kwargs={"org_slug": "acme"})


@pytest.fixture
def history(cast):
    owner, editor = Actor.for_user(cast.users["owner"]), Actor.for_user(cast.users["editor"])
    edge.site_update(actor=editor, org=cast.org, site=cast.site, balancing="ip_hash")
    tenancy.token_create(actor=owner, org=cast.org, name="deploy", scope="write")
    outsider = Actor.for_user(cast.users["outsider"])
    edge.site_update(actor=outsider, org=cast.other_org, site=cast.other_site, balancing="ip_hash")
    return cast


def rows(response) -> str:
    return response.content.decode().split("<tbody>", 1)[1]


def test_events_show_who_did_what_and_the_changes(history):
    body = history.client("viewer").get(URL).content.decode()
    assert "site.update" in body and "token.create" in body and "editor@acme.test" in body
    assert "&quot;round_robin&quot;" in body and "&quot;ip_hash&quot;" in body  # before and after


def test_another_tenants_events_never_show(history):
    body = history.client("owner").get(URL).content.decode()
    assert "owner@globex.test" not in body and "Secret" not in body


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ({"action": "site."}, "site.update", "token.create"),
        ({"actor": "owner@"}, "token.create", "site.update"),
        ({"target": "deploy"}, "token.create", "site.update"),
        ({"target": "site"}, "site.update", "token.create"),
    ],
)
def test_filters(history, query, shown, hidden):
    body = rows(history.client("viewer").get(URL, query))
    assert shown in body and hidden not in body


def test_date_filter(history):
    assert "site.update" not in rows(history.client("viewer").get(URL, {"since": "2999-01-01"}))
    assert "site.update" in rows(history.client("viewer").get(URL, {"since": "2000-01-01", "until": "2999-01-01"}))


def test_csv_export_has_the_filtered_events(history):
    response = history.client("viewer").get(URL, {"action": "site.", "export": "csv"})
    assert response["Content-Disposition"] == 'attachment; filename="audit-acme.csv"'
    table = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["action"] for r in table] == ["site.update"]
    assert json.loads(table[0]["changes"])["balancing"] == ["round_robin", "ip_hash"]
    assert table[0]["actor_name"] == "editor@acme.test" and len(table[0]["hash"]) == 64


def test_json_export(history):
    response = history.client("viewer").get(URL, {"export": "json"})
    events = json.loads(response.content)
    assert {e["action"] for e in events} == {"site.update", "token.create"}
    assert all(e["actor_name"] != "owner@globex.test" for e in events)


def test_outsiders_cannot_export(history):
    assert history.client("outsider").get(URL, {"export": "csv"}).status_code == 404
