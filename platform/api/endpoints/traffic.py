"""Traffic of a site (totals, chart series, latency percentiles), its inspector samples, live
backend health, the organization's alerts (read-only), and its alert settings (read and write).
Scoped like every endpoint."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from edge.models import Backend
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.response import Response
from tenancy.models import Role
from traffic import alert_settings, replay, selectors
from traffic.models import Alert, AlertSettings, BackendHealth, RequestSample, TrafficMinute

from ..conditional import check_if_match, etag_of
from ..viewsets import OrgViewSet, RetrieveMixin, SiteChildViewSet, UpdateMixin

_WINDOW = OpenApiParameter("window", str, enum=list(selectors.WINDOWS), default="1h",
                           description="1h: minute points; 24h: 15-minute points; 7d: hourly points")


class RequestSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = RequestSample
        fields = ["id", "at", "kind", "worker", "request_id", "client_ip", "method", "host", "path", "status",
                  "request_headers", "response_headers", "blocked_reason", "blocked_rule", "backend_id", "cache",
                  "error", "timing"]
        read_only_fields = fields


class ReplayInputSerializer(serializers.Serializer):
    backend = serializers.UUIDField(required=False, help_text="One of the site's backends; default: the one the "
                                    "worker chose, if it still exists, else the site's first enabled backend.")
    confirm = serializers.BooleanField(default=False, help_text="Required (true) for methods other than GET, HEAD "
                                       "and OPTIONS, which can change data on the origin.")


class _Omitted(serializers.Serializer):
    name = serializers.CharField(help_text="A header, or 'query parameter <name>'.")
    reason = serializers.CharField()


class ReplayResultSerializer(serializers.Serializer):
    sample = serializers.IntegerField()
    backend = serializers.UUIDField()
    backend_label = serializers.CharField(help_text="scheme://address:port")
    address = serializers.CharField(help_text="The IP address connected to, after the SSRF check.")
    method = serializers.CharField()
    target = serializers.CharField(help_text="Path and query sent (routes applied, masked parameters dropped).")
    host = serializers.CharField(allow_blank=True)
    sent_headers = serializers.ListField(child=serializers.ListField(child=serializers.CharField(allow_blank=True)))
    omitted = _Omitted(many=True, help_text="What was left out, and why (masked, hop-by-hop, no body).")
    notes = serializers.ListField(child=serializers.CharField())
    status = serializers.IntegerField(allow_null=True, help_text="null when the backend did not answer (see error).")
    reason = serializers.CharField(allow_blank=True)
    response_headers = serializers.ListField(child=serializers.ListField(child=serializers.CharField(allow_blank=True)),
                                             help_text="Set-Cookie and secret-looking headers masked as ***.")
    body = serializers.CharField(allow_blank=True, help_text="The start of the body as text (never rendered).")
    body_bytes = serializers.IntegerField()
    body_truncated = serializers.BooleanField()
    body_note = serializers.CharField(allow_blank=True)
    timing = serializers.DictField(child=serializers.FloatField(allow_null=True),
                                   help_text="ms: connect, tls, wait (to the first byte), read, total.")
    error = serializers.CharField(allow_blank=True)


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

    @extend_schema(
        request=ReplayInputSerializer, responses=ReplayResultSerializer,
        summary="Replay a request against one of the site's backends (editor; audited; 30 a minute)",
        description="The platform sends the captured method, path and headers again, with the original Host. "
        "Masked headers and query parameters (credentials, cookies) and hop-by-hop headers are left out, and "
        "samples keep no bodies: the answer lists what was omitted. The backend's address passes the SSRF "
        "guard again at replay time (400 on `backend`). Methods other than GET, HEAD and OPTIONS need "
        "`confirm: true` (400 on `confirm`). A backend that does not answer is a 200 with `error` set.",
    )
    @action(detail=True, methods=["post"])
    def replay(self, request, *args, **kwargs):
        sample = self.get_object()  # another tenant's: 404; a viewer or read token: 403
        data = ReplayInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        backend_id = data.validated_data.get("backend")
        if backend_id is None:
            backend = replay.default_backend(sample)
            if backend is None:
                raise ValidationError({"backend": "This site has no backends to replay against."})
        else:
            backend = Backend.objects.for_org(self.org).filter(pk=backend_id, site=self.site).first()
            if backend is None:
                raise ValidationError({"backend": f"{backend_id} is not a backend of this site."})
        try:
            result = replay.replay_sample(actor=self.actor, org=self.org, sample=sample, backend=backend,
                                          confirm=data.validated_data["confirm"])
        except replay.ReplayRateLimited as exc:
            raise Throttled(wait=exc.retry_after, detail=str(exc)) from None
        return Response(ReplayResultSerializer(result.as_dict()).data)


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


# --- alert settings ---------------------------------------------------------------------------------

_SECRET_HELP = ("Write-only HMAC-SHA256 key of the X-Portico-Signature header (16 to 100 characters): never returned "
                "(see webhook_secret_set). A new value replaces it, an empty string removes it, leaving it out keeps it.")


def _bounded(field_class, name: str, **kwargs):
    low, high = alert_settings.BOUNDS[name]
    return field_class(min_value=low, max_value=high, required=False, **kwargs)


class AlertSettingsSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False, help_text="Send alerts at all.")
    emails = serializers.ListField(
        child=serializers.CharField(max_length=254), required=False, max_length=alert_settings.MAX_EMAILS,
        help_text="Recipients; an empty list means the organization's owners and admins.")
    webhook_url = serializers.CharField(
        required=False, allow_blank=True, max_length=200,
        help_text="http(s) address that receives a signed JSON POST per alert opened and resolved; empty: no webhook. "
                  "Cloud metadata and link-local addresses are refused.")
    webhook_secret = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=100,
                                           trim_whitespace=True, help_text=_SECRET_HELP)
    webhook_secret_set = serializers.SerializerMethodField(help_text="Whether a webhook secret is set.")
    error_rate_percent = _bounded(serializers.FloatField, "error_rate_percent",
                                  help_text="Open an error-rate alert when 5xx reach this share of a site's requests in 5 minutes.")
    min_requests = _bounded(serializers.IntegerField, "min_requests",
                            help_text="Fewer requests than this in 5 minutes never open rate alerts.")
    traffic_spike_factor = _bounded(serializers.FloatField, "traffic_spike_factor",
                                    help_text="Open a traffic-spike alert at this many times the site's usual rate.")
    cert_expiry_days = _bounded(serializers.IntegerField, "cert_expiry_days",
                                help_text="Warn this many days before a certificate expires.")

    def get_webhook_secret_set(self, conf: AlertSettings) -> bool:
        return bool(conf.webhook_secret)

    def validate(self, attrs):
        # A misspelt field would otherwise be ignored without a word; fields only read are tolerated,
        # so that what a GET returned can be sent back as it is.
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise ValidationError({name: "Unknown field." for name in sorted(unknown)})
        return attrs


@extend_schema_view(
    retrieve=extend_schema(summary="Alert settings: where alerts go and when they open (the secret is never returned)",
                           tags=["Alerts"]),
    update=extend_schema(summary="Change the alert settings (admins, owners and read-write tokens)", tags=["Alerts"]),
    partial_update=extend_schema(summary="Change some alert settings (admins, owners and read-write tokens)",
                                 tags=["Alerts"]),
)
class AlertSettingsViewSet(RetrieveMixin, UpdateMixin, OrgViewSet):
    """One per organization, at ``/api/v1/orgs/{org_slug}/alert-settings/``: no id in the URL."""

    model = AlertSettings
    serializer_class = AlertSettingsSerializer

    def write_role_for(self, action: str | None) -> str:
        # People need the admin role; read-write tokens (which act as editors) may write too,
        # because only admins mint them (traffic.alert_settings explains).
        return Role.EDITOR if self.actor.kind == "token" else Role.ADMIN

    def get_object(self):
        conf = alert_settings.current(self.org)  # unsaved defaults until first saved: reading writes nothing
        self.check_object_permissions(self.request, conf)
        return conf

    def get_object_for_write(self):
        conf = self.get_object()
        if conf.pk is not None:
            conf = AlertSettings.objects.select_for_update().get(pk=conf.pk)
        check_if_match(self.request, etag_of(self.get_output_serializer(conf).data))
        return conf

    def perform_update(self, instance, data):
        return alert_settings.alert_settings_update(actor=self.actor, org=self.org, **data)
