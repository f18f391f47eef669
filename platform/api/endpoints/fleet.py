"""The proxy workers and the config versions rolled out to them.

Workers and versions are platform-wide; any member of an organization may read them, since
they say nothing about other tenants. The one exception is a version's content: its diff only
compares the caller's own sites, and rejection reasons (which may name another tenant's site)
are not shown.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view, inline_serializer
from fleet.models import ConfigVersion, Worker
from fleet.selectors import is_online, rollout_status, version_diff
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from ..viewsets import OrgViewSet, RetrieveMixin


class WorkerSerializer(serializers.ModelSerializer):
    online = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = ["id", "name", "pool", "version", "online", "started_at", "last_heartbeat"]
        read_only_fields = fields

    def get_online(self, worker: Worker) -> bool:
        return is_online(worker)


class RolloutSerializer(serializers.Serializer):
    online = serializers.IntegerField(help_text="Workers online now.")
    applied = serializers.IntegerField(help_text="Online workers serving this version or a newer one.")
    pending = serializers.ListField(child=serializers.CharField(), help_text="Online workers that have not applied it yet.")
    rejected = serializers.ListField(child=serializers.CharField(), help_text="Online workers that rejected it.")
    complete = serializers.BooleanField()
    summary = serializers.CharField(help_text='e.g. "v42 applied on 3 of 3 workers"')


class ConfigVersionSerializer(serializers.ModelSerializer):
    rollout = serializers.SerializerMethodField()

    class Meta:
        model = ConfigVersion
        fields = ["number", "sha256", "size", "created_at", "rollout"]
        read_only_fields = fields

    @extend_schema_field(RolloutSerializer)
    def get_rollout(self, version: ConfigVersion) -> dict:
        status = rollout_status(version.number)
        return {
            "online": status.online,
            "applied": status.applied,
            "pending": status.pending,
            "rejected": [r["worker"] for r in status.rejected],
            "complete": status.complete,
            "summary": str(status),
        }


class _PlatformViewSet(OrgViewSet):
    """Read-only, platform-wide rows behind an organization URL (membership still required)."""

    def get_queryset(self):
        return self.model.objects.all()


@extend_schema_view(
    list=extend_schema(summary="Proxy workers"),
    retrieve=extend_schema(summary="One proxy worker"),
)
class WorkerViewSet(mixins.ListModelMixin, RetrieveMixin, _PlatformViewSet):
    model = Worker
    serializer_class = WorkerSerializer
    lookup_value_converter = "int"
    ordering_fields = ["name", "version", "last_heartbeat"]
    ordering = ["name"]
    filterset_fields = ["pool", "version"]


@extend_schema_view(
    list=extend_schema(summary="Config versions, newest first, with their rollout"),
    retrieve=extend_schema(summary="One config version and its rollout"),
)
class ConfigVersionViewSet(mixins.ListModelMixin, RetrieveMixin, _PlatformViewSet):
    model = ConfigVersion
    serializer_class = ConfigVersionSerializer
    lookup_field = "number"
    lookup_value_converter = "int"
    ordering_fields = ["number", "created_at"]
    ordering = ["-number"]
    filterset_fields = {"number": ["gte", "lte"]}

    @extend_schema(
        summary="What changed in your sites between two versions",
        parameters=[OpenApiParameter("from", OpenApiTypes.INT, description="The older version; default: the one before.")],
        responses=inline_serializer(
            "ConfigVersionDiff",
            {
                "from": serializers.IntegerField(),
                "to": serializers.IntegerField(),
                "added": serializers.ListField(child=serializers.CharField(), help_text="Your sites added."),
                "removed": serializers.ListField(child=serializers.CharField(), help_text="Your sites removed."),
                "changed": serializers.DictField(
                    child=serializers.DictField(), help_text="Per site name: {field: {old, new}}."
                ),
            },
        ),
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def diff(self, request, *args, **kwargs):
        new = self.get_object()
        raw = request.query_params.get("from")
        if raw is None:
            old = ConfigVersion.objects.filter(number__lt=new.number).order_by("-number").first()
            if old is None:
                raise Http404("This is the first version: there is nothing to compare it with.")
        else:
            if not raw.isdigit():
                raise serializers.ValidationError({"from": ["A version number."]})
            old = ConfigVersion.objects.filter(number=int(raw)).first()
            if old is None:
                raise serializers.ValidationError({"from": [f"There is no version {raw}."]})
        return Response(version_diff(old, new, organization_id=self.org.pk))
