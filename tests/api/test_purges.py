"""Cache purges: validated against the organization's hostnames, stored, audited, sent to the
workers through the real broker, and done once every worker confirmed."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from audit.models import AuditEvent
from django.utils import timezone
from edge.models import Purge
from edge.purges import purge_confirmed, purge_send
from fleet.distribution import agent_queue, worker_heartbeat, worker_hello
from fleet.models import Worker

from .conftest import client_for, url


def test_a_purge_is_accepted_with_202(cast, world):
    response = client_for(cast.acme.write_token).post(url("acme", "purges/"), {"kind": "url", "value": "https://www.acme.test/a.css?v=2"})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["kind"], body["status"], body["site"]) == ("url", "requested", str(world.site.pk))
    assert body["created_by"].startswith("API token write bot")
    assert AuditEvent.objects.filter(organization=cast.acme.org, action="purge.create", target_id=body["id"]).exists()


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"kind": "url", "value": "https://shop.globex.test/"}, "value", "is not a hostname of any of your sites"),
        ({"kind": "url", "value": "/relative/path"}, "value", "is not a full URL"),
        ({"kind": "url", "value": ""}, "value", "Give the URL to purge"),
        ({"kind": "prefix", "value": "ftp://www.acme.test/static/"}, "value", "is not a full URL"),
        ({"kind": "tag", "value": "two words"}, "value", "without spaces or commas"),
        ({"kind": "all", "value": "x"}, "value", "takes no value"),
        ({"kind": "everything"}, "kind", "not a valid choice"),
    ],
)
def test_a_bad_purge_is_400(cast, world, other_world, body, field, reason):
    response = client_for(cast.acme.write_token).post(url("acme", "purges/"), body)
    assert response.status_code == 400
    assert reason in " ".join(response.json()[field])
    assert not Purge.objects.for_org(cast.acme.org).exclude(pk=world.purge.pk).exists()


def test_a_url_must_belong_to_the_site_given(cast, world):
    response = client_for(cast.acme.write_token).post(
        url("acme", "purges/"), {"kind": "url", "value": "https://blog.acme.test/x", "site": str(world.site.pk)}
    )
    assert response.status_code == 400
    assert "belongs to your site 'Blog', not to 'Shop'" in response.json()["value"][0]


def test_a_url_under_a_wildcard_hostname_belongs_to_its_site(cast):
    client = client_for(cast.acme.write_token)
    site = client.post(url("acme", "sites/"), {"name": "Wild", "hostnames": ["*.wild.acme.test"]}).json()
    response = client.post(url("acme", "purges/"), {"kind": "prefix", "value": "https://img.wild.acme.test/thumbs/"})
    assert response.status_code == 202 and response.json()["site"] == site["id"]


@pytest.fixture
def worker(make_worker):
    return make_worker()


def _receive(name: str) -> dict:
    from config.celery import app

    with app.connection_for_read() as conn:
        message = agent_queue(name)(conn.default_channel).get(no_ack=True)
        assert message is not None, "the worker's queue is empty"
        return message.decode()


def test_a_purge_reaches_the_workers_and_completes_when_they_confirm(cast, world, worker):
    created = client_for(cast.acme.write_token).post(url("acme", "purges/"), {"kind": "tag", "value": "product-42"}).json()
    purge = Purge.objects.get(pk=created["id"])
    # What the Celery task does once the transaction commits:
    assert purge_send(purge_id=str(purge.pk)) == 1
    message = _receive(worker.name)
    assert {**message, "sites": sorted(message["sites"])} == {
        "kind": "purge",
        "id": str(purge.pk),
        "organization": str(cast.acme.org.pk),
        "site": None,
        "sites": sorted([str(world.site.pk), str(world.other_site.pk)]),
        "purge_kind": "tag",
        "value": "product-42",
    }
    purge.refresh_from_db()
    assert purge.status == "sent" and purge.workers_sent == 1
    purge_confirmed(worker_name=worker.name, purge_id=str(purge.pk))
    detail = client_for(cast.acme.read_token).get(url("acme", f"purges/{purge.pk}/")).json()
    assert detail["status"] == "done" and worker.name in detail["confirmations"]


def _queue_is_empty(name: str) -> bool:
    from config.celery import app

    with app.connection_for_read() as conn:
        return agent_queue(name)(conn.default_channel).get(no_ack=True) is None


@pytest.mark.parametrize("first_word", ["hello", "heartbeat"])
def test_a_worker_that_was_away_gets_the_purges_it_missed_when_it_comes_back(cast, world, make_worker, first_word):
    present, away = make_worker(), make_worker()
    two_hours_ago = timezone.now() - dt.timedelta(hours=2)
    Worker.objects.filter(pk=away.pk).update(last_heartbeat=two_hours_ago, purges_seen_until=two_hours_ago)
    created = client_for(cast.acme.write_token).post(url("acme", "purges/"), {"kind": "all"}).json()
    purge = Purge.objects.get(pk=created["id"])
    assert purge_send(purge_id=str(purge.pk)) == 1  # only the worker that is there
    assert _receive(present.name)["id"] == str(purge.pk)
    purge_confirmed(worker_name=present.name, purge_id=str(purge.pk))
    purge.refresh_from_db()
    assert purge.status == "done"

    # Back: whichever of its messages the control plane handles first catches it up.
    if first_word == "hello":
        worker_hello(name=away.name, pool="default", address="", capacity=1, version=10**9)
    else:
        worker_heartbeat(name=away.name, version=10**9)
    assert _receive(away.name)["id"] == str(purge.pk)
    purge.refresh_from_db()
    assert (purge.status, purge.workers_sent, sorted(purge.sent_to)) == ("sent", 2, sorted([present.name, away.name]))
    purge_confirmed(worker_name=away.name, purge_id=str(purge.pk))
    purge.refresh_from_db()
    assert purge.status == "done"
    # Neither more hellos and heartbeats nor a restart of a worker that got it sends it again.
    worker_hello(name=away.name, pool="default", address="", capacity=1, version=10**9)
    worker_heartbeat(name=away.name, version=10**9)
    worker_hello(name=present.name, pool="default", address="", capacity=1, version=10**9)
    worker_heartbeat(name=present.name, version=10**9)
    assert _queue_is_empty(away.name) and _queue_is_empty(present.name)
    purge.refresh_from_db()
    assert purge.workers_sent == 2


def test_a_confirmation_for_an_unknown_purge_is_ignored(db):
    purge_confirmed(worker_name="edge-1", purge_id=str(uuid.uuid4()))
    purge_confirmed(worker_name="edge-1", purge_id="not-a-uuid")
    purge_confirmed(worker_name="edge-1", purge_id=None)


def test_purges_of_another_organization_are_not_listed(cast, world, other_world):
    ids = {p["id"] for p in client_for(cast.acme.read_token).get(url("acme", "purges/")).json()["results"]}
    assert ids == {str(world.purge.pk)}
