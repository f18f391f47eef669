"""Cache purges: by URL, URL prefix, cache tag, or everything."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from edge.models import Purge
from edge.purges import purge_create
from rest_framework import mixins, serializers

from ..fields import OrgSiteField
from ..viewsets import CreateMixin, OrgViewSet, RetrieveMixin


class PurgeSerializer(serializers.ModelSerializer):
    site = OrgSiteField(
        allow_null=True,
        required=False,
        default=None,
        help_text="Limit the purge to one site; for url and prefix it is found from the URL's hostname.",
    )

    class Meta:
        model = Purge
        fields = [
            "id", "site", "kind", "value", "status", "created_by", "created_at",
            "sent_at", "workers_sent", "confirmations", "completed_at",
        ]
        read_only_fields = ["id", "status", "created_by", "created_at", "sent_at", "workers_sent", "confirmations", "completed_at"]
        extra_kwargs = {
            "value": {
                "help_text": "url: the full URL (https://www.example.com/a?b); prefix: a URL prefix "
                "(https://www.example.com/static/); tag: a cache tag; all: empty.",
                "allow_blank": True,
                "required": False,
                "default": "",
            },
            "confirmations": {"help_text": "The workers that confirmed the purge, with when."},
        }


class PurgeFilter(django_filters.FilterSet):
    # By id, not a choice among all sites: which ids exist elsewhere is none of the caller's business.
    site = django_filters.UUIDFilter(field_name="site_id")

    class Meta:
        model = Purge
        fields = ["kind", "status"]


@extend_schema_view(
    list=extend_schema(summary="Cache purges and their progress"),
    retrieve=extend_schema(summary="One purge: which workers confirmed it"),
    create=extend_schema(summary="Purge cached responses on every worker (202: sent asynchronously)"),
)
class PurgeViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, OrgViewSet):
    model = Purge
    serializer_class = PurgeSerializer
    lookup_value_converter = "uuid"
    create_status = 202
    ordering_fields = ["created_at", "status", "kind"]
    ordering = ["-created_at"]
    filterset_class = PurgeFilter

    def perform_create(self, data):
        return purge_create(actor=self.actor, org=self.org, **data)
