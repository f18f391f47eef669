"""Compile, sign, record and distribute config snapshots.

Services call ``publish_on_commit()``; the publish runs in a Celery task after the change
commits. Bursts coalesce twice over: one request per transaction, and one compile for every
request that arrived before the compile started (``PublishState``).
"""

from __future__ import annotations

import hashlib
import logging
import time

from django.conf import settings
from django.db import transaction
from django.db.models import F
from kombu.exceptions import OperationalError

from proxyworker import snapshot

from .models import ConfigVersion, PublishState

log = logging.getLogger(__name__)

# The snapshot this process published last, so the next publish's change summary does not have to
# decode the stored envelope again: (version number, snapshot).
_last_published: tuple[int, snapshot.Snapshot] | None = None


def fleet_key() -> snapshot.FleetKey:
    return snapshot.FleetKey(settings.FLEET_KEY)


def _request_publish() -> None:
    PublishState.get()
    PublishState.objects.filter(pk=1).update(requested=F("requested") + 1)
    from .tasks import publish

    try:
        publish.apply_async(retry=True, retry_policy={"max_retries": 1, "interval_start": 0.1})
    except (OperationalError, OSError):
        # The broker is down. The change is committed and counted in PublishState; the beat's
        # periodic publish picks it up once the broker is back. Never fail the user's request.
        log.warning("broker unavailable: publish deferred to the periodic publish")


def publish_on_commit(reason: str = "") -> None:
    """Ask for a publish once the current transaction commits (at once outside one)."""
    conn = transaction.get_connection()
    # Django drops callbacks of a rolled-back transaction itself, so a change that never
    # commits never publishes; one callback per transaction is enough.
    if any(func is _request_publish for _, func, _ in conn.run_on_commit):
        return
    transaction.on_commit(_request_publish)


def content_hash(snap: snapshot.Snapshot) -> str:
    """What a snapshot serves, without its version and time: equal hashes, nothing to publish."""
    import msgspec

    body = snapshot.encode(msgspec.structs.replace(snap, version=0, generated_at=0.0))
    return hashlib.sha256(body).hexdigest()


def publish(*, force: bool = False) -> ConfigVersion | None:
    """Compile the current state as the next version and distribute it, unless nothing changed."""
    from .compiler import compile_snapshot
    from .distribution import broadcast, current_challenges

    with transaction.atomic():
        state = PublishState.objects.select_for_update().get_or_create(pk=1)[0]
        if state.published >= state.requested and not force and ConfigVersion.objects.exists():
            return None
        target = state.requested
        latest = ConfigVersion.objects.order_by("-number").first()
        number = (latest.number if latest else 0) + 1
        started = time.perf_counter()
        skipped: list[dict[str, str]] = []
        snap = compile_snapshot(version=number, fleet_key=fleet_key(), acme_challenges=current_challenges(), skipped=skipped)
        compiled = time.perf_counter()
        digest = content_hash(snap)
        PublishState.objects.filter(pk=1).update(published=target)
        if latest is not None and latest.content_hash == digest and not force:
            return None
        env = snapshot.sign(snap, fleet_key())
        text = snapshot.encode_envelope(env).decode()
        version = ConfigVersion.objects.create(
            number=number,
            sha256=env.sha256,
            content_hash=digest,
            size=len(env.body),
            envelope=text,
            changes={**summarize_changes(latest, snap), **({"skipped": skipped} if skipped else {})},
        )
    global _last_published
    _last_published = (number, snap)
    sent = broadcast(version.number, text)
    log.info(
        "published config v%s (%s bytes, %s sites) to %s workers: compiled in %.0f ms, signed and stored in %.0f ms",
        number, version.size, len(snap.sites), sent, 1000 * (compiled - started), 1000 * (time.perf_counter() - compiled),
    )
    return version


def summarize_changes(previous: ConfigVersion | None, snap: snapshot.Snapshot) -> dict:
    """Sites added, removed and changed since the previous version."""
    new = {s.id: s for s in snap.sites}
    if previous is None:
        return {"added": sorted(s.name for s in snap.sites), "removed": [], "changed": []}
    last = _last_published
    if last is not None and last[0] == previous.number:
        old_snap = last[1]
    else:
        try:
            old_snap = snapshot.decode(snapshot.decode_envelope(previous.envelope).body)
        except snapshot.SnapshotError:  # written under an older contract: no summary, but never a failed publish
            return {"added": sorted(s.name for s in snap.sites), "removed": [], "changed": [], "note": "previous version unreadable"}
    old = {s.id: s for s in old_snap.sites}
    return {
        "added": sorted(new[i].name for i in new.keys() - old.keys()),
        "removed": sorted(old[i].name for i in old.keys() - new.keys()),
        # Unchanged sites are usually the very same objects (the compiler reuses them).
        "changed": sorted(new[i].name for i in new.keys() & old.keys() if new[i] is not old[i] and new[i] != old[i]),
        "certificates": len(snap.certificates) - len(old_snap.certificates),
    }
