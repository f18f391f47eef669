"""Traffic of a site (totals, chart series, latency percentiles), its inspector samples, live
backend health, and the organization's alerts. All read-only; scoped like every endpoint."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from traffic import selectors
from traffic.models import Alert, BackendHealth, RequestSample, TrafficMinute

from ..viewsets import OrgViewSet, RetrieveMixin, SiteChildViewSet

_WINDOW = OpenApiParameter("window", str, enum=list(selectors.WINDOWS), default="1h",
                           description="1h: minute points; 24h: 15-minute points; 7d: hourly points")


class RequestSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = RequestSample
        fields = ["id", "at", "kind", "worker", "request_id", "client_ip", "method", "host", "path", "status",
                  "request_headers", "response_headers", "blocked_reason", "blocked_rule", "backend_id", "cache",
                  "error", "timing"]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "kind", "subject", "site", "summary", "details", "opened_at", "resolved_at"]
        read_only_fields = fields


@extend_schema_view(list=extend_schema(
    summary="Traffic of a site: totals, percentiles, blocked by rule, per backend, and chart points",
    parameters=[_WINDOW], responses=OpenApiTypes.OBJECT))
class TrafficViewSet(SiteChildViewSet):
    model = TrafficMinute
    serializer_class = serializers.Serializer

    def list(self, request, *args, **kwargs):
        window = request.query_params.get("window", "1h")
        if window not in selectors.WINDOWS:
            raise ValidationError({"window": f"one of {', '.join(selectors.WINDOWS)}"})
        points = []
        for p in selectors.series(self.site, window):
            d = p.as_dict()
            d.pop("_blocked_by")
            points.append(d)
        return Response({"summary": selectors.summary(self.site, window), "points": points})


@extend_schema_view(
    list=extend_schema(summary="Inspector: recent sampled, blocked and failed requests (secrets masked)",
                       parameters=[OpenApiParameter("kind", str, enum=[k for k, _ in RequestSample.Kind.choices])]),
    retrieve=extend_schema(summary="One inspected request"),
)
class RequestSampleViewSet(mixins.ListModelMixin, RetrieveMixin, SiteChildViewSet):
    model = RequestSample
    serializer_class = RequestSampleSerializer
    lookup_value_converter = "int"
    ordering_fields = ["at", "status"]

    def narrow(self, queryset):
        queryset = super().narrow(queryset)
        kind = self.request.query_params.get("kind") if self.request else None
        return queryset.filter(kind=kind) if kind else queryset


@extend_schema_view(list=extend_schema(summary="Backend health: on how many online workers each backend is up",
                                       responses=OpenApiTypes.OBJECT))
class BackendHealthViewSet(SiteChildViewSet):
    model = BackendHealth
    serializer_class = serializers.Serializer

    def list(self, request, *args, **kwargs):
        return Response({bid: {"up": v.up, "of": v.of, "summary": str(v), "workers": v.workers}
                         for bid, v in selectors.backend_health(self.site).items()})


@extend_schema_view(
    list=extend_schema(summary="Alerts, newest first",
                       parameters=[OpenApiParameter("open", bool, description="only open (true) or resolved (false)")]),
    retrieve=extend_schema(summary="One alert"),
)
class AlertViewSet(mixins.ListModelMixin, RetrieveMixin, OrgViewSet):
    model = Alert
    serializer_class = AlertSerializer
    lookup_value_converter = "int"
    ordering_fields = ["opened_at"]

    def narrow(self, queryset):
        flag = self.request.query_params.get("open") if self.request else None
        if flag in ("true", "false"):
            queryset = queryset.filter(resolved_at__isnull=(flag == "true"))
        return queryset
