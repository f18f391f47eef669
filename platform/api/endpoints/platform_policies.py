"""Platform policies: the rules platform staff apply to every site, readable by every member."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from edge.models import PlatformPolicy
from rest_framework import mixins, serializers

from ..viewsets import OrgViewSet, RetrieveMixin


class PlatformPolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = PlatformPolicy
        fields = ["kind", "settings", "note", "updated_at"]
        read_only_fields = fields
        extra_kwargs = {
            "settings": {"help_text": 'ip_blocklist: {"deny": [CIDR...]}; min_tls: {"version": "1.3"}; '
                                      'managed_waf: {"groups": [...]}, forced to block on every site.'},
        }


@extend_schema_view(
    list=extend_schema(summary="Platform policies applied to every site on top of yours (read-only)"),
    retrieve=extend_schema(summary="One platform policy"),
)
class PlatformPolicyViewSet(mixins.ListModelMixin, RetrieveMixin, OrgViewSet):
    model = PlatformPolicy
    serializer_class = PlatformPolicySerializer
    lookup_field = "kind"
    lookup_value_converter = "slug"
    ordering_fields = ["kind", "updated_at"]
    ordering = ["kind"]
    filterset_fields = ["kind"]

    def get_queryset(self):
        # Not tenant data: the same rules for every organization; members of any may read them.
        return PlatformPolicy.objects.filter(enabled=True)
