"""The security check-up's findings: list and filter them, run the check-up now, acknowledge one."""

from __future__ import annotations

import django_filters
from advisor.models import Finding, Severity
from advisor.services import checkup_run, finding_acknowledge
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response
from tenancy.models import Role

from ..viewsets import OrgViewSet, RetrieveMixin


class FindingSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField(help_text="open, acknowledged (open but known: no alerts) or resolved")

    class Meta:
        model = Finding
        fields = [
            "id", "site", "rule", "subject", "severity", "status", "title", "explanation", "fix",
            "first_seen", "last_seen", "resolved_at", "acknowledged_at", "acknowledged_by",
        ]
        read_only_fields = fields

    def get_status(self, finding: Finding) -> str:
        if finding.resolved_at is not None:
            return "resolved"
        return "acknowledged" if finding.acknowledged_at is not None else "open"


class FindingFilter(django_filters.FilterSet):
    site = django_filters.UUIDFilter(field_name="site_id")
    severity = django_filters.MultipleChoiceFilter(choices=Severity.choices)
    open = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull", help_text="true: still found")
    acknowledged = django_filters.BooleanFilter(field_name="acknowledged_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Finding
        fields = ["rule", "severity", "site", "open", "acknowledged"]


_RunResult = inline_serializer("CheckupResult", {
    "opened": serializers.IntegerField(help_text="new or reopened findings"),
    "resolved": serializers.IntegerField(help_text="findings no longer found"),
    "open": serializers.IntegerField(help_text="findings open now"),
})


@extend_schema_view(
    list=extend_schema(summary="Security findings (filter: open, acknowledged, severity, rule, site)"),
    retrieve=extend_schema(summary="One finding: what, why it matters, how to fix it"),
)
class FindingViewSet(mixins.ListModelMixin, RetrieveMixin, OrgViewSet):
    model = Finding
    serializer_class = FindingSerializer
    lookup_value_converter = "int"
    write_roles = {"run": Role.EDITOR, "acknowledge": Role.ADMIN}
    ordering_fields = ["last_seen", "first_seen", "severity", "rule"]
    ordering = ["-last_seen", "id"]
    filterset_class = FindingFilter

    @extend_schema(request=None, responses=_RunResult, summary="Run the security check-up now (editor)")
    @action(detail=False, methods=["post"])
    def run(self, request, *args, **kwargs):
        result = checkup_run(actor=self.actor, org=self.org)
        return Response({"opened": len(result.opened), "resolved": len(result.resolved), "open": result.open})

    @extend_schema(request=None, responses=FindingSerializer, summary="Acknowledge a finding: it stays listed, no more alerts (admin)")
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, *args, **kwargs):
        return self.detail_response(finding_acknowledge(actor=self.actor, org=self.org, finding=self.get_object()))
