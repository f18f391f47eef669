"""audit/services.py and ``manage.py audit_verify``: the hash-chained audit log.

Every tamper a database user could try — editing a field, deleting an event in the middle or at
the end, reordering, rewriting the chain from an edited event on without the audit key — is
reported both by ``verify_chain`` and by the command (non-zero exit).
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
from audit.chain import anchor_mac, key_id, reseal_unkeyed, sealed_hash, unkeyed_hash
from audit.models import AuditEvent
from audit.services import apply_retention, record, seal, verify_chain
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from edge import services as edge
from tenancy.access import Actor
from tenancy.models import Organization


@pytest.fixture
def chain(cast) -> list[AuditEvent]:
    """Five events in cast.org's chain (oldest first), and two in other_org's."""
    for n in range(5):
        with transaction.atomic():
            record(org=cast.org, actor=cast.owner, action="test.step", target=cast.org, after={"n": n})
    for n in range(2):
        with transaction.atomic():
            record(org=cast.other_org, actor=cast.outsider, action="test.step", after={"n": n})
    return list(AuditEvent.objects.filter(organization=cast.org).order_by("seq"))


def _verify_command(*args: str) -> str:
    out = io.StringIO()
    call_command("audit_verify", *args, stdout=out)
    return out.getvalue()


def _assert_broken(org: Organization, says: str) -> None:
    problems = verify_chain(org)
    assert any(says in p for p in problems), problems
    with pytest.raises(CommandError, match="1 organization"):
        _verify_command()


# --- the chain -----------------------------------------------------------------------------------


def test_events_are_numbered_and_linked(cast, chain):
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == ""
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(chain, chain[1:], strict=False))
    cast.org.refresh_from_db()
    assert (cast.org.audit_head_seq, cast.org.audit_head_hash) == (5, chain[-1].hash)


def test_an_intact_chain_passes(cast, chain):
    assert verify_chain(cast.org) == []
    assert verify_chain(cast.other_org) == []
    out = _verify_command()
    assert "acme: 5 events, intact" in out and "globex: 2 events, intact" in out


def test_an_organization_without_events_passes(cast):
    assert verify_chain(cast.org) == []
    assert "acme: 0 events, intact" in _verify_command("--org", "acme")


@pytest.mark.parametrize(
    "edit",
    [
        {"action": "test.nothing_to_see"},
        {"changes": {"n": [None, 99]}},
        {"actor_name": "someone-else@acme.test"},
        {"ip": "203.0.113.9"},
        {"created_at": timezone.now() - dt.timedelta(days=3)},
        {"target_repr": "Globex"},
        {"request_id": "forged"},
    ],
    ids=lambda e: next(iter(e)),
)
def test_an_edited_field_is_detected(edit, cast, chain):
    AuditEvent.objects.filter(pk=chain[2].pk).update(**edit)
    _assert_broken(cast.org, "event #3 was edited after it was written")


def test_an_edited_hash_is_detected(cast, chain):
    AuditEvent.objects.filter(pk=chain[2].pk).update(hash="0" * 64)
    _assert_broken(cast.org, "event #3 was edited")
    assert any("event #4 does not follow" in p for p in verify_chain(cast.org))


def test_a_deleted_middle_event_is_detected(cast, chain):
    AuditEvent.objects.filter(pk=chain[2].pk).delete()
    _assert_broken(cast.org, "event #3 is missing")
    assert any("event #4 does not follow" in p for p in verify_chain(cast.org))


def test_a_deleted_newest_event_is_detected(cast, chain):
    AuditEvent.objects.filter(pk=chain[-1].pk).delete()
    _assert_broken(cast.org, "newest events deleted")


def test_newest_events_deleted_with_the_head_moved_back_are_detected(cast, chain):
    AuditEvent.objects.filter(pk__in=[chain[3].pk, chain[4].pk]).delete()
    Organization.objects.filter(pk=cast.org.pk).update(audit_head_seq=3, audit_head_hash=chain[2].hash)
    _assert_broken(cast.org, "the chain's head was moved without the audit key: newest events deleted")


def test_oldest_events_deleted_with_the_base_moved_up_are_detected(cast, chain):
    AuditEvent.objects.filter(pk__in=[chain[0].pk, chain[1].pk]).delete()
    Organization.objects.filter(pk=cast.org.pk).update(audit_base_seq=2, audit_base_hash=chain[1].hash)
    _assert_broken(cast.org, "the chain's base was moved without the audit key: oldest events deleted")


def test_a_log_wiped_back_to_the_empty_start_is_detected(cast, chain):
    AuditEvent.objects.filter(organization=cast.org).delete()
    Organization.objects.filter(pk=cast.org.pk).update(audit_head_seq=0, audit_head_hash="")
    _assert_broken(cast.org, "the chain's head was moved without the audit key")


def test_a_new_organizations_empty_chain_is_sealed(db):
    org = Organization.objects.create(name="Fresh", slug="fresh")
    assert org.audit_head_mac and org.audit_base_mac and org.audit_head_mac != org.audit_base_mac
    assert verify_chain(org) == []


def test_a_deleted_oldest_event_is_detected(cast, chain):
    AuditEvent.objects.filter(pk=chain[0].pk).delete()
    _assert_broken(cast.org, "event #1 is missing")


def test_reordered_events_are_detected(cast, chain):
    second, fourth = chain[1], chain[3]
    # seq is unique per organization: swap through a free number
    AuditEvent.objects.filter(pk=second.pk).update(seq=-1)
    AuditEvent.objects.filter(pk=fourth.pk).update(seq=2)
    AuditEvent.objects.filter(pk=second.pk).update(seq=4)
    _assert_broken(cast.org, "does not follow the event before it")
    assert any("event #2 was edited" in p for p in verify_chain(cast.org))


def test_renumbered_events_are_detected(cast, chain):
    """Closing the gap after a deletion by renumbering the later events is still caught."""
    AuditEvent.objects.filter(pk=chain[2].pk).delete()
    for event in chain[3:]:
        AuditEvent.objects.filter(pk=event.pk).update(seq=F("seq") - 1)
    _assert_broken(cast.org, "does not follow")


def test_command_checks_only_the_named_organization(cast, chain):
    AuditEvent.objects.filter(pk=chain[0].pk).update(action="forged")
    assert "globex: 2 events, intact" in _verify_command("--org", "globex")
    with pytest.raises(CommandError):
        _verify_command("--org", "acme")


def test_command_refuses_an_unknown_organization(cast, chain):
    with pytest.raises(CommandError, match="no-such-org"):
        _verify_command("--org", "no-such-org")


def test_one_tenants_tampering_does_not_hide_in_anothers_chain(cast, chain):
    AuditEvent.objects.filter(pk=chain[1].pk).update(organization=cast.other_org, seq=3)
    assert verify_chain(cast.org) != []
    assert verify_chain(cast.other_org) != []


def _rewrite_from(events: list[AuditEvent], start: int, hash_of) -> None:
    """What a database user would do: recompute every hash from ``events[start]`` on, and the head."""
    prev = events[start - 1].hash if start else ""
    for event in events[start:]:
        event.prev_hash = prev
        event.hash = prev = hash_of(event)
        AuditEvent.objects.filter(pk=event.pk).update(prev_hash=event.prev_hash, hash=event.hash, key_id=event.key_id)
    Organization.objects.filter(pk=events[0].organization_id).update(audit_head_hash=prev)


def test_a_chain_rewritten_without_the_audit_key_is_detected(cast, chain):
    AuditEvent.objects.filter(pk=chain[2].pk).update(action="test.nothing_to_see")
    events = list(AuditEvent.objects.filter(organization=cast.org).order_by("seq"))
    _rewrite_from(events, 2, lambda e: sealed_hash(e, b"a guessed key"))
    _assert_broken(cast.org, "event #3 was edited after it was written")
    assert not any("does not follow" in p for p in verify_chain(cast.org))  # the links themselves hold


def test_a_chain_downgraded_to_plain_sha256_is_detected(cast, chain):
    AuditEvent.objects.filter(pk=chain[2].pk).update(action="test.nothing_to_see")
    events = list(AuditEvent.objects.filter(organization=cast.org).order_by("seq"))
    for event in events:
        event.key_id = ""
    _rewrite_from(events, 0, unkeyed_hash)
    _assert_broken(cast.org, "event #1 is not sealed with any audit key this platform holds")


def test_audit_keys_rotate_old_events_still_verify(cast, chain, settings):
    old_key = settings.AUDIT_KEYS[0]
    settings.AUDIT_KEYS = ["a-new-audit-key", old_key]
    assert verify_chain(cast.org) == []
    with transaction.atomic():
        newest = record(org=cast.org, actor=cast.owner, action="test.step")
    assert newest.key_id == key_id("a-new-audit-key") != chain[0].key_id
    assert verify_chain(cast.org) == []
    settings.AUDIT_KEYS = ["a-new-audit-key"]  # the old key retired too early
    problems = verify_chain(cast.org)
    assert [p for p in problems if "not sealed" in p] == [f"event #{n} is not sealed with any audit key this platform holds"
                                                          for n in range(1, 6)]


def test_legacy_unkeyed_chains_are_sealed_once_and_only_when_intact(cast, chain, settings):
    """Migration 0003: chains from before the key get sealed; a tampered one is left to be reported."""
    for org in (cast.org, cast.other_org):
        events = list(AuditEvent.objects.filter(organization=org).order_by("seq"))
        for event in events:
            event.key_id = ""
        _rewrite_from(events, 0, unkeyed_hash)
    AuditEvent.objects.filter(organization=cast.other_org, seq=1).update(action="forged")
    assert reseal_unkeyed(AuditEvent, Organization, settings.AUDIT_KEYS[0]) == [cast.other_org.slug]
    assert verify_chain(cast.org) == []
    assert set(AuditEvent.objects.filter(organization=cast.org).values_list("key_id", flat=True)) == {chain[0].key_id}
    assert verify_chain(cast.other_org) != []
    assert reseal_unkeyed(AuditEvent, Organization, settings.AUDIT_KEYS[0]) == [cast.other_org.slug]  # idempotent


# --- retention -----------------------------------------------------------------------------------


def _age(event: AuditEvent, days: int) -> None:
    """Backdate an event and re-hash it, as if it had been written ``days`` ago."""
    event.created_at = timezone.now() - dt.timedelta(days=days)
    seal(event)
    AuditEvent.objects.filter(pk=event.pk).update(created_at=event.created_at, hash=event.hash)


@pytest.fixture
def aged_chain(cast) -> list[AuditEvent]:
    """Five events written 50, 40, 30, 20 and 10 days ago."""
    events = []
    for n, days in enumerate((50, 40, 30, 20, 10)):
        with transaction.atomic():
            event = record(org=cast.org, actor=cast.owner, action="test.step", after={"n": n})
        # Backdating rewrites the hash, so the next event must link to the rewritten one.
        if events:
            event.prev_hash = events[-1].hash
        _age(event, days)
        AuditEvent.objects.filter(pk=event.pk).update(prev_hash=event.prev_hash)
        events.append(event)
    head = events[-1]
    Organization.objects.filter(pk=cast.org.pk).update(
        audit_head_hash=head.hash,
        audit_head_mac=anchor_mac(settings.AUDIT_KEYS[0].encode(), cast.org.pk, "head", head.seq, head.hash),
    )
    assert verify_chain(cast.org) == []
    return events


def test_retention_deletes_old_events_and_keeps_the_chain_verifiable(cast, aged_chain):
    deleted = apply_retention(org=cast.org, older_than=timezone.now() - dt.timedelta(days=25))
    assert deleted == 3
    assert list(AuditEvent.objects.filter(organization=cast.org).order_by("seq").values_list("seq", flat=True)) == [4, 5]
    assert verify_chain(cast.org) == []
    assert "acme: 2 events, intact" in _verify_command("--org", "acme")


def test_the_chain_continues_after_retention(cast, aged_chain):
    apply_retention(org=cast.org, older_than=timezone.now() - dt.timedelta(days=25))
    edge.site_create(actor=cast.editor, org=cast.org, name="After", hostnames=["after.acme.test"])
    assert verify_chain(cast.org) == []
    assert AuditEvent.objects.get(action="site.create").seq == 6


def test_retention_of_everything_keeps_the_chain_verifiable(cast, aged_chain):
    assert apply_retention(org=cast.org, older_than=timezone.now()) == 5
    assert verify_chain(cast.org) == []
    edge.site_create(actor=cast.editor, org=cast.org, name="After", hostnames=["after.acme.test"])
    assert verify_chain(cast.org) == []


def test_retention_with_nothing_old_enough_changes_nothing(cast, aged_chain):
    assert apply_retention(org=cast.org, older_than=timezone.now() - dt.timedelta(days=90)) == 0
    assert AuditEvent.objects.filter(organization=cast.org).count() == 5


def test_pruning_without_the_retention_job_is_detected(cast, aged_chain):
    AuditEvent.objects.filter(pk__in=[e.pk for e in aged_chain[:2]]).delete()
    _assert_broken(cast.org, "event #1 is missing")


def test_retention_touches_only_its_organization(cast, aged_chain):
    with transaction.atomic():
        record(org=cast.other_org, actor=cast.outsider, action="test.step")
    AuditEvent.objects.filter(organization=cast.other_org).update(created_at=timezone.now() - dt.timedelta(days=400))
    apply_retention(org=cast.org, older_than=timezone.now() - dt.timedelta(days=25))
    assert AuditEvent.objects.filter(organization=cast.other_org).count() == 1


# --- recording -----------------------------------------------------------------------------------


def test_record_copies_who_what_and_where(cast):
    with transaction.atomic():
        event = record(
            org=cast.org, actor=cast.admin, action="organization.rename", target=cast.org, before={"name": "A"}, after={"name": "B"}
        )
    event.refresh_from_db()
    assert (event.actor_kind, event.actor_user, event.actor_ref, event.actor_name) == (
        "user",
        cast.admin.user,
        f"user:{cast.admin.user.pk}",
        "admin@acme.test",
    )
    assert (event.action, event.target_type, event.target_id, event.target_repr) == (
        "organization.rename",
        "organization",
        str(cast.org.pk),
        "Acme",
    )
    assert event.changes == {"name": ["A", "B"]}
    assert (event.ip, event.user_agent, event.request_id) == ("192.0.2.10", "pytest", "req-test-0001")


@pytest.mark.parametrize("ip", ["2001:DB8::1", "2001:db8:0:0:0:0:0:1", "::ffff:192.0.2.1", "fe80::1", "192.0.2.1"])
def test_ip_addresses_in_any_spelling_keep_the_chain_verifiable(ip, cast):
    actor = Actor.for_user(cast.owner.user, ip=ip, user_agent="pytest")
    edge.site_create(actor=actor, org=cast.org, name="V6", hostnames=["v6.acme.test"])
    assert verify_chain(cast.org) == []


def test_unicode_and_odd_values_keep_the_chain_verifiable(cast):
    actor = Actor.for_user(cast.owner.user, user_agent="Mozilla/5.0 (Ünïcode; ☃)", request_id="r" * 64)
    with transaction.atomic():
        record(org=cast.org, actor=actor, action="test.odd", after={"name": "Bücher ☃", "ratio": 0.1, "big": 2**53 + 1, "list": [1, None]})
    assert verify_chain(cast.org) == []


@pytest.mark.django_db(transaction=True)
def test_record_refuses_to_run_outside_a_transaction(cast):
    with pytest.raises(RuntimeError, match="inside the service's transaction"):
        record(org=cast.org, actor=cast.owner, action="test.loose")
    assert not AuditEvent.objects.exists()
