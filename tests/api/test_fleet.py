"""Workers and config versions with their rollout; a version's diff shows only your own sites."""

from __future__ import annotations

from fleet.distribution import worker_report
from fleet.publisher import publish

from .conftest import client_for, url


def test_it_lists_workers(cast, fleet):
    worker, _ = fleet
    workers = client_for(cast.acme.read_token).get(url("acme", "fleet/workers/")).json()["results"]
    assert [(w["name"], w["online"]) for w in workers] == [(worker.name, True)]
    assert "address" not in workers[0]


def test_a_version_shows_its_rollout(cast, world, fleet, make_worker):
    worker, first = fleet
    late = make_worker(version=0)
    second = publish(force=True)
    worker_report(name=worker.name, version=second.number, outcome="applied")
    worker_report(name=late.name, version=second.number, outcome="rejected", reason="site 'Secret' (x): bad")
    body = client_for(cast.acme.read_token).get(url("acme", f"fleet/versions/{second.number}/")).json()
    assert body["rollout"] == {
        "online": 2,
        "applied": 1,
        "pending": [],
        "rejected": [late.name],  # reasons may name other tenants' sites: never shown
        "complete": False,
        "summary": f"v{second.number} applied on 1 of 2 workers",
    }
    listed = client_for(cast.acme.read_token).get(url("acme", "fleet/versions/")).json()["results"]
    assert [v["number"] for v in listed] == [second.number, first.number]
    assert "envelope" not in listed[0]


def test_a_diff_shows_only_your_own_sites(cast, world, fleet):
    _, before = fleet
    acme, globex = client_for(cast.acme.write_token), client_for(cast.globex.write_token)
    acme.patch(url("acme", f"sites/{world.site.pk}/"), {"force_https": True})
    globex.post(url("globex", "sites/"), {"name": "Globex secret", "hostnames": ["secret.globex.test"]})
    after = publish(force=True)
    diff = client_for(cast.acme.read_token).get(url("acme", f"fleet/versions/{after.number}/diff/"), {"from": before.number}).json()
    assert diff["from"] == before.number and diff["to"] == after.number
    assert diff["added"] == [] and diff["removed"] == []
    assert list(diff["changed"]) == ["Shop"]
    assert diff["changed"]["Shop"]["force_https"]["new"] is True
    # globex sees its new site, and nothing of acme's
    theirs = client_for(cast.globex.read_token).get(url("globex", f"fleet/versions/{after.number}/diff/"), {"from": before.number}).json()
    assert theirs["added"] == ["Globex secret"] and theirs["changed"] == {}


def test_a_diff_against_a_missing_version_is_400(cast, fleet):
    _, version = fleet
    response = client_for(cast.acme.read_token).get(url("acme", f"fleet/versions/{version.number}/diff/"), {"from": 999})
    assert response.status_code == 400
    assert response.json() == {"from": ["There is no version 999."]}


def test_the_fleet_is_not_shown_to_strangers(cast, fleet):
    assert client_for(cast.globex.read_token).get(url("acme", "fleet/workers/")).status_code == 404
