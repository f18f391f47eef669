"""Organizations, their members, invitations and API tokens."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from edge.services import organization_require_backend_tls
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from tenancy import services
from tenancy.access import organizations_for
from tenancy.models import ApiToken, Invitation, Membership, Organization, Role, TokenScope

from ..viewsets import ApiViewSet, CreateMixin, DestroyMixin, OrgViewSet, RetrieveMixin, UpdateMixin, organization_for

# --- organizations ------------------------------------------------------------------------------


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role here (a token acts as viewer or editor).")

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "created_at", "role", "require_backend_tls"]
        read_only_fields = ["id", "slug", "created_at"]
        extra_kwargs = {"require_backend_tls": {"help_text": "Refuse plain-HTTP backends on every site (admin)."}}

    def get_role(self, org: Organization) -> str | None:
        view = self.context.get("view")
        actor = getattr(view, "actor", None)
        return actor.role_in(org) if actor is not None else None


@extend_schema_view(
    list=extend_schema(summary="Organizations you belong to (a token: its own)"),
    create=extend_schema(summary="Create an organization, with you as its owner (people only, not tokens)"),
    retrieve=extend_schema(summary="One organization"),
    update=extend_schema(summary="Rename an organization (admin)"),
    partial_update=extend_schema(summary="Rename an organization (admin)"),
)
class OrganizationViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, UpdateMixin, ApiViewSet):
    serializer_class = OrganizationSerializer
    lookup_field = "slug"
    lookup_url_kwarg = "org_slug"
    lookup_value_converter = "slug"
    write_role = Role.ADMIN
    ordering_fields = ["name", "slug", "created_at"]
    ordering = ["name"]
    filterset_fields = ["slug"]

    def resolve_scope(self) -> None:
        if "org_slug" in self.kwargs:
            self.org = organization_for(self.actor, self.kwargs["org_slug"])

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Organization.objects.none()
        return organizations_for(self.actor)

    def get_object(self):
        self.check_object_permissions(self.request, self.org)
        return self.org

    def create(self, request, *args, **kwargs):
        # Refused before the body is read: a token belongs to one organization and makes none.
        if self.actor.kind != "user":
            raise PermissionDenied("Only a signed-in person can create an organization, not an API token.")
        return super().create(request, *args, **kwargs)

    def perform_create(self, data):
        return services.organization_create(actor=self.actor, name=data["name"])

    def perform_update(self, instance, data):
        org = instance
        if data.get("name", org.name) != org.name:
            org = services.organization_rename(actor=self.actor, org=org, name=data["name"])
        if "require_backend_tls" in data:
            org = organization_require_backend_tls(actor=self.actor, org=org, required=data["require_backend_tls"])
        return org


# --- members ------------------------------------------------------------------------------------


class MemberUserSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    email = serializers.EmailField(read_only=True)


class MembershipSerializer(serializers.ModelSerializer):
    user = MemberUserSerializer(read_only=True)
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = ["id", "user", "created_at"]


@extend_schema_view(
    list=extend_schema(summary="Members and their roles"),
    retrieve=extend_schema(summary="One member"),
    update=extend_schema(summary="Change a member's role (admin; owners for the owner role)"),
    partial_update=extend_schema(summary="Change a member's role (admin; owners for the owner role)"),
    destroy=extend_schema(summary="Remove a member (admin), or leave (yourself)"),
)
class MemberViewSet(mixins.ListModelMixin, RetrieveMixin, UpdateMixin, DestroyMixin, OrgViewSet):
    model = Membership
    serializer_class = MembershipSerializer
    lookup_value_converter = "int"
    write_role = Role.ADMIN
    # Anyone may leave; the service decides whether this is leaving or removing someone else.
    write_roles = {"destroy": Role.VIEWER, "transfer_ownership": Role.OWNER}
    ordering_fields = ["created_at", "role", "user__email"]
    ordering = ["created_at"]
    filterset_fields = ["role"]

    def get_queryset(self):
        return super().get_queryset().select_related("user")

    def perform_update(self, instance, data):
        return services.membership_set_role(actor=self.actor, org=self.org, membership=instance, role=data.get("role", instance.role))

    def perform_destroy(self, instance) -> None:
        services.membership_remove(actor=self.actor, org=self.org, membership=instance)

    @extend_schema(
        request=None,
        responses=MembershipSerializer,
        summary="Make this member the owner; you (an owner) become an admin",
    )
    @action(detail=True, methods=["post"], url_path="transfer-ownership")
    def transfer_ownership(self, request, *args, **kwargs):
        membership = self.get_object()
        services.owner_transfer(actor=self.actor, org=self.org, to=membership)
        membership.refresh_from_db()
        return self.detail_response(membership)


# --- invitations --------------------------------------------------------------------------------


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.SlugRelatedField(slug_field="email", read_only=True, allow_null=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "status", "invited_by", "created_at", "expires_at", "accepted_at", "revoked_at"]
        read_only_fields = fields

    def get_status(self, inv: Invitation) -> str:
        if inv.accepted_at:
            return "accepted"
        if inv.revoked_at:
            return "revoked"
        return "pending" if inv.expires_at > timezone.now() else "expired"


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class InvitationCreatedSerializer(InvitationSerializer):
    token = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="The invitation's secret, shown once: put it in the link you send. "
        "Null when this answer is a replay (Idempotency-Key).",
    )

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "token"]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(summary="Invitations (admin)"),
    retrieve=extend_schema(summary="One invitation (admin)"),
    create=extend_schema(
        summary="Invite someone by email (admin)",
        request=InvitationCreateSerializer,
        responses={201: InvitationCreatedSerializer},
    ),
)
class InvitationViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, OrgViewSet):
    model = Invitation
    serializer_class = InvitationSerializer
    input_serializer_classes = {"create": InvitationCreateSerializer}
    lookup_value_converter = "int"
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    response_secrets = ("token",)
    ordering_fields = ["created_at", "email", "expires_at"]
    ordering = ["-created_at"]
    filterset_fields = ["email", "role"]

    def get_queryset(self):
        return super().get_queryset().select_related("invited_by")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation, token = services.invitation_create(actor=self.actor, org=self.org, **serializer.validated_data)
        return self.detail_response(invitation, status_code=201, extra={"token": token})

    @extend_schema(request=None, responses=InvitationSerializer, summary="Revoke an invitation (admin)")
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args, **kwargs):
        invitation = self.get_object()
        services.invitation_revoke(actor=self.actor, org=self.org, invitation=invitation)
        return self.detail_response(invitation)


# --- API tokens ---------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    prefix = serializers.SerializerMethodField(help_text="The token's visible start, to recognise it.")
    created_by = serializers.SlugRelatedField(slug_field="email", read_only=True, allow_null=True)
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scope", "active", "created_by", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields

    def get_prefix(self, token: ApiToken) -> str:
        return f"pt_{token.lookup}_"


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.READ)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Empty: never expires.")


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="The token, shown this once and never again (only its hash is stored). "
        "Null when this answer is a replay (Idempotency-Key).",
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(summary="API tokens (admin)"),
    retrieve=extend_schema(summary="One API token (admin)"),
    create=extend_schema(
        summary="Create an API token (admin, signed in: tokens cannot make tokens)",
        request=ApiTokenCreateSerializer,
        responses={201: ApiTokenCreatedSerializer},
    ),
)
class ApiTokenViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, OrgViewSet):
    model = ApiToken
    serializer_class = ApiTokenSerializer
    input_serializer_classes = {"create": ApiTokenCreateSerializer}
    lookup_value_converter = "int"
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    response_secrets = ("token",)
    ordering_fields = ["created_at", "name", "last_used_at", "expires_at"]
    ordering = ["-created_at"]
    filterset_fields = ["scope"]

    def get_queryset(self):
        return super().get_queryset().select_related("created_by")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row, token = services.token_create(actor=self.actor, org=self.org, **serializer.validated_data)
        return self.detail_response(row, status_code=201, extra={"token": token})

    @extend_schema(request=None, responses=ApiTokenSerializer, summary="Revoke an API token (admin)")
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args, **kwargs):
        token = self.get_object()
        services.token_revoke(actor=self.actor, org=self.org, token=token)
        return self.detail_response(token)
