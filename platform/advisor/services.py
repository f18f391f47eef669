"""Running the check-up and acknowledging findings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from audit.services import record
from django.db import transaction
from django.utils import timezone
from tenancy.access import Actor, ensure_in_org, require
from tenancy.models import Organization, Role
from traffic.alerts import open_alert, resolve_alert
from traffic.models import Alert

from .checks import run_checks
from .models import Finding, Severity

log = logging.getLogger(__name__)


@dataclass
class CheckupResult:
    opened: list[Finding] = field(default_factory=list)
    resolved: list[Finding] = field(default_factory=list)
    open: int = 0


@transaction.atomic
def checkup_run(*, actor: Actor, org: Organization) -> CheckupResult:
    """Run every check on ``org``: new findings open, gone ones resolve, returning ones reopen.

    A new (or reopened) critical finding that nobody acknowledged is recorded in the audit log as
    an alert, once: later runs that find it again only move its ``last_seen``.
    """
    require(actor, org, Role.EDITOR)  # on demand: editors and up (the schedule runs as the system)
    now = timezone.now()
    result = CheckupResult()
    existing = {(f.rule, f.subject): f for f in Finding.objects.for_org(org).select_for_update()}
    seen = set()
    for found in run_checks(org, now):
        key = (found.check, found.subject)
        if key in seen:
            continue
        seen.add(key)
        finding = existing.get(key)
        fields = dict(severity=found.severity, title=found.title, explanation=found.explanation, fix=found.fix, site=found.site)
        if finding is None:
            finding = Finding.objects.create(organization=org, rule=found.check, subject=found.subject,
                                             first_seen=now, last_seen=now, **fields)
            result.opened.append(finding)
        else:
            reopened = finding.resolved_at is not None
            for name, value in fields.items():
                setattr(finding, name, value)
            finding.last_seen, finding.resolved_at = now, None
            finding.save()
            if reopened:
                result.opened.append(finding)
    for key, finding in existing.items():
        if key not in seen and finding.resolved_at is None:
            finding.resolved_at = now
            finding.save(update_fields=["resolved_at"])
            result.resolved.append(finding)
    for finding in result.opened:
        if finding.severity == Severity.CRITICAL and finding.acknowledged_at is None:
            record(org=org, actor=Actor.system("security check-up"), action="advisor.alert", target=finding,
                   after={"rule": finding.rule, "severity": finding.severity, "title": finding.title})
            log.warning("critical finding in %s: %s", org.slug, finding.title)
            # the organization's alert channels (email, signed webhook), once per incident
            transaction.on_commit(lambda f=finding: open_alert(
                org_id=org.pk, kind=Alert.Kind.SECURITY_FINDING, subject=_alert_subject(f), summary=f.title,
                site_id=f.site_id, details={"rule": f.rule, "fix": f.fix}))
    for finding in result.resolved:
        transaction.on_commit(lambda f=finding: resolve_alert(
            org_id=org.pk, kind=Alert.Kind.SECURITY_FINDING, subject=_alert_subject(f)))
    result.open = Finding.objects.for_org(org).filter(resolved_at__isnull=True).count()
    return result


def _alert_subject(finding: Finding) -> str:
    return f"{finding.rule}:{finding.subject}"[:200]


@transaction.atomic
def finding_acknowledge(*, actor: Actor, org: Organization, finding: Finding) -> Finding:
    """Mark a finding as known and accepted: it stays listed but stops alerting."""
    require(actor, org, Role.ADMIN)
    ensure_in_org(finding, org)
    finding.acknowledged_at = timezone.now()
    finding.acknowledged_by = actor.display[:300]
    finding.save(update_fields=["acknowledged_at", "acknowledged_by"])
    record(org=org, actor=actor, action="advisor.acknowledge", target=finding,
           after={"rule": finding.rule, "subject": finding.subject, "title": finding.title})
    # accepted: it stops alerting
    transaction.on_commit(lambda: resolve_alert(org_id=org.pk, kind=Alert.Kind.SECURITY_FINDING,
                                                subject=_alert_subject(finding)))
    return finding
