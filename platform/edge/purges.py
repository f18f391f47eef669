"""Cache purges: drop cached responses on every worker.

``purge_create`` validates, stores and audits a purge, and once the transaction commits a task
sends it to the workers (``purge_send``). Each worker's agent confirms (``purge_confirmed``); a
purge is done when every worker it was sent to confirmed it. A worker that was away when a purge
was sent (no heartbeat within the broadcast horizon) gets it on its next hello or heartbeat
(``send_missed``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from urllib.parse import urlsplit

from audit.services import record
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from tenancy.access import Actor, ensure_in_org, require
from tenancy.models import Organization, Role

from proxyworker import snapshot

from .models import Hostname, Purge, Site

log = logging.getLogger(__name__)

_TAG = re.compile(r"[^\s,]{1,128}")


def _site_serving(host: str, org: Organization) -> Site | None:
    """The organization's site that answers ``host``: an exact name, or a wildcard one label up."""
    candidates = [host]
    if "." in host:
        candidates.append("*." + host.split(".", 1)[1])
    names = {h.name: h for h in Hostname.objects.for_org(org).filter(name__in=candidates).select_related("site")}
    for name in candidates:  # an exact name wins over the wildcard
        if name in names:
            return names[name].site
    return None


def _check_url(value: str, org: Organization, site: Site | None) -> Site:
    """The site a purge URL (or URL prefix) belongs to; ValidationError on ``value`` otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"value": f"{value!r} is not a full URL: give one such as https://www.example.com/path."})
    try:
        host = snapshot.normalize_hostname(parts.hostname)
    except ValueError as exc:
        raise ValidationError({"value": str(exc)}) from None
    serving = _site_serving(host, org)
    if serving is None:
        raise ValidationError({"value": f"{host} is not a hostname of any of your sites."})
    if site is not None and serving.pk != site.pk:
        raise ValidationError({"value": f"{host} belongs to your site {serving.name!r}, not to {site.name!r}."})
    return serving


@transaction.atomic
def purge_create(*, actor: Actor, org: Organization, site: Site | None, kind: str, value: str = "") -> Purge:
    """Ask every worker to drop cached responses. ``site`` None: all of the organization's sites
    (for ``tag`` and ``all``); for ``url`` and ``prefix`` the site is the one serving the URL."""
    require(actor, org, Role.EDITOR)
    if site is not None:
        ensure_in_org(site, org)
    value = (value or "").strip()
    if kind not in Purge.Kind.values:
        raise ValidationError({"kind": f"Unknown purge kind {kind!r}; use one of {', '.join(Purge.Kind.values)}."})
    if len(value) > Purge._meta.get_field("value").max_length:
        raise ValidationError({"value": "At most 2000 characters."})
    if kind in (Purge.Kind.URL, Purge.Kind.PREFIX):
        if not value:
            raise ValidationError({"value": "Give the URL to purge, such as https://www.example.com/path."})
        site = _check_url(value, org, site)
    elif kind == Purge.Kind.TAG:
        if not _TAG.fullmatch(value):
            raise ValidationError({"value": "A cache tag is 1 to 128 characters without spaces or commas."})
    elif value:
        raise ValidationError({"value": "Purging everything takes no value."})
    purge = Purge.objects.create(organization=org, site=site, kind=kind, value=value, created_by=actor.display[:300])
    record(
        org=org,
        actor=actor,
        action="purge.create",
        target=purge,
        after={"kind": kind, "value": value, "site": site.name if site else None},
    )
    transaction.on_commit(lambda: _enqueue_send(purge.pk))
    return purge


def _enqueue_send(purge_id: uuid.UUID) -> None:
    from .tasks import purge_send

    try:
        purge_send.apply_async(args=[str(purge_id)], retry=True, retry_policy={"max_retries": 1, "interval_start": 0.1})
    except Exception:
        # The purge is stored as requested; the person sees that status and can retry.
        log.warning("broker unavailable: purge %s not sent", purge_id)


def purge_message(purge: Purge) -> dict:
    """What the workers receive. ``sites`` lists every site the purge covers, so a worker never
    needs to know which organization owns what."""
    if purge.site_id is not None:
        sites = [str(purge.site_id)]
    else:
        sites = [str(pk) for pk in Site.objects.for_org(purge.organization).values_list("pk", flat=True)]
    return {
        "kind": "purge",
        "id": str(purge.id),
        "organization": str(purge.organization_id),
        "site": str(purge.site_id) if purge.site_id else None,
        "sites": sites,
        "purge_kind": purge.kind,
        "value": purge.value,
    }


def purge_send(*, purge_id: str) -> int:
    """Send a requested purge to every recent worker. Returns how many it was sent to."""
    from fleet.distribution import broadcast_message

    purge = Purge.objects.filter(pk=purge_id, status=Purge.Status.REQUESTED).select_related("organization").first()
    if purge is None:
        return 0
    names = broadcast_message(purge_message(purge))
    sent = len(names)
    with transaction.atomic():
        purge = Purge.objects.select_for_update().get(pk=purge.pk)
        now = timezone.now()
        purge.workers_sent, purge.sent_at, purge.sent_to = sent, now, names
        # Fast workers may confirm before this update: count what already arrived.
        if len(purge.confirmations) >= sent:
            purge.status, purge.completed_at = Purge.Status.DONE, now
        else:
            purge.status = Purge.Status.SENT
        purge.save(update_fields=["workers_sent", "sent_at", "sent_to", "status", "completed_at"])
    return sent


# Purge transactions may commit out of ``sent_at`` order: each check looks back this far, and
# ``sent_to`` keeps a purge from being sent twice.
CATCH_UP_OVERLAP = dt.timedelta(minutes=1)


def send_missed(*, worker_name: str) -> int:
    """Send ``worker_name`` the purges that went out without it (it was away, so left out of the
    broadcast), so its cache does not serve what the others dropped; each counts it as one more
    worker to confirm. Called on every hello and heartbeat: usually nothing to do. Returns how many
    it was sent."""
    from fleet.distribution import send_to_worker
    from fleet.models import Worker

    sent = 0
    with transaction.atomic():
        # One check at a time per worker: a hello and a heartbeat may be handled at once.
        worker = Worker.objects.select_for_update().filter(name=worker_name).first()
        if worker is None:
            return 0
        if worker.purges_seen_until is None:  # a new worker: nothing of its own to catch up on
            Worker.objects.filter(pk=worker.pk).update(purges_seen_until=timezone.now())
            return 0
        purges = list(
            Purge.objects.select_for_update(of=("self",))
            .filter(sent_at__gt=worker.purges_seen_until - CATCH_UP_OVERLAP)
            .select_related("organization")
            .order_by("sent_at")
        )
        for purge in purges:
            if worker_name in purge.sent_to:
                continue  # it was there: the message waits in its queue
            # Published before this transaction commits: if the commit fails, the next check sends
            # it again (a purge applied twice drops nothing it should keep for long).
            send_to_worker(worker_name, purge_message(purge))
            purge.sent_to = [*purge.sent_to, worker_name]
            purge.workers_sent += 1
            if worker_name not in purge.confirmations:
                purge.status, purge.completed_at = Purge.Status.SENT, None
            purge.save(update_fields=["sent_to", "workers_sent", "status", "completed_at"])
            sent += 1
        if purges and purges[-1].sent_at > worker.purges_seen_until:
            Worker.objects.filter(pk=worker.pk).update(purges_seen_until=purges[-1].sent_at)
    return sent


def purge_confirmed(*, worker_name: str, purge_id: str | None) -> None:
    """A worker dropped what the purge covers."""
    try:
        pk = uuid.UUID(str(purge_id))
    except ValueError:
        return
    with transaction.atomic():
        purge = Purge.objects.select_for_update().filter(pk=pk).first()
        if purge is None:
            return
        purge.confirmations = {**purge.confirmations, worker_name: timezone.now().isoformat()}
        if purge.status == Purge.Status.SENT and len(purge.confirmations) >= purge.workers_sent:
            purge.status, purge.completed_at = Purge.Status.DONE, timezone.now()
        purge.save(update_fields=["confirmations", "status", "completed_at"])
