"""The audit chain's hashing, apart from the models so that migrations can use it too.

An event is sealed with ``HMAC-SHA256(key, prev_hash + canonical JSON)``, and the chain's two ends
kept on the organization row (head: the newest event; base: the newest one pruned by retention)
carry an HMAC of their own, so they cannot be moved back over deleted events without the key.
Chains written before the log was keyed used plain SHA-256; ``reseal_unkeyed`` seals those once
(migration 0003), after checking that they are intact, so a tampered legacy chain is never
laundered into a sealed one.
"""

from __future__ import annotations

import hashlib
import hmac
import json


def canonical(event) -> bytes:
    """The event's hashed content (a model instance, or a historical one in a migration)."""
    data = {
        "organization": str(event.organization_id),
        "seq": event.seq,
        "created_at": event.created_at.isoformat(),
        "actor_kind": event.actor_kind,
        "actor_ref": event.actor_ref,
        "actor_name": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "changes": event.changes,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


def sealed_hash(event, key: bytes) -> str:
    return hmac.new(key, event.prev_hash.encode() + canonical(event), hashlib.sha256).hexdigest()


def unkeyed_hash(event) -> str:
    """How events were hashed before the chain was keyed (read only to re-seal such chains)."""
    return hashlib.sha256(event.prev_hash.encode() + canonical(event)).hexdigest()


def anchor_mac(key: bytes, org_id, end: str, seq: int, hash_: str) -> str:
    """The HMAC of one end (``head`` or ``base``) of an organization's chain."""
    return hmac.new(key, f"audit {end}:{org_id}:{seq}:{hash_}".encode(), hashlib.sha256).hexdigest()


def key_id(key: str) -> str:
    return hashlib.sha256(b"portico audit key id:" + key.encode()).hexdigest()[:16]


def current_key() -> str:
    """The key new events and chain ends are sealed with: the first of ``settings.AUDIT_KEYS``."""
    from django.conf import settings

    return settings.AUDIT_KEYS[0]


def current_anchor(org_id, end: str, seq: int, hash_: str) -> str:
    return anchor_mac(current_key().encode(), org_id, end, seq, hash_)


def link_problems(events, base_seq: int, base_hash: str, head_seq: int, head_hash: str, seal_problem) -> list[str]:
    """What is wrong with a chain of ``events`` (oldest first) between its base and head: gaps,
    broken links, an end that does not match; ``seal_problem(event)`` judges each event's hash
    (a message, or None when it holds)."""
    problems = []
    expected_seq, prev_hash = base_seq + 1, base_hash
    for event in events:
        if event.seq != expected_seq:
            problems.append(f"event #{expected_seq} is missing (next found: #{event.seq})")
        if event.prev_hash != prev_hash:
            problems.append(f"event #{event.seq} does not follow the event before it (deleted or reordered)")
        problem = seal_problem(event)
        if problem:
            problems.append(problem)
        expected_seq, prev_hash = event.seq + 1, event.hash
    if expected_seq - 1 != head_seq or prev_hash != head_hash:
        problems.append(f"the chain ends at #{expected_seq - 1} but its head says #{head_seq}: newest events deleted")
    return problems


def reseal_unkeyed(events, organizations, key: str) -> list[str]:
    """Seal every organization's legacy (unkeyed) chain with ``key``; ``events`` and
    ``organizations`` are the model classes (historical ones in a migration). A chain that does not
    verify as it stands is left unsealed, so ``audit_verify`` keeps reporting it; their slugs are
    returned."""
    kid, raw = key_id(key), key.encode()
    left: list[str] = []
    for org in organizations.objects.all():
        rows = list(events.objects.filter(organization_id=org.pk, key_id="").order_by("seq"))
        if not rows:
            if not events.objects.filter(organization_id=org.pk).exists():  # nothing, or all pruned
                organizations.objects.filter(pk=org.pk).update(
                    audit_head_mac=anchor_mac(raw, org.pk, "head", org.audit_head_seq, org.audit_head_hash),
                    audit_base_mac=anchor_mac(raw, org.pk, "base", org.audit_base_seq, org.audit_base_hash),
                )
            continue
        if link_problems(rows, org.audit_base_seq, org.audit_base_hash, org.audit_head_seq, org.audit_head_hash,
                         lambda e: "edited" if unkeyed_hash(e) != e.hash else None):
            left.append(org.slug)
            continue
        prev = org.audit_base_hash
        for event in rows:
            event.prev_hash, event.key_id = prev, kid
            event.hash = prev = sealed_hash(event, raw)
        events.objects.bulk_update(rows, ["prev_hash", "key_id", "hash"])
        organizations.objects.filter(pk=org.pk).update(
            audit_head_hash=prev,
            audit_head_mac=anchor_mac(raw, org.pk, "head", org.audit_head_seq, prev),
            audit_base_mac=anchor_mac(raw, org.pk, "base", org.audit_base_seq, org.audit_base_hash),
        )
    return left
