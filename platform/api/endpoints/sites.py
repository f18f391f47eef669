"""Sites and what hangs off them: hostnames, routes, backends."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from edge import services
from edge.models import Backend, Hostname, Route, Site
from edge.services import _BACKEND_FIELDS, _SITE_FIELDS
from rest_framework import mixins, serializers
from rest_framework.decorators import action

from ..viewsets import CreateMixin, DestroyMixin, OrgViewSet, RetrieveMixin, SiteChildViewSet, UpdateMixin

# --- backends -----------------------------------------------------------------------------------


class BackendSerializer(serializers.ModelSerializer):
    class Meta:
        model = Backend
        fields = ["id", "site", *_BACKEND_FIELDS, "created_at"]
        read_only_fields = ["id", "site", "created_at"]
        extra_kwargs = {
            "address": {"help_text": "A hostname or IP address: no scheme, no path, no port (that goes in port)."},
            "port": {"min_value": 1, "max_value": 65535},
            "weight": {"min_value": 1, "max_value": 1000},
            "pool": {"help_text": "Routes send requests to a pool; lower-case letters, digits, - and _."},
        }


class BackendSpecSerializer(BackendSerializer):
    """A backend given inline when a site is created."""

    class Meta(BackendSerializer.Meta):
        fields = list(_BACKEND_FIELDS)
        read_only_fields: list[str] = []


@extend_schema_view(
    list=extend_schema(summary="A site's backends (origin servers)"),
    retrieve=extend_schema(summary="One backend"),
    create=extend_schema(summary="Add a backend"),
    update=extend_schema(summary="Change a backend"),
    partial_update=extend_schema(summary="Change some of a backend's fields"),
    destroy=extend_schema(summary="Remove a backend"),
)
class BackendViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, SiteChildViewSet):
    model = Backend
    serializer_class = BackendSerializer
    lookup_value_converter = "uuid"
    ordering_fields = ["pool", "created_at", "address", "weight", "state"]
    ordering = ["pool", "created_at"]
    filterset_fields = ["pool", "state", "scheme"]

    def perform_create(self, data):
        return services.backend_create(actor=self.actor, org=self.org, site=self.site, **data)

    def perform_update(self, instance, data):
        return services.backend_update(actor=self.actor, org=self.org, backend=instance, **data)

    def perform_destroy(self, instance) -> None:
        services.backend_delete(actor=self.actor, org=self.org, backend=instance)


# --- sites --------------------------------------------------------------------------------------


class SiteSerializer(serializers.ModelSerializer):
    hostnames = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Site
        fields = ["id", *_SITE_FIELDS, "hostnames", "created_at", "updated_at"]
        read_only_fields = ["id", "hostnames", "created_at", "updated_at"]
        extra_kwargs = {
            "hc_interval": {"min_value": 0.1, "max_value": 3600},
            "hc_timeout": {"min_value": 0.05, "max_value": 60},
            "hc_rise": {"min_value": 1, "max_value": 100},
            "hc_fall": {"min_value": 1, "max_value": 100},
        }


class SiteCreateSerializer(SiteSerializer):
    hostnames = serializers.ListField(
        child=serializers.CharField(max_length=253),
        min_length=1,
        max_length=100,
        help_text="The names the site answers to, e.g. www.example.com or *.example.com.",
    )
    backends = BackendSpecSerializer(many=True, required=False, help_text="Its first backends (more can be added later).")

    class Meta(SiteSerializer.Meta):
        fields = [*SiteSerializer.Meta.fields, "backends"]
        read_only_fields = ["id", "created_at", "updated_at"]


@extend_schema_view(
    list=extend_schema(summary="Sites"),
    retrieve=extend_schema(summary="One site"),
    create=extend_schema(summary="Create a site with its hostnames (and optionally backends)", responses={201: SiteSerializer}),
    update=extend_schema(summary="Change a site's settings (hostnames: see the hostnames endpoint)"),
    partial_update=extend_schema(summary="Change some of a site's settings"),
    destroy=extend_schema(summary="Delete a site, its hostnames, routes, backends and policies"),
)
class SiteViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, OrgViewSet):
    model = Site
    serializer_class = SiteSerializer
    input_serializer_classes = {"create": SiteCreateSerializer}
    lookup_value_converter = "uuid"
    ordering_fields = ["name", "created_at", "updated_at", "state"]
    ordering = ["name"]
    filterset_fields = {"state": ["exact"], "tls_mode": ["exact"], "name": ["exact", "icontains"], "hostnames__name": ["exact"]}

    def get_queryset(self):
        return super().get_queryset().prefetch_related("hostnames").distinct()

    def perform_create(self, data):
        return services.site_create(actor=self.actor, org=self.org, **data)

    def perform_update(self, instance, data):
        return services.site_update(actor=self.actor, org=self.org, site=instance, **data)

    def perform_destroy(self, instance) -> None:
        services.site_delete(actor=self.actor, org=self.org, site=instance)

    @extend_schema(request=None, responses=SiteSerializer, summary="Pause a site (the workers stop serving it)")
    @action(detail=True, methods=["post"])
    def pause(self, request, *args, **kwargs):
        return self.detail_response(services.site_pause(actor=self.actor, org=self.org, site=self.get_object()))

    @extend_schema(request=None, responses=SiteSerializer, summary="Resume a paused site")
    @action(detail=True, methods=["post"])
    def resume(self, request, *args, **kwargs):
        return self.detail_response(services.site_resume(actor=self.actor, org=self.org, site=self.get_object()))


# --- hostnames ----------------------------------------------------------------------------------


class HostnameSerializer(serializers.ModelSerializer):
    class Meta:
        model = Hostname
        fields = ["id", "site", "name", "created_at"]
        read_only_fields = ["id", "site", "created_at"]
        extra_kwargs = {
            "name": {"validators": [], "help_text": "e.g. www.example.com or *.example.com; unique across the platform."}
        }


@extend_schema_view(
    list=extend_schema(summary="A site's hostnames"),
    retrieve=extend_schema(summary="One hostname"),
    create=extend_schema(summary="Add a hostname to a site"),
    destroy=extend_schema(summary="Remove a hostname (a site keeps at least one)"),
)
class HostnameViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, DestroyMixin, SiteChildViewSet):
    model = Hostname
    serializer_class = HostnameSerializer
    lookup_value_converter = "int"
    ordering_fields = ["name", "created_at"]
    ordering = ["name"]
    filterset_fields = ["name"]

    def perform_create(self, data):
        return services.hostname_add(actor=self.actor, org=self.org, site=self.site, name=data["name"])

    def perform_destroy(self, instance) -> None:
        services.hostname_remove(actor=self.actor, org=self.org, hostname=instance)


# --- routes -------------------------------------------------------------------------------------


class RouteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Route
        fields = ["id", "site", "path_prefix", "pool", "strip_prefix", "rewrite_prefix", "kind", "aggregate", "created_at"]
        read_only_fields = ["id", "site", "created_at"]
        validators: list = []  # the service words the duplicate-prefix error for people
        extra_kwargs = {
            "path_prefix": {"required": True, "help_text": "Requests whose path starts with this, e.g. /api/."},
            "rewrite_prefix": {"help_text": "Replace the matched prefix with this upstream, e.g. /internal/v2/; empty: keep it."},
            "aggregate": {
                "help_text": 'kind aggregate: [{"key": "user", "path": "/users/me", "timeout": 2, "pool": "users"}, ...]; '
                "a GET answers {key: body, ...}, failed parts as {\"error\": ...} and listed in X-Portico-Aggregate-Failed."
            },
        }


@extend_schema_view(
    list=extend_schema(summary="A site's routes (path prefix → backend pool)"),
    retrieve=extend_schema(summary="One route"),
    create=extend_schema(summary="Add a route"),
    update=extend_schema(summary="Change a route"),
    partial_update=extend_schema(summary="Change some of a route's fields"),
    destroy=extend_schema(summary="Remove a route"),
)
class RouteViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, SiteChildViewSet):
    model = Route
    serializer_class = RouteSerializer
    lookup_value_converter = "int"
    ordering_fields = ["path_prefix", "created_at", "pool"]
    ordering = ["-path_prefix"]
    filterset_fields = ["pool"]

    def perform_create(self, data):
        return services.route_create(actor=self.actor, org=self.org, site=self.site, **data)

    def perform_update(self, instance, data):
        return services.route_update(actor=self.actor, org=self.org, route=instance, **data)

    def perform_destroy(self, instance) -> None:
        services.route_delete(actor=self.actor, org=self.org, route=instance)
