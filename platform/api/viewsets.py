"""The base every endpoint is built on, so that none can forget what they all must do.

``ApiViewSet``: authentication, per-credential throttling, the actor, role checks before any
body is read, ``Idempotency-Key`` on POST, ``ETag`` on detail answers and ``If-Match`` on writes.

``OrgViewSet``: resolves the organization in the URL (404 for strangers, the same answer as for an
organization that does not exist) and scopes every queryset with ``for_org``. ``SiteChildViewSet``
narrows it further to one site of that organization.

Writes call the services (``perform_create`` / ``perform_update`` / ``perform_destroy``), which
check the role again, validate, write and audit in one transaction; views never save models.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models, transaction
from django.http import Http404
from edge.models import Site
from rest_framework import exceptions, status, viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from tenancy.access import Actor
from tenancy.models import Organization, Role

from . import idempotency
from .conditional import check_if_match, etag_of, not_modified
from .permissions import OrgRole, is_authenticated


def organization_for(actor: Actor, slug: str) -> Organization:
    """The organization ``slug`` names, if ``actor`` may see it; 404 otherwise."""
    org = Organization.objects.filter(slug=slug).first()
    if org is None or actor.role_in(org) is None:
        raise Http404("No such organization.")
    return org


def actor_ref(actor: Actor) -> str:
    if actor.kind == "token" and actor.token is not None:
        return f"token:{actor.token.pk}"
    if actor.user is not None:
        return f"user:{actor.user.pk}"
    return "anonymous"


class ApiViewSet(viewsets.GenericViewSet):
    permission_classes = [OrgRole]
    read_role: ClassVar[str] = Role.VIEWER
    write_role: ClassVar[str] = Role.EDITOR
    write_roles: ClassVar[dict[str, str]] = {}  # per action, when it differs from write_role
    # Serializers that read request bodies, per action; answers always use serializer_class.
    input_serializer_classes: ClassVar[dict[str, type]] = {}
    # Fields of a create answer shown once and never stored, not even for Idempotency-Key replays.
    response_secrets: ClassVar[tuple[str, ...]] = ()
    create_status: ClassVar[int] = status.HTTP_201_CREATED

    org: Organization | None = None
    actor: Actor
    _idempotency = None

    def write_role_for(self, action: str | None) -> str:
        return self.write_roles.get(action or "", self.write_role)

    def get_serializer_class(self):
        return self.input_serializer_classes.get(self.action, self.serializer_class)

    def get_output_serializer(self, instance, **kwargs):
        return self.serializer_class(instance, context=self.get_serializer_context(), **kwargs)

    # --- the request's way through ----------------------------------------------------------

    def dispatch(self, request, *args, **kwargs):
        if idempotency.requested(request):
            # See api/idempotency.py: the key's row and the change commit together, or neither.
            with transaction.atomic():
                response = super().dispatch(request, *args, **kwargs)
                if not 200 <= response.status_code < 300:
                    transaction.set_rollback(True)
                return response
        return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        # DRF checks permissions before throttles. Here the throttle comes first, so that a flood
        # costs no organization lookup, and the organization before the permissions, which depend
        # on the caller's role in it.
        self.format_kwarg = self.get_format_suffix(**kwargs)
        request.accepted_renderer, request.accepted_media_type = self.perform_content_negotiation(request)
        request.version, request.versioning_scheme = self.determine_version(request, *args, **kwargs)
        try:
            self.perform_authentication(request)
        except exceptions.AuthenticationFailed:
            # Counted against the client's address: guessing tokens is throttled too.
            self.check_throttles(request)
            raise
        self.check_throttles(request)
        if not is_authenticated(request):
            self.permission_denied(request)  # 401 with WWW-Authenticate
        self.actor = Actor.from_request(request)
        self.resolve_scope()
        self.check_permissions(request)
        if idempotency.requested(request):
            self._idempotency = idempotency.begin(request, actor_ref(self.actor))

    def resolve_scope(self) -> None:
        """Find what the URL names above the object (organization, site); 404 if not visible."""

    def handle_exception(self, exc):
        if isinstance(exc, idempotency.Replay):
            self._idempotency = None
            return exc.response
        response = super().handle_exception(exc)
        # Errors are JSON, even where the answer would have been CSV (the audit export).
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self._idempotency is not None:
            idempotency.finish(self._idempotency, response, secrets=self.response_secrets)
            self._idempotency = None
        return response

    # --- answers ------------------------------------------------------------------------------

    def detail_response(self, instance, *, status_code: int = status.HTTP_200_OK, extra: dict | None = None) -> Response:
        data = self.get_output_serializer(instance).data
        etag = etag_of(data)
        if extra:
            data = {**data, **extra}
        if status_code == status.HTTP_200_OK and self.request.method == "GET" and not_modified(self.request, etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(data, status=status_code, headers={"ETag": etag})

    def get_object_for_write(self) -> models.Model:
        """The object, locked for this transaction, after the role and If-Match checks."""
        instance = self.get_object()  # scoped lookup (404), then has_object_permission (403)
        locked = type(instance).objects.select_for_update().get(pk=instance.pk)
        check_if_match(self.request, etag_of(self.get_output_serializer(locked).data))
        return locked


class OrgViewSet(ApiViewSet):
    """Endpoints under ``/api/v1/orgs/{org_slug}/``."""

    model: ClassVar[type[models.Model]]

    def resolve_scope(self) -> None:
        self.org = organization_for(self.actor, self.kwargs["org_slug"])

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no org
            return self.model.objects.none()
        return self.narrow(self.model.objects.for_org(self.org))

    def narrow(self, queryset):
        """Narrow the organization's objects further (to one site, say); never widen them."""
        return queryset


class SiteChildViewSet(OrgViewSet):
    """Endpoints under ``/api/v1/orgs/{org_slug}/sites/{site_pk}/``."""

    site: Site

    def resolve_scope(self) -> None:
        super().resolve_scope()
        site = Site.objects.for_org(self.org).filter(pk=self.kwargs["site_pk"]).first()
        if site is None:
            raise Http404("No such site.")
        self.site = site

    def narrow(self, queryset):
        return queryset.filter(site=self.site)


# --- the operations, each calling a service hook ------------------------------------------------------


class RetrieveMixin:
    def retrieve(self, request, *args, **kwargs):
        return self.detail_response(self.get_object())


class CreateMixin:
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = self.perform_create(serializer.validated_data)
        return self.detail_response(instance, status_code=self.create_status)

    def perform_create(self, data: dict[str, Any]):
        raise NotImplementedError


class UpdateMixin:
    def update(self, request, *args, partial: bool = False, **kwargs):
        with transaction.atomic():
            instance = self.get_object_for_write()
            serializer = self.get_serializer(instance, data=request.data, partial=partial)
            serializer.is_valid(raise_exception=True)
            instance = self.perform_update(instance, serializer.validated_data)
        return self.detail_response(instance)

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def perform_update(self, instance, data: dict[str, Any]):
        raise NotImplementedError


class DestroyMixin:
    def destroy(self, request, *args, **kwargs):
        with transaction.atomic():
            instance = self.get_object_for_write()
            self.perform_destroy(instance)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def perform_destroy(self, instance) -> None:
        raise NotImplementedError
