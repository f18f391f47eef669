"""Celery tasks of certificates. Thin: they take ids and call the issuance state machine or a
service."""

from __future__ import annotations

from celery import shared_task

from . import issuance, services


@shared_task(name="certs.issue", ignore_result=True)
def issue(certificate_id: str) -> None:
    """One step of an ACME order; re-enqueues itself while waiting (see ``issuance``)."""
    delay = issuance.advance(certificate_id)
    if delay is not None:
        issue.apply_async((certificate_id,), countdown=delay)


@shared_task(name="certs.sweep", ignore_result=True)
def sweep() -> int:
    """Every 30 s: retry failed orders whose time has come, resume stalled ones."""
    return services.retry_due()


@shared_task(name="certs.renew_due", ignore_result=True)
def renew_due() -> int:
    """Hourly: renew certificates a third from expiry, fill gaps on automatic-HTTPS sites, warn
    about expiring ones."""
    started = services.renew_due()
    services.ensure_all()
    services.warn_expiring()
    return len(started)
