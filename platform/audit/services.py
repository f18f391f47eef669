from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone
from tenancy.access import Actor
from tenancy.models import Organization

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
    event.hash = event.compute_hash()
    event.save()
    Organization.objects.filter(pk=org.pk).update(audit_head_seq=event.seq, audit_head_hash=event.hash)
    return event


def _actor_ref(actor: Actor) -> str:
    if actor.kind == "user" and actor.user is not None:
        return f"user:{actor.user.pk}"
    if actor.kind == "token" and actor.token is not None:
        return f"token:{actor.token.pk}"
    return "system"


def verify_chain(org: Organization) -> list[str]:
    """Problems found in ``org``'s chain; empty when intact."""
    org.refresh_from_db(fields=["audit_head_seq", "audit_head_hash", "audit_base_seq", "audit_base_hash"])
    problems = []
    expected_seq, prev_hash = org.audit_base_seq + 1, org.audit_base_hash
    for event in AuditEvent.objects.filter(organization=org).order_by("seq").iterator():
        if event.seq != expected_seq:
            problems.append(f"event #{expected_seq} is missing (next found: #{event.seq})")
        if event.prev_hash != prev_hash:
            problems.append(f"event #{event.seq} does not follow the event before it (deleted or reordered)")
        if event.compute_hash() != event.hash:
            problems.append(f"event #{event.seq} was edited after it was written")
        expected_seq, prev_hash = event.seq + 1, event.hash
    if expected_seq - 1 != org.audit_head_seq or prev_hash != org.audit_head_hash:
        problems.append(f"the chain ends at #{expected_seq - 1} but its head says #{org.audit_head_seq}: newest events deleted")
    return problems


def apply_retention(*, org: Organization, older_than: dt.datetime) -> int:
    """Delete events older than ``older_than`` and move the chain's base past them."""
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=org.pk).first()
        old = AuditEvent.objects.filter(organization=org, created_at__lt=older_than).order_by("-seq")
        newest_old = old.first()
        if newest_old is None:
            return 0
        deleted, _ = AuditEvent.objects.filter(organization=org, seq__lte=newest_old.seq).delete()
        Organization.objects.filter(pk=org.pk).update(audit_base_seq=newest_old.seq, audit_base_hash=newest_old.hash)
        return deleted
