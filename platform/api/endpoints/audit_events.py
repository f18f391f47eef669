"""The audit log: read, filter, export as CSV or JSON Lines."""

from __future__ import annotations

import csv
import datetime as dt
import json

import django_filters
from audit.models import AuditEvent
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, serializers
from rest_framework.decorators import action

from ..viewsets import OrgViewSet, RetrieveMixin

EXPORT_FIELDS = [
    "seq", "created_at", "actor_kind", "actor_ref", "actor_name", "action", "target_type", "target_id",
    "target_repr", "changes", "ip", "user_agent", "request_id", "prev_hash", "hash",
]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = EXPORT_FIELDS
        read_only_fields = fields


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 time, compared in UTC: Postgres refuses offsets beyond ±15:59, Python allows ±23:59."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(dt.UTC)
            except OverflowError:
                raise serializers.ValidationError({self.field_name: ["This time is out of range."]}) from None
        return super().filter(qs, value)


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(
        method="filter_actor",
        help_text="token:<id> or user:<id> for one actor exactly; anything else matches part of the actor's name or email.",
    )
    action = django_filters.CharFilter(method="filter_action", help_text="e.g. site.create; site.* for every site action.")
    target = django_filters.CharFilter(method="filter_target", help_text="<type>:<id> (e.g. site:6f1c…) or just the id.")
    target_type = django_filters.CharFilter()
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="ISO 8601, inclusive.")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="ISO 8601, exclusive.")

    class Meta:
        model = AuditEvent
        fields = ["actor_kind"]

    def filter_actor(self, queryset, name, value):
        kind, _, ref = value.partition(":")
        if kind in ("token", "user") and ref.isdigit():
            return queryset.filter(actor_ref=value)
        return queryset.filter(actor_name__icontains=value)

    def filter_action(self, queryset, name, value):
        if value.endswith("*"):
            return queryset.filter(action__startswith=value[:-1])
        return queryset.filter(action=value)

    def filter_target(self, queryset, name, value):
        target_type, sep, target_id = value.partition(":")
        if sep:
            return queryset.filter(target_type=target_type, target_id=target_id)
        return queryset.filter(target_id=value)


class _ExportRenderer(renderers.BaseRenderer):
    """Only names the format for content negotiation (``?format=``); the export view streams its
    own body. Errors are answered in JSON by the base viewset."""

    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


class CsvRenderer(_ExportRenderer):
    media_type = "text/csv"
    format = "csv"


class JsonLinesRenderer(_ExportRenderer):
    media_type = "application/jsonl"
    format = "jsonl"


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_cell(value) -> str:
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    text = "" if value is None else str(value)
    # Spreadsheets run cells that start with these as formulas; names and targets come from users.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _rows(queryset, fmt: str):
    serializer = AuditEventSerializer()
    if fmt == "csv":
        writer = csv.writer(_Echo())
        yield writer.writerow(EXPORT_FIELDS)
        for event in queryset.iterator(chunk_size=1000):
            data = serializer.to_representation(event)
            yield writer.writerow([_csv_cell(data[f]) for f in EXPORT_FIELDS])
    else:
        for event in queryset.iterator(chunk_size=1000):
            yield json.dumps(serializer.to_representation(event), sort_keys=True) + "\n"


@extend_schema_view(
    list=extend_schema(summary="Audit events, newest first"),
    retrieve=extend_schema(summary="One audit event, by its sequence number"),
)
class AuditEventViewSet(mixins.ListModelMixin, RetrieveMixin, OrgViewSet):
    model = AuditEvent
    serializer_class = AuditEventSerializer
    lookup_field = "seq"
    lookup_value_converter = "int"
    filterset_class = AuditEventFilter
    ordering_fields = ["seq", "created_at", "action"]
    ordering = ["-seq"]

    @extend_schema(
        summary="Export the (filtered) audit log as CSV or JSON Lines, oldest first",
        filters=True,
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "jsonl"], description="jsonl when not given."),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/jsonl"): OpenApiTypes.STR},
    )
    @action(detail=False, methods=["get"], renderer_classes=[JsonLinesRenderer, CsvRenderer], pagination_class=None)
    def export(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset()).order_by("seq")
        fmt = request.accepted_renderer.format
        response = StreamingHttpResponse(_rows(queryset, fmt), content_type=f"{request.accepted_renderer.media_type}; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{self.org.slug}-{stamp}.{fmt}"'
        return response
