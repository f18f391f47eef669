"""Certificates: list, request issuance, upload your own, revoke, delete. A private key is
accepted on upload and never sent back."""

from __future__ import annotations

from certs import services
from certs.models import Certificate
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from tenancy.models import Role

from ..viewsets import CreateMixin, DestroyMixin, OrgViewSet, RetrieveMixin


class CertificateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Certificate
        fields = [
            "id", "hostnames", "names", "source", "status", "progress", "failure_reason",
            "issuer", "serial", "fingerprint_sha256", "not_before", "not_after", "issued_at", "renew_after",
            "revoked_at", "replaces", "attempts", "next_attempt_at", "chain_pem", "created_at", "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "hostnames": {"help_text": "The site hostnames it is served for."},
            "names": {"help_text": "The DNS names in the certificate (may hold wildcards)."},
            "chain_pem": {"help_text": "The certificate chain, leaf first (public; the private key is never returned)."},
        }


class CertificateRequestSerializer(serializers.Serializer):
    hostnames = serializers.ListField(
        child=serializers.CharField(max_length=253),
        min_length=1,
        max_length=100,
        help_text="Hostnames of your sites to cover.",
    )


class CertificateUploadSerializer(serializers.Serializer):
    chain_pem = serializers.CharField(max_length=200_000, help_text="PEM: the certificate first, then its intermediates.")
    key_pem = serializers.CharField(
        max_length=50_000, write_only=True, help_text="PEM private key; stored encrypted, never shown again."
    )


@extend_schema_view(
    list=extend_schema(summary="Certificates"),
    retrieve=extend_schema(summary="One certificate and how its issuance goes"),
    create=extend_schema(
        summary="Request a certificate for some of your hostnames (202: issued asynchronously)",
        responses={202: CertificateSerializer},
    ),
    destroy=extend_schema(summary="Delete a certificate (cancels its order if one is under way)"),
)
class CertificateViewSet(mixins.ListModelMixin, RetrieveMixin, CreateMixin, DestroyMixin, OrgViewSet):
    model = Certificate
    serializer_class = CertificateSerializer
    input_serializer_classes = {"create": CertificateRequestSerializer, "upload": CertificateUploadSerializer}
    lookup_value_converter = "uuid"
    create_status = 202
    write_roles = {"revoke": Role.ADMIN}
    ordering_fields = ["created_at", "not_after", "status"]
    ordering = ["-created_at"]
    filterset_fields = ["status", "source"]

    def perform_create(self, data):
        return services.certificate_request(actor=self.actor, org=self.org, hostnames=data["hostnames"])

    def perform_destroy(self, instance) -> None:
        services.certificate_delete(actor=self.actor, org=self.org, certificate=instance)

    @extend_schema(summary="Upload a certificate you got elsewhere, with its private key", responses={201: CertificateSerializer})
    @action(detail=False, methods=["post"])
    def upload(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        cert = services.certificate_upload(actor=self.actor, org=self.org, **serializer.validated_data)
        return self.detail_response(cert, status_code=201)

    @extend_schema(request=None, responses=CertificateSerializer, summary="Revoke a certificate Portico issued (admin)")
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args, **kwargs):
        cert = services.certificate_revoke(actor=self.actor, org=self.org, certificate=self.get_object())
        return self.detail_response(cert)
