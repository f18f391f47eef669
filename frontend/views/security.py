"""Security: the check-up's open findings by severity (what, why, how to fix), the acknowledged
ones, a Run check-up button for editors and up, Acknowledge for admins, and the platform's own
policies that apply on top of the organization's."""

from __future__ import annotations

from advisor.models import SEVERITY_RANK, Finding, Severity
from advisor.services import checkup_run, finding_acknowledge
from django.contrib import messages
from django.shortcuts import redirect
from edge.models import PlatformPolicy
from tenancy.models import Role

from ..org_view import OrgView


class SecurityView(OrgView):
    def get(self, request):
        findings = list(self.scoped(Finding).filter(resolved_at__isnull=True).select_related("site").order_by("-last_seen"))
        findings.sort(key=lambda f: -SEVERITY_RANK[f.severity])
        unacknowledged = [f for f in findings if f.acknowledged_at is None]
        by_severity = [
            (label, [f for f in unacknowledged if f.severity == value])
            for value, label in reversed(Severity.choices)
        ]
        return self.page(
            "frontend/security.html",
            by_severity=[(label, items) for label, items in by_severity if items],
            open_count=len(unacknowledged),
            acknowledged=[f for f in findings if f.acknowledged_at is not None],
            resolved=self.scoped(Finding).filter(resolved_at__isnull=False).order_by("-resolved_at")[:20],
            last_run=self.scoped(Finding).order_by("-last_seen").values_list("last_seen", flat=True).first(),
            platform_policies=PlatformPolicy.objects.filter(enabled=True),
        )


class SecurityRunView(OrgView):
    write_role = Role.EDITOR

    def post(self, request):
        result = checkup_run(actor=self.actor, org=self.org)
        messages.success(request, f"Check-up done: {len(result.opened)} new, {len(result.resolved)} resolved, {result.open} open.")
        return redirect("frontend:security", org_slug=self.org.slug)


class FindingAcknowledgeView(OrgView):
    write_role = Role.ADMIN

    def post(self, request, finding_id: int):
        finding_acknowledge(actor=self.actor, org=self.org, finding=self.get_scoped(Finding, pk=finding_id))
        return redirect("frontend:security", org_slug=self.org.slug)
