"""fleet/publisher.py: compile, sign and record config versions — only when something changed."""

from __future__ import annotations

import hashlib

import pytest
from django.db import transaction
from edge import services as edge
from edge.models import Site
from fleet.compiler import compile_snapshot
from fleet.models import ConfigVersion, PublishState
from fleet.publisher import content_hash, fleet_key, publish

from proxyworker import snapshot

# Plain-HTTP sites: these tests are about publishing, not about getting certificates.
PLAIN = {"tls_mode": Site.TlsMode.OFF}


def _site(cast, name: str, *hostnames: str, **fields) -> Site:
    return edge.site_create(actor=cast.editor, org=cast.org, name=name, hostnames=list(hostnames), **PLAIN, **fields)


@pytest.fixture
def shop(cast) -> Site:
    return _site(cast, "Shop", "shop.acme.test", backends=[{"address": "10.0.0.1"}])


def _verified(version: ConfigVersion) -> snapshot.Snapshot:
    return snapshot.verify(snapshot.decode_envelope(version.envelope), fleet_key())


def test_first_publish_creates_version_1_with_a_verifiable_envelope(shop):
    v1 = publish(force=True)
    assert v1.number == 1 and ConfigVersion.objects.count() == 1
    snap = _verified(v1)
    assert snap.version == 1
    assert [s.name for s in snap.sites] == ["Shop"]
    envelope = snapshot.decode_envelope(v1.envelope)
    assert v1.sha256 == envelope.sha256 == hashlib.sha256(envelope.body.encode()).hexdigest()
    assert v1.size == len(envelope.body)
    assert v1.content_hash == content_hash(compile_snapshot(version=5, fleet_key=fleet_key()))
    assert v1.changes == {"added": ["Shop"], "removed": [], "changed": []}


def test_a_tampered_envelope_does_not_verify(shop):
    v1 = publish(force=True)
    envelope = snapshot.decode_envelope(v1.envelope)
    forged = snapshot.Envelope(
        version=1, sha256=envelope.sha256, signature=envelope.signature, body=envelope.body.replace("10.0.0.1", "10.6.6.6")
    )
    with pytest.raises(snapshot.SnapshotError, match="signature"):
        snapshot.verify(forged, fleet_key())


def test_an_unchanged_second_publish_creates_nothing(shop):
    publish(force=True)
    assert publish() is None
    PublishState.objects.filter(pk=1).update(requested=99)  # asked to publish, but nothing changed
    assert publish() is None
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == [1]
    assert PublishState.get().published == 99  # the request counts as served


def test_a_change_makes_version_2_with_a_summary(cast, shop):
    publish(force=True)
    edge.site_update(actor=cast.editor, org=cast.org, site=shop, hc_path="/healthz")
    _site(cast, "Docs", "docs.acme.test")
    PublishState.objects.filter(pk=1).update(requested=1)
    v2 = publish()
    assert v2.number == 2
    assert v2.changes == {"added": ["Docs"], "removed": [], "changed": ["Shop"], "certificates": 0}
    assert _verified(v2).version == 2
    edge.site_delete(actor=cast.editor, org=cast.org, site=shop)
    PublishState.objects.filter(pk=1).update(requested=2)
    assert publish().changes == {"added": [], "removed": ["Shop"], "changed": [], "certificates": 0}


def test_a_forced_publish_makes_a_new_version_even_without_changes(shop):
    first, second = publish(force=True), publish(force=True)
    assert (first.number, second.number) == (1, 2)
    assert first.content_hash == second.content_hash
    assert _verified(second).version == 2


def test_a_paused_site_is_published_as_removed(cast, shop):
    publish(force=True)
    edge.site_pause(actor=cast.editor, org=cast.org, site=shop)
    PublishState.objects.filter(pk=1).update(requested=1)
    v2 = publish()
    assert v2.changes["removed"] == ["Shop"]
    assert _verified(v2).sites == []


# --- publishing after a commit ------------------------------------------------------------------


@pytest.fixture
def eager_celery(settings):
    # The Celery app reads Django's settings once; after an earlier test loaded them, changing the
    # setting alone would not make it eager.
    from config.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_publishes_through_celery(cast, eager_celery):
    _site(cast, "Shop", "shop.acme.test")
    v1 = ConfigVersion.objects.get()
    assert v1.changes["added"] == ["Shop"]
    docs = _site(cast, "Docs", "docs.acme.test")
    edge.site_update(actor=cast.editor, org=cast.org, site=docs, name="Docs v2")
    assert list(ConfigVersion.objects.order_by("number").values_list("number", flat=True)) == [1, 2, 3]
    assert ConfigVersion.objects.get(number=3).changes["changed"] == ["Docs v2"]
    state = PublishState.get()
    assert state.published == state.requested == 3


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_changes_in_one_transaction_publishes_once(cast, eager_celery):
    with transaction.atomic():
        site = _site(cast, "Shop", "shop.acme.test")
        edge.hostname_add(actor=cast.editor, org=cast.org, site=site, name="www.acme.test")
        edge.backend_create(actor=cast.editor, org=cast.org, site=site, address="10.0.0.1")
        assert not ConfigVersion.objects.exists()  # nothing before the commit
    assert ConfigVersion.objects.count() == 1
    assert PublishState.get().requested == 1
    assert _verified(ConfigVersion.objects.get()).sites[0].hostnames == ["shop.acme.test", "www.acme.test"]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_publishes_nothing(cast, eager_celery):
    with pytest.raises(RuntimeError), transaction.atomic():
        _site(cast, "Shop", "shop.acme.test")
        raise RuntimeError("the request failed later")
    assert not ConfigVersion.objects.exists()
    assert PublishState.objects.filter(requested__gt=0).count() == 0
