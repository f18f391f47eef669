"""Policies: typed settings for one edge feature, on a site or as an organization default."""

from __future__ import annotations

import uuid

import django_filters
import msgspec
from audit.redact import REDACTED
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from edge import services
from edge.models import POLICY_SCHEMA, Policy
from rest_framework import mixins, serializers

from ..fields import OrgSiteField
from ..viewsets import CreateMixin, DestroyMixin, OrgViewSet, RetrieveMixin, UpdateMixin

# The settings of each kind, as JSON Schema components built from the snapshot contract itself,
# so the documentation cannot drift from what the workers accept.
POLICY_SETTINGS_SCHEMAS, POLICY_SETTINGS_COMPONENTS = msgspec.json.schema_components(
    list(POLICY_SCHEMA.values()), ref_template="#/components/schemas/Policy{name}"
)
POLICY_SETTINGS_COMPONENTS = {f"Policy{name}": schema for name, schema in POLICY_SETTINGS_COMPONENTS.items()}


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@extend_schema_field(
    {
        "anyOf": POLICY_SETTINGS_SCHEMAS,
        "description": "Settings for the policy's kind: "
        + "; ".join(
            f"{kind} → {schema.get('$ref', '').rsplit('/', 1)[-1] or 'a list of PolicyHeaderRule'}"
            for kind, schema in zip(POLICY_SCHEMA, POLICY_SETTINGS_SCHEMAS, strict=True)
        )
        + ". basic_auth passwords are stored hashed and shown as [redacted]; send [redacted] back to keep one.",
    }
)
class PolicySettingsField(serializers.JSONField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # Postgres cannot store NUL in JSON text; no setting needs one.
        if _has_nul(value):
            raise serializers.ValidationError("Settings cannot contain NUL characters.")
        return value


def _redact_basic_auth(kind: str, settings):
    if kind == Policy.Kind.BASIC_AUTH and isinstance(settings, dict) and isinstance(settings.get("users"), dict):
        return {**settings, "users": dict.fromkeys(settings["users"], REDACTED)}
    return settings


class PolicySerializer(serializers.ModelSerializer):
    site = OrgSiteField(allow_null=True, required=False, help_text="The site it applies to; null: an organization default.")
    settings = PolicySettingsField()

    class Meta:
        model = Policy
        fields = ["id", "site", "kind", "name", "settings", "enabled", "created_at", "updated_at"]
        read_only_fields = ["id", "site", "kind", "created_at", "updated_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["settings"] = _redact_basic_auth(instance.kind, data["settings"])
        return data

    def validate_settings(self, value):
        # A client that read a basic_auth policy got [redacted] for each password: sending it
        # back keeps that user's stored hash.
        current = getattr(self.instance, "settings", None) or {}
        if isinstance(value, dict) and isinstance(value.get("users"), dict):
            users = {}
            for user, password in value["users"].items():
                if password == REDACTED:
                    if user not in current.get("users", {}):
                        raise serializers.ValidationError(f"users.{user}: give a password for this new user.")
                    password = current["users"][user]
                users[user] = password
            value = {**value, "users": users}
        return value


class PolicyCreateSerializer(PolicySerializer):
    site = OrgSiteField(allow_null=True, required=False, default=None, help_text="The site it applies to; null: an organization default.")

    class Meta(PolicySerializer.Meta):
        read_only_fields = ["id", "created_at", "updated_at"]


class PolicyFilter(django_filters.FilterSet):
    site = django_filters.CharFilter(method="filter_site", help_text="A site id, or `none` for the organization's defaults.")

    class Meta:
        model = Policy
        fields = ["kind", "enabled"]

    def filter_site(self, queryset, name, value):
        if value.lower() in ("none", "null"):
            return queryset.filter(site__isnull=True)
        try:
            return queryset.filter(site_id=uuid.UUID(value))
        except ValueError:
            raise serializers.ValidationError({"site": ["A site id (a UUID), or none."]}) from None


@extend_schema_view(
    list=extend_schema(summary="Policies of the organization: its defaults (site null) and its sites'"),
    retrieve=extend_schema(summary="One policy"),
    create=extend_schema(summary="Create a policy on a site, or an organization default", responses={201: PolicySerializer}),
    update=extend_schema(summary="Change a policy's name, settings or enabled flag"),
    partial_update=extend_schema(summary="Change some of a policy's fields"),
    destroy=extend_schema(summary="Delete a policy"),
)
class PolicyViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, OrgViewSet):
    model = Policy
    serializer_class = PolicySerializer
    input_serializer_classes = {"create": PolicyCreateSerializer}
    lookup_value_converter = "uuid"
    filterset_class = PolicyFilter
    ordering_fields = ["kind", "name", "created_at", "updated_at"]
    ordering = ["kind", "name"]

    def perform_create(self, data):
        return services.policy_create(actor=self.actor, org=self.org, **data)

    def perform_update(self, instance, data):
        return services.policy_update(actor=self.actor, org=self.org, policy=instance, **data)

    def perform_destroy(self, instance) -> None:
        services.policy_delete(actor=self.actor, org=self.org, policy=instance)
