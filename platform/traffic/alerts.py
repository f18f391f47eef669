"""Incidents: opened once, resolved once, each sent by email and signed webhook.

An alert is one row per incident. The partial unique constraint ``one_open_alert_per_subject``
makes "once" hold under concurrency: a second opener of the same (organization, kind, subject)
finds the open row instead of creating another, so a backend that stays down for an hour is one
alert, however many reports say so. Resolving sets ``resolved_at``; the next incident is a new row.

Sources: backend health changes (from ``services.ingest``), and ``evaluate`` every 30 s (beat):
error-rate spikes and traffic spikes against the site's own baseline (from the minute rollups),
workers gone offline, certificates close to expiry. Rates use hysteresis (open at the threshold,
resolve below half of it) so that a rate hovering at the line does not flap.

Webhooks carry ``X-Portico-Timestamp`` and ``X-Portico-Signature: sha256=<hex>``, the HMAC-SHA256
under the organization's webhook secret of ``<timestamp>.<body>`` (Stripe's scheme: the timestamp
inside the MAC stops replays of old deliveries).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone
from edge.models import Site
from fleet.models import Worker
from tenancy.models import Membership, Organization, Role

from .models import Alert, AlertSettings, BackendHealth, TrafficHour, TrafficMinute

log = logging.getLogger(__name__)

WINDOW = dt.timedelta(minutes=5)


def settings_for(org_id) -> AlertSettings:
    return AlertSettings.objects.get_or_create(organization_id=org_id)[0]


# --- opening and resolving ------------------------------------------------------------------------


def open_alert(*, org_id, kind: str, subject: str, summary: str, site_id=None, details: dict | None = None) -> Alert | None:
    """Open an incident unless one is open for the same subject. Returns the new alert, or None."""
    if Alert.objects.filter(organization_id=org_id, kind=kind, subject=subject, resolved_at__isnull=True).exists():
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(organization_id=org_id, kind=kind, subject=subject, summary=summary[:300],
                                         site_id=site_id, details=details or {})
    except IntegrityError:  # opened concurrently by another report: that one is the incident
        return None
    _notify_later(alert.pk, "opened")
    return alert


def resolve_alert(*, org_id, kind: str, subject: str) -> Alert | None:
    with transaction.atomic():
        alert = (Alert.objects.select_for_update()
                 .filter(organization_id=org_id, kind=kind, subject=subject, resolved_at__isnull=True).first())
        if alert is None:
            return None
        alert.resolved_at = timezone.now()
        alert.save(update_fields=["resolved_at"])
    _notify_later(alert.pk, "resolved")
    return alert


def _notify_later(alert_id: int, event: str) -> None:
    from .tasks import notify

    transaction.on_commit(lambda: notify.delay(alert_id=alert_id, event=event))


# --- sources -------------------------------------------------------------------------------------


def _online_workers():
    from fleet.selectors import online_workers

    return online_workers()


def backend_health_changed(changes: list[BackendHealth]) -> None:
    """A backend is down when no online worker sees it up; up again when one does."""
    online = set(_online_workers().values_list("pk", flat=True))
    for change in changes:
        views = list(BackendHealth.objects.filter(backend_id=change.backend_id, worker_id__in=online)
                     .values_list("up", flat=True))
        subject = str(change.backend_id)
        if views and not any(views):
            site = Site.objects.filter(pk=change.site_id).first()
            open_alert(org_id=change.organization_id, kind=Alert.Kind.BACKEND_DOWN, subject=subject,
                       site_id=change.site_id, details={"workers": len(views)},
                       summary=f"Backend {subject[:8]} of {site.name if site else 'a site'} is down on all {len(views)} workers")
        elif any(views):
            resolve_alert(org_id=change.organization_id, kind=Alert.Kind.BACKEND_DOWN, subject=subject)


def evaluate(*, now: dt.datetime | None = None) -> None:
    now = now or timezone.now()
    _error_rates(now)
    _traffic_spikes(now)
    _workers_offline(now)
    _certificates(now)


def _recent_by_site(now: dt.datetime):
    end = now.replace(second=0, microsecond=0)  # complete minutes only
    return (TrafficMinute.objects.filter(minute__gte=end - WINDOW, minute__lt=end)
            .values("site_id", "organization_id").annotate(n=Sum("requests"), errors=Sum("s5xx")))


def _error_rates(now: dt.datetime) -> None:
    seen = set()
    for row in _recent_by_site(now):
        conf = settings_for(row["organization_id"])
        seen.add(row["site_id"])
        rate = 100.0 * row["errors"] / row["n"] if row["n"] else 0.0
        subject = str(row["site_id"])
        if conf.enabled and row["n"] >= conf.min_requests and rate >= conf.error_rate_percent:
            name = Site.objects.filter(pk=row["site_id"]).values_list("name", flat=True).first()
            open_alert(org_id=row["organization_id"], kind=Alert.Kind.ERROR_RATE, subject=subject, site_id=row["site_id"],
                       summary=f"{name}: {rate:.0f}% of requests failed (5xx) in the last 5 minutes",
                       details={"rate_percent": round(rate, 1), "requests": row["n"]})
        elif rate < conf.error_rate_percent / 2:
            resolve_alert(org_id=row["organization_id"], kind=Alert.Kind.ERROR_RATE, subject=subject)
    for alert in Alert.objects.filter(kind=Alert.Kind.ERROR_RATE, resolved_at__isnull=True).exclude(site_id__in=seen):
        resolve_alert(org_id=alert.organization_id, kind=alert.kind, subject=alert.subject)  # no traffic: no errors


def _traffic_spikes(now: dt.datetime) -> None:
    day_ago = now - dt.timedelta(hours=24)
    for row in _recent_by_site(now):
        conf = settings_for(row["organization_id"])
        hours = TrafficHour.objects.filter(site_id=row["site_id"], hour__gte=day_ago).aggregate(n=Sum("requests"), h=Sum(1))
        if not hours["h"] or hours["h"] < 6:  # no baseline yet: a new site's first hours are not a spike
            continue
        baseline = hours["n"] / hours["h"] / 12  # requests per 5 minutes
        subject = str(row["site_id"])
        if conf.enabled and row["n"] >= conf.min_requests and row["n"] >= conf.traffic_spike_factor * max(baseline, 1.0):
            open_alert(org_id=row["organization_id"], kind=Alert.Kind.TRAFFIC_SPIKE, subject=subject,
                       site_id=row["site_id"], summary=f"Traffic is {row['n'] / max(baseline, 1.0):.0f}× the usual rate",
                       details={"requests_5m": row["n"], "baseline_5m": round(baseline, 1)})
        elif row["n"] < conf.traffic_spike_factor * max(baseline, 1.0) / 2:
            resolve_alert(org_id=row["organization_id"], kind=Alert.Kind.TRAFFIC_SPIKE, subject=subject)


def _workers_offline(now: dt.datetime) -> None:
    from fleet.distribution import BROADCAST_HORIZON, OFFLINE_AFTER

    # Workers serve every organization's sites: each organization with sites hears of it.
    orgs = list(Organization.objects.filter(pk__in=Site.objects.values("organization_id")).values_list("pk", flat=True))
    for worker in Worker.objects.filter(last_heartbeat__isnull=False):
        silent = now - worker.last_heartbeat
        for org_id in orgs:
            if OFFLINE_AFTER < silent < BROADCAST_HORIZON:
                open_alert(org_id=org_id, kind=Alert.Kind.WORKER_OFFLINE, subject=worker.name,
                           summary=f"Worker {worker.name} has been silent for {int(silent.total_seconds())} s")
            elif silent <= OFFLINE_AFTER:
                resolve_alert(org_id=org_id, kind=Alert.Kind.WORKER_OFFLINE, subject=worker.name)


def _certificates(now: dt.datetime) -> None:
    from certs.models import Certificate

    for cert in Certificate.objects.filter(not_after__isnull=False):
        conf = settings_for(cert.organization_id)
        subject = str(cert.pk)
        if conf.enabled and cert.not_after < now + dt.timedelta(days=conf.cert_expiry_days):
            days = max(0, (cert.not_after - now).days)
            names = ", ".join(getattr(cert, "hostnames", None) or [])[:150] or subject[:8]
            open_alert(org_id=cert.organization_id, kind=Alert.Kind.CERT_EXPIRING, subject=subject,
                       summary=f"Certificate for {names} expires in {days} days",
                       details={"not_after": cert.not_after.isoformat()})
        else:
            resolve_alert(org_id=cert.organization_id, kind=Alert.Kind.CERT_EXPIRING, subject=subject)


# --- delivery ------------------------------------------------------------------------------------


def payload(alert: Alert, event: str) -> dict:
    return {
        "event": f"alert.{event}",
        "alert": {
            "id": alert.pk, "kind": alert.kind, "subject": alert.subject, "summary": alert.summary,
            "site": str(alert.site_id) if alert.site_id else None, "details": alert.details,
            "opened_at": alert.opened_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _webhook_target_allowed(url: str) -> bool:
    """The same SSRF guard as backends: no cloud metadata, link-local or unspecified addresses."""
    host = urlsplit(url).hostname or ""
    if host in settings.BACKEND_DENY_HOSTNAMES:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return not any(ipaddress.ip_address(a.split("%")[0]) in net for a in addresses for net in settings.BACKEND_DENY_NETWORKS)


def deliver(alert: Alert, event: str) -> list[dict]:
    conf = settings_for(alert.organization_id)
    results = []
    if not conf.enabled:
        return results
    body = json.dumps(payload(alert, event)).encode()
    recipients = conf.emails or list(Membership.objects.filter(
        organization_id=alert.organization_id, role__in=[Role.OWNER, Role.ADMIN]).values_list("user__email", flat=True))
    if recipients:
        verb = "Resolved" if event == "resolved" else "Alert"
        try:
            send_mail(f"[Portico] {verb}: {alert.summary}", json.dumps(payload(alert, event), indent=2),
                      None, recipients)
            results.append({"channel": "email", "event": event, "ok": True})
        except Exception as exc:
            results.append({"channel": "email", "event": event, "ok": False, "error": str(exc)[:200]})
    if conf.webhook_url:
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "Portico-Alerts/1", "X-Portico-Timestamp": stamp,
                   "X-Portico-Signature": sign(conf.webhook_secret, stamp, body)}
        try:
            if not _webhook_target_allowed(conf.webhook_url):
                raise ValueError("the webhook address is not allowed")
            req = urllib.request.Request(conf.webhook_url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                results.append({"channel": "webhook", "event": event, "ok": 200 <= resp.status < 300, "status": resp.status})
        except Exception as exc:
            results.append({"channel": "webhook", "event": event, "ok": False, "error": str(exc)[:200]})
    stamp_now = timezone.now().isoformat()
    for r in results:
        r["at"] = stamp_now
    Alert.objects.filter(pk=alert.pk).update(notified=alert.notified + results)
    return results
