"""Every change to certificates. Each function checks the actor's role, validates with errors that
name the field, writes in one transaction with its audit event, and asks for a config publish
once the transaction commits when what the workers serve changes.

Private keys never leave this module in clear except towards the fleet (re-encrypted for it by
the compiler): not in return values meant for display, not in audit events, not in logs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from audit.services import record
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from fleet.publisher import publish_on_commit
from tenancy.access import Actor, ensure_in_org, require
from tenancy.models import Organization, Role

from proxyworker import snapshot

from . import acme_client, internal_ca, pem
from .models import Certificate, InFlightName

log = logging.getLogger(__name__)

MAX_NAMES = 100  # Let's Encrypt's limit of names per certificate
RENEWAL_ACTOR = Actor.system("certificate renewal")
# Audit warnings when an issued certificate gets this close to expiry (days, largest first).
EXPIRY_WARNINGS = (14, 7, 1, 0)  # 0: expired


def _site_models():
    from edge.models import Hostname, Site

    return Hostname, Site


def _normalize(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in names:
        try:
            name = snapshot.normalize_hostname(str(raw))
        except ValueError as exc:
            raise ValidationError({"hostnames": str(exc)}) from None
        if name not in out:
            out.append(name)
    if not out:
        raise ValidationError({"hostnames": "Give at least one hostname."})
    if len(out) > MAX_NAMES:
        raise ValidationError({"hostnames": f"At most {MAX_NAMES} hostnames fit in one certificate."})
    return out


def _enqueue(certificate_id) -> None:
    # By name, so enqueueing needs no task registry in this process (only the Celery worker runs it).
    from config.celery import app

    try:
        app.send_task("certs.issue", args=[str(certificate_id)], retry=True, retry_policy={"max_retries": 2, "interval_start": 0.1})
    except Exception:  # the broker is down: the sweep (Celery beat) starts it later
        log.warning("broker unavailable: issuance of %s deferred to the sweep", certificate_id, exc_info=True)


def enqueue_on_commit(certificate_id) -> None:
    transaction.on_commit(lambda: _enqueue(certificate_id))


def _summary(cert: Certificate) -> dict:
    """What the audit log may say about a certificate: never its key."""
    return {
        "hostnames": list(cert.hostnames),
        "source": cert.source,
        "status": cert.status,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "not_after": cert.not_after.isoformat() if cert.not_after else None,
    }


def _claim_names(cert: Certificate, names: list[str]) -> None:
    """Refuse a second order for a name that has one under way (the unique index decides)."""
    try:
        with transaction.atomic():
            InFlightName.objects.bulk_create([InFlightName(name=n, certificate=cert) for n in names])
    except IntegrityError:
        busy = sorted(InFlightName.objects.filter(name__in=names).values_list("name", flat=True))
        raise ValidationError(
            {"hostnames": f"A certificate order for {', '.join(busy) or ', '.join(names)} is already in progress; wait for it to finish."}
        ) from None


def retire_covered(cert: Certificate) -> list[Certificate]:
    """A newer certificate supersedes the organization's older ones whose names it covers
    (issued ones stop being served, failed ones stop retrying). Call inside the transaction."""
    names = set(cert.hostnames)
    retired = []
    older = Certificate.objects.for_org(cert.organization).exclude(pk=cert.pk).filter(
        status__in=[Certificate.Status.ISSUED, Certificate.Status.FAILED]
    )
    for other in older.select_for_update():
        if other.hostnames and set(other.hostnames) <= names:
            other.status = Certificate.Status.REPLACED
            other.next_attempt_at = None
            other.save(update_fields=["status", "next_attempt_at", "updated_at"])
            retired.append(other)
    return retired


def _issue_internal(*, org: Organization, actor: Actor, names: list[str], replaces: Certificate | None = None) -> Certificate:
    issued = internal_ca.issue(names)
    parsed = pem.check(issued.chain_pem, issued.key_pem)
    from .issuance import renew_time

    cert = Certificate(
        organization=org,
        hostnames=names,
        source=Certificate.Source.INTERNAL,
        status=Certificate.Status.ISSUED,
        chain_pem=parsed.chain_pem,
        names=parsed.names,
        not_before=parsed.not_before,
        not_after=parsed.not_after,
        serial=parsed.serial,
        issuer=parsed.issuer,
        fingerprint_sha256=parsed.fingerprint_sha256,
        issued_at=timezone.now(),
        renew_after=renew_time(parsed.not_before, parsed.not_after),
        replaces=replaces,
    )
    cert.set_private_key(parsed.key_pem)
    cert.save()
    retire_covered(cert)
    record(org=org, actor=actor, action="certificate.issue", target=cert, after=_summary(cert))
    publish_on_commit(f"internal certificate for {', '.join(names)}")
    return cert


def _start_acme(*, org: Organization, actor: Actor, names: list[str], replaces: Certificate | None = None) -> Certificate:
    cert = Certificate.objects.create(
        organization=org,
        hostnames=names,
        source=Certificate.Source.ACME,
        status=Certificate.Status.PENDING,
        directory_url=acme_client.directory_url(),
        progress="Waiting for the issuance task to start.",
        replaces=replaces,
    )
    _claim_names(cert, names)
    # Earlier failed orders for these names stop retrying: this order takes over.
    failed = Certificate.objects.for_org(org).filter(status=Certificate.Status.FAILED).exclude(pk=cert.pk)
    stale = [c.pk for c in failed if set(c.hostnames) <= set(names)]
    Certificate.objects.filter(pk__in=stale).update(status=Certificate.Status.REPLACED, next_attempt_at=None)
    record(org=org, actor=actor, action="certificate.request", target=cert, after={"hostnames": names, "ca": cert.directory_url})
    enqueue_on_commit(cert.pk)
    return cert


def _uses_internal_ca(names: list[str], sites) -> bool:
    _, Site = _site_models()
    internal_names = [n for n in names if internal_ca.is_internal_name(n)]
    if len(internal_names) == len(names):
        return True
    if sites and all(s.tls_mode == Site.TlsMode.INTERNAL for s in sites):
        return True
    if internal_names:
        raise ValidationError(
            {"hostnames": f"{', '.join(internal_names)} can only get an internal-CA certificate; request them apart from public names."}
        )
    return False


# --- the contract -------------------------------------------------------------------------------


@transaction.atomic
def certificate_request(*, actor: Actor, org: Organization, hostnames: list[str]) -> Certificate:
    """Get a certificate for some of the organization's site hostnames.

    Internal names (localhost, *.localhost, *.test, *.internal) and names of sites set to the
    internal CA are issued at once. Others start an ACME order that a Celery task carries out;
    the certificate comes back ``pending`` and its ``status``/``progress``/``failure_reason``
    tell how it goes.
    """
    require(actor, org, Role.EDITOR)
    names = _normalize(hostnames)
    Hostname, _ = _site_models()
    own = {h.name: h for h in Hostname.objects.filter(organization=org, name__in=names).select_related("site")}
    missing = [n for n in names if n not in own]
    if missing:
        # The same answer whether another organization has the name or nobody does.
        raise ValidationError({"hostnames": f"{', '.join(missing)} is not a hostname of any of your sites; add it to a site first."})
    sites = {h.site.pk: h.site for h in own.values()}.values()
    if _uses_internal_ca(names, list(sites)):
        return _issue_internal(org=org, actor=actor, names=names)
    wildcards = [n for n in names if n.startswith("*.")]
    if wildcards:
        raise ValidationError(
            {"hostnames": f"{', '.join(wildcards)}: wildcard names need a DNS-01 challenge, which is not available; "
             "upload a certificate for them instead."}
        )
    if not acme_client.directory_url():
        raise ValidationError({"hostnames": acme_client.NOT_CONFIGURED})
    return _start_acme(org=org, actor=actor, names=names)


@transaction.atomic
def certificate_upload(*, actor: Actor, org: Organization, chain_pem: str, key_pem: str) -> Certificate:
    """Store a certificate the organization got elsewhere. It is served for every hostname of
    the organization's sites it covers; it must cover at least one."""
    require(actor, org, Role.EDITOR)
    try:
        parsed = pem.check(chain_pem or "", key_pem or "")
    except pem.PemProblem as problem:
        raise ValidationError({problem.field: problem.message}) from None
    Hostname, _ = _site_models()
    hostnames = sorted(
        h for h in Hostname.objects.filter(organization=org).values_list("name", flat=True) if any(pem.covers(n, h) for n in parsed.names)
    )
    if not hostnames:
        raise ValidationError(
            {"chain_pem": f"The certificate is for {', '.join(parsed.names)}, which covers none of your sites' hostnames."}
        )
    cert = Certificate(
        organization=org,
        hostnames=hostnames,
        source=Certificate.Source.UPLOADED,
        status=Certificate.Status.ISSUED,
        chain_pem=parsed.chain_pem,
        names=parsed.names,
        not_before=parsed.not_before,
        not_after=parsed.not_after,
        serial=parsed.serial,
        issuer=parsed.issuer,
        fingerprint_sha256=parsed.fingerprint_sha256,
        issued_at=timezone.now(),
    )
    cert.set_private_key(parsed.key_pem)
    cert.save()
    retire_covered(cert)
    record(org=org, actor=actor, action="certificate.upload", target=cert, after={**_summary(cert), "names": parsed.names})
    publish_on_commit(f"certificate uploaded for {', '.join(hostnames)}")
    return cert


def certificate_revoke(*, actor: Actor, org: Organization, certificate: Certificate) -> Certificate:
    """Revoke at the CA (ACME) or stop trusting (internal CA), stop serving it, and get a new one
    for names of sites that want automatic HTTPS. Needs the admin role: it cannot be undone."""
    require(actor, org, Role.ADMIN)
    ensure_in_org(certificate, org)
    cert = Certificate.objects.get(pk=certificate.pk)
    if cert.source == Certificate.Source.UPLOADED:
        raise ValidationError(
            {"certificate": "Portico did not issue this certificate, so it cannot revoke it: revoke it with its CA, then delete it here."}
        )
    if cert.status not in (Certificate.Status.ISSUED, Certificate.Status.REPLACED):
        state = cert.get_status_display().lower()
        raise ValidationError({"certificate": f"Only an issued certificate can be revoked; this one is {state}."})
    if cert.source == Certificate.Source.ACME:
        # The CA call happens before the transaction: no row lock is held over the network.
        _revoke_at_ca(cert)
    with transaction.atomic():
        cert = Certificate.objects.select_for_update().get(pk=cert.pk)
        if cert.status == Certificate.Status.REVOKED:
            return cert
        cert.status = Certificate.Status.REVOKED
        cert.revoked_at = timezone.now()
        cert.save(update_fields=["status", "revoked_at", "updated_at"])
        record(org=org, actor=actor, action="certificate.revoke", target=cert, after=_summary(cert))
        publish_on_commit(f"certificate for {', '.join(cert.hostnames)} revoked")
        _ensure_on_commit_for_names(org=org, actor=actor, names=cert.hostnames)
    return cert


def _revoke_at_ca(cert: Certificate) -> None:
    account = cert.account or acme_client.account_for(cert.organization, cert.directory_url or acme_client.directory_url())
    try:
        ca = acme_client.connect(account)
        with acme_client.translated_errors(ca, cert.hostnames):
            ca.revoke(cert.chain_pem, reason=0)
    except acme_client.AcmeFailure as failure:
        if "alreadyRevoked" in failure.reason or "already revoked" in failure.reason.lower():
            return
        raise ValidationError({"certificate": f"The CA did not revoke the certificate: {failure.reason}"}) from None


@transaction.atomic
def certificate_delete(*, actor: Actor, org: Organization, certificate: Certificate) -> None:
    """Forget a certificate (and cancel its order if one is under way). Workers stop serving it."""
    require(actor, org, Role.EDITOR)
    ensure_in_org(certificate, org)
    cert = Certificate.objects.select_for_update().filter(pk=certificate.pk).first()
    if cert is None:
        return
    served = cert.status == Certificate.Status.ISSUED or cert.challenges.exists()
    record(org=org, actor=actor, action="certificate.delete", target=cert, before=_summary(cert))
    cert.delete()
    if served:
        publish_on_commit(f"certificate for {', '.join(cert.hostnames)} deleted")


# --- automatic HTTPS ------------------------------------------------------------------------------


def _covered_or_busy(org: Organization) -> tuple[list[Certificate], set[str]]:
    """The organization's usable certificates, and the names with an order under way or a failed
    one: a failure retries on its own schedule, or waits for a person (a new request replaces
    it), but is never re-ordered behind their back by the hourly sweep."""
    now = timezone.now()
    certs = list(Certificate.objects.for_org(org).exclude(status__in=[Certificate.Status.REVOKED, Certificate.Status.REPLACED]))
    usable = [c for c in certs if c.status == Certificate.Status.ISSUED and (c.not_after is None or c.not_after > now)]
    busy = {n for c in certs if c.in_flight or c.status == Certificate.Status.FAILED for n in c.hostnames}
    return usable, busy


def _is_covered(name: str, usable: list[Certificate]) -> bool:
    return any(name in c.hostnames for c in usable)


def ensure_certificates(*, site, actor: Actor | None = None) -> list[Certificate]:
    """Request what a site with automatic HTTPS lacks: one certificate per uncovered hostname
    (so one name whose DNS is not ready never holds back the others). Internal names and
    internal-CA sites are issued at once. Idempotent; a wildcard on an ACME site is skipped (it
    needs DNS-01 or an upload; ``selectors.hostname_tls`` says so)."""
    Hostname, Site = _site_models()
    site = Site.objects.filter(pk=site.pk).select_related("organization").first()
    if site is None or site.tls_mode not in (Site.TlsMode.ACME, Site.TlsMode.INTERNAL):
        return []
    actor = actor or Actor.system("automatic HTTPS")
    org = site.organization
    made: list[Certificate] = []
    with transaction.atomic():
        usable, busy = _covered_or_busy(org)
        for name in Hostname.objects.filter(site=site).order_by("name").values_list("name", flat=True):
            if name in busy or _is_covered(name, usable):
                continue
            if site.tls_mode == Site.TlsMode.INTERNAL or internal_ca.is_internal_name(name):
                made.append(_issue_internal(org=org, actor=actor, names=[name]))
            elif not name.startswith("*.") and acme_client.directory_url():
                try:
                    with transaction.atomic():
                        made.append(_start_acme(org=org, actor=actor, names=[name]))
                except ValidationError:
                    continue  # an order for it started meanwhile
    return made


def ensure_certificates_on_commit(*, site, actor: Actor | None = None) -> None:
    """For edge services: after the site change commits, request its missing certificates.
    A failure here is logged and never undoes or fails the site change; the hourly sweep
    (``ensure_all``) catches up."""

    def run() -> None:
        try:
            ensure_certificates(site=site, actor=actor)
        except Exception:
            log.exception("could not request certificates for site %s", site.pk)

    transaction.on_commit(run)


def _ensure_on_commit_for_names(*, org: Organization, actor: Actor, names: list[str]) -> None:
    Hostname, _ = _site_models()
    for site in {h.site for h in Hostname.objects.filter(organization=org, name__in=names).select_related("site")}:
        ensure_certificates_on_commit(site=site, actor=actor)


def ensure_all() -> int:
    """Every automatic-HTTPS site gets what it lacks (sites created before a restart, a worker
    that was down, a request lost with the broker). Returns how many certificates were started."""
    _, Site = _site_models()
    count = 0
    for site in Site.objects.filter(tls_mode__in=[Site.TlsMode.ACME, Site.TlsMode.INTERNAL]).iterator():
        try:
            count += len(ensure_certificates(site=site, actor=Actor.system("automatic HTTPS")))
        except Exception:
            log.exception("could not ensure certificates for site %s", site.pk)
    return count


# --- renewal, retries, expiry ---------------------------------------------------------------------


def renew(certificate: Certificate, *, actor: Actor = RENEWAL_ACTOR) -> Certificate | None:
    """Start the renewal of one certificate: internal ones are re-issued at once, ACME ones get a
    new order. The old certificate is served until the new one is issued. Returns the new
    certificate, or None when none is needed (names gone, or a renewal is under way)."""
    Hostname, _ = _site_models()
    with transaction.atomic():
        old = Certificate.objects.select_for_update().select_related("organization").filter(pk=certificate.pk).first()
        if old is None or old.status != Certificate.Status.ISSUED or old.source == Certificate.Source.UPLOADED:
            return None
        # One renewal at a time: under way, or failed and waiting for its own retry (backoff).
        waiting = Q(status=Certificate.Status.FAILED, next_attempt_at__isnull=False)
        if old.renewals.filter(Q(status__in=Certificate.IN_FLIGHT) | waiting).exists():
            return None
        names = [n for n in old.hostnames if Hostname.objects.filter(organization=old.organization, name=n).exists()]
        if not names:
            return None
        if old.source == Certificate.Source.INTERNAL:
            return _issue_internal(org=old.organization, actor=actor, names=names, replaces=old)
        if not acme_client.directory_url():
            return None
        try:
            with transaction.atomic():
                return _start_acme(org=old.organization, actor=actor, names=names, replaces=old)
        except ValidationError:
            return None  # someone requested these names meanwhile


def renew_due(*, now: dt.datetime | None = None) -> list[Certificate]:
    now = now or timezone.now()
    due = Certificate.objects.filter(status=Certificate.Status.ISSUED, renew_after__lte=now).exclude(source=Certificate.Source.UPLOADED)
    started = []
    for cert in due.iterator():
        try:
            new = renew(cert)
        except Exception:
            log.exception("renewal of certificate %s failed to start", cert.pk)
            continue
        if new is not None:
            started.append(new)
    return started


def retry_due(*, now: dt.datetime | None = None) -> int:
    """Failed orders whose retry time has come start again; stalled ones (a task lost with a
    worker) are resumed. Returns how many were enqueued."""
    now = now or timezone.now()
    count = 0
    for cert in Certificate.objects.filter(status=Certificate.Status.FAILED, next_attempt_at__lte=now).iterator():
        with transaction.atomic():
            current = Certificate.objects.select_for_update().filter(pk=cert.pk, status=Certificate.Status.FAILED).first()
            if current is None:
                continue
            try:
                _claim_names(current, current.hostnames)
            except ValidationError:
                current.next_attempt_at = None
                current.failure_reason += " Not retried: another order for these names was started."
                current.save(update_fields=["next_attempt_at", "failure_reason", "updated_at"])
                continue
            current.status = Certificate.Status.PENDING
            current.next_attempt_at = None
            current.order_url = ""
            current.progress = "Retrying."
            current.save(update_fields=["status", "next_attempt_at", "order_url", "progress", "updated_at"])
            enqueue_on_commit(current.pk)
            count += 1
    stalled = Certificate.objects.filter(status__in=Certificate.IN_FLIGHT, updated_at__lt=now - dt.timedelta(minutes=2)).exclude(
        locked_until__gt=now
    )
    for pk in stalled.values_list("pk", flat=True):
        _enqueue(pk)
        count += 1
    return count


def warn_expiring(*, now: dt.datetime | None = None) -> int:
    """An audit event when a served certificate comes within 14, 7 and 1 days of expiry (each
    once) — the dashboard and alerts read these. Returns how many warnings were written."""
    now = now or timezone.now()
    horizon = now + dt.timedelta(days=max(EXPIRY_WARNINGS))
    count = 0
    for cert in Certificate.objects.filter(status=Certificate.Status.ISSUED, not_after__lte=horizon).select_related("organization"):
        left = cert.not_after - now
        threshold = min((d for d in EXPIRY_WARNINGS if left <= dt.timedelta(days=d)), default=None)
        if threshold is None or (cert.expiry_warned_days is not None and cert.expiry_warned_days <= threshold):
            continue
        with transaction.atomic():
            Certificate.objects.filter(pk=cert.pk).update(expiry_warned_days=threshold)
            expired = left.total_seconds() <= 0
            record(
                org=cert.organization,
                actor=Actor.system("expiry check"),
                action="certificate.expired" if expired else "certificate.expiring",
                target=cert,
                changes={
                    "not_after": cert.not_after.isoformat(),
                    "days_left": max(0, left.days),
                    "source": cert.source,
                    "renewal": "automatic" if cert.source != Certificate.Source.UPLOADED else "upload a new certificate",
                },
            )
        count += 1
    return count
