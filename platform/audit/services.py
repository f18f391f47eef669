from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from tenancy.access import Actor
from tenancy.models import Organization

from .chain import anchor_mac, current_anchor, current_key, key_id, link_problems
from .models import AuditEvent
from .redact import redact


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list]:
    """``{"field": [before, after]}`` for every field that differs; secrets redacted."""
    before, after = before or {}, after or {}
    out = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            out[key] = [redact(old, key), redact(new, key)]
    return out


def record(
    *,
    org: Organization,
    actor: Actor,
    action: str,
    target: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an event to ``org``'s chain. Call it inside the service's transaction.

    The organization row is locked for the append, so concurrent writers in one organization
    queue up and ``seq`` has no gaps (Postgres; SQLite serialises all writers anyway).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record() must run inside the service's transaction")
    head = Organization.objects.select_for_update().only("audit_head_seq", "audit_head_hash").get(pk=org.pk)
    event = AuditEvent(
        organization_id=org.pk,
        seq=head.audit_head_seq + 1,
        created_at=timezone.now(),
        actor_kind=actor.kind,
        actor_user=actor.user if actor.kind == "user" else None,
        actor_token=actor.token if actor.kind == "token" else None,
        actor_ref=_actor_ref(actor),
        actor_name=actor.display[:300],
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "") or "") if target is not None else "",
        target_repr=str(target)[:300] if target is not None else "",
        changes=redact(changes) if changes is not None else diff(before, after),
        # The spelling the database stores (IPv6 lower-cased and compressed), so that the hash
        # computed now matches the one verify_chain computes from the row later.
        ip=AuditEvent._meta.get_field("ip").get_prep_value(actor.ip) or None,
        user_agent=actor.user_agent[:300],
        request_id=actor.request_id[:64],
        prev_hash=head.audit_head_hash,
    )
    seal(event)
    event.save()
    Organization.objects.filter(pk=org.pk).update(
        audit_head_seq=event.seq, audit_head_hash=event.hash,
        audit_head_mac=current_anchor(org.pk, "head", event.seq, event.hash),
    )
    return event


def seal(event: AuditEvent) -> None:
    """Set the event's hash with the current audit key."""
    current = current_key()
    event.key_id = key_id(current)
    event.hash = event.compute_hash(current.encode())


def audit_keys() -> dict[str, bytes]:
    """Every key the chain may be sealed with, by key id (the current one and retired ones)."""
    return {key_id(key): key.encode() for key in settings.AUDIT_KEYS}


def _actor_ref(actor: Actor) -> str:
    if actor.kind == "user" and actor.user is not None:
        return f"user:{actor.user.pk}"
    if actor.kind == "token" and actor.token is not None:
        return f"token:{actor.token.pk}"
    return "system"


def verify_chain(org: Organization) -> list[str]:
    """Problems found in ``org``'s chain; empty when intact."""
    org.refresh_from_db(fields=["audit_head_seq", "audit_head_hash", "audit_head_mac", "audit_base_seq",
                                "audit_base_hash", "audit_base_mac"])
    problems = []
    keys = audit_keys()
    if not _anchored(keys, org, "base", org.audit_base_seq, org.audit_base_hash, org.audit_base_mac):
        problems.append("the chain's base was moved without the audit key: oldest events deleted")
    if not _anchored(keys, org, "head", org.audit_head_seq, org.audit_head_hash, org.audit_head_mac):
        problems.append("the chain's head was moved without the audit key: newest events deleted")

    def seal_problem(event: AuditEvent) -> str | None:
        key = keys.get(event.key_id)
        if key is None:
            return f"event #{event.seq} is not sealed with any audit key this platform holds"
        if event.compute_hash(key) != event.hash:
            return f"event #{event.seq} was edited after it was written"
        return None

    events = AuditEvent.objects.filter(organization=org).order_by("seq").iterator()
    return problems + link_problems(events, org.audit_base_seq, org.audit_base_hash, org.audit_head_seq,
                                    org.audit_head_hash, seal_problem)


def _anchored(keys: dict[str, bytes], org: Organization, end: str, seq: int, hash_: str, mac: str) -> bool:
    """One end of the chain carries the HMAC the platform gave it (the empty start included)."""
    return any(hmac.compare_digest(anchor_mac(key, org.pk, end, seq, hash_), mac) for key in keys.values())


def apply_retention(*, org: Organization, older_than: dt.datetime) -> int:
    """Delete events older than ``older_than`` and move the chain's base past them."""
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=org.pk).first()
        old = AuditEvent.objects.filter(organization=org, created_at__lt=older_than).order_by("-seq")
        newest_old = old.first()
        if newest_old is None:
            return 0
        deleted, _ = AuditEvent.objects.filter(organization=org, seq__lte=newest_old.seq).delete()
        Organization.objects.filter(pk=org.pk).update(
            audit_base_seq=newest_old.seq, audit_base_hash=newest_old.hash,
            audit_base_mac=current_anchor(org.pk, "base", newest_old.seq, newest_old.hash),
        )
        return deleted
