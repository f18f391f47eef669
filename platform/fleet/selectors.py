"""Reads about the fleet: who is online, how far a version has rolled out, what changed."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from django.utils import timezone

from proxyworker import snapshot

from .distribution import OFFLINE_AFTER
from .models import ConfigVersion, Rollout, Worker


def online_workers():
    return Worker.objects.filter(last_heartbeat__gte=timezone.now() - OFFLINE_AFTER)


def is_online(worker: Worker) -> bool:
    return worker.last_heartbeat is not None and worker.last_heartbeat >= timezone.now() - OFFLINE_AFTER


@dataclass
class RolloutStatus:
    version: int
    online: int
    applied: int  # online workers serving this version or a newer one
    rejected: list[dict] = field(default_factory=list)  # [{"worker": name, "reason": ...}]
    pending: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.online > 0 and self.applied == self.online

    def __str__(self) -> str:
        return f"v{self.version} applied on {self.applied} of {self.online} workers"


def rollout_status(number: int) -> RolloutStatus:
    workers = list(online_workers())
    rejections = {
        r.worker_id: r.reason for r in Rollout.objects.filter(version=number, outcome=Rollout.Outcome.REJECTED, worker__in=workers)
    }
    status = RolloutStatus(version=number, online=len(workers), applied=0)
    for w in workers:
        if w.version >= number:
            status.applied += 1
        elif w.pk in rejections:
            status.rejected.append({"worker": w.name, "reason": rejections[w.pk]})
        else:
            status.pending.append(w.name)
    return status


def _sites(version: ConfigVersion, organization: str | None = None) -> dict[str, dict]:
    snap = snapshot.decode(snapshot.decode_envelope(version.envelope).body)
    return {s.id: msgspec.to_builtins(s) for s in snap.sites if organization is None or s.organization == organization}


def version_diff(old: ConfigVersion, new: ConfigVersion, *, organization_id: str | None = None) -> dict:
    """Per site: added, removed, or the fields that changed with their old and new values.

    Certificates' keys never appear: only site configuration is compared. With
    ``organization_id``, only that organization's sites are compared (what a tenant may see).
    """
    org = str(organization_id) if organization_id is not None else None
    a, b = _sites(old, org), _sites(new, org)
    changed = {}
    for site_id in a.keys() & b.keys():
        fields = {k: {"old": a[site_id].get(k), "new": b[site_id].get(k)} for k in a[site_id].keys() | b[site_id].keys()
                  if a[site_id].get(k) != b[site_id].get(k)}
        if fields:
            changed[b[site_id]["name"]] = fields
    return {
        "from": old.number,
        "to": new.number,
        "added": sorted(b[i]["name"] for i in b.keys() - a.keys()),
        "removed": sorted(a[i]["name"] for i in a.keys() - b.keys()),
        "changed": changed,
    }
