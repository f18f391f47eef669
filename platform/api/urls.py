"""``/api/v1/``: everything under the organization it belongs to.

    /api/v1/orgs/                                   organizations you belong to
    /api/v1/orgs/{org_slug}/{members,invitations,tokens,sites,policies,certificates,audit-events,purges}/
    /api/v1/orgs/{org_slug}/sites/{site_pk}/{hostnames,routes,backends}/
    /api/v1/orgs/{org_slug}/fleet/{workers,versions}/
    /api/v1/orgs/{org_slug}/alert-settings/         one per organization: GET, PUT, PATCH
    /api/schema/  the OpenAPI 3 schema;  /api/docs/  Swagger UI (interactive)
"""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from .endpoints.audit_events import AuditEventViewSet
from .endpoints.certificates import CertificateViewSet
from .endpoints.findings import FindingViewSet
from .endpoints.fleet import ConfigVersionViewSet, WorkerViewSet
from .endpoints.organizations import ApiTokenViewSet, InvitationViewSet, MemberViewSet, OrganizationViewSet
from .endpoints.platform_policies import PlatformPolicyViewSet
from .endpoints.policies import PolicyViewSet
from .endpoints.purges import PurgeViewSet
from .endpoints.sites import BackendViewSet, HostnameViewSet, RouteViewSet, SiteViewSet
from .endpoints.traffic import AlertSettingsViewSet, AlertViewSet, BackendHealthViewSet, RequestSampleViewSet, TrafficViewSet

app_name = "api"


def _router() -> SimpleRouter:
    # Path converters (uuid, int, slug) instead of regexes: the schema gets typed path parameters.
    return SimpleRouter(use_regex_path=False)


platform = _router()
platform.register("orgs", OrganizationViewSet, basename="organization")

org = _router()
org.register("members", MemberViewSet, basename="member")
org.register("invitations", InvitationViewSet, basename="invitation")
org.register("tokens", ApiTokenViewSet, basename="token")
org.register("sites", SiteViewSet, basename="site")
org.register("policies", PolicyViewSet, basename="policy")
org.register("certificates", CertificateViewSet, basename="certificate")
org.register("audit-events", AuditEventViewSet, basename="audit-event")
org.register("purges", PurgeViewSet, basename="purge")
org.register("platform-policies", PlatformPolicyViewSet, basename="platform-policy")
org.register("findings", FindingViewSet, basename="finding")
org.register("alerts", AlertViewSet, basename="alert")
org.register("fleet/workers", WorkerViewSet, basename="worker")
org.register("fleet/versions", ConfigVersionViewSet, basename="config-version")

site = _router()
site.register("hostnames", HostnameViewSet, basename="hostname")
site.register("routes", RouteViewSet, basename="route")
site.register("backends", BackendViewSet, basename="backend")
site.register("traffic", TrafficViewSet, basename="traffic")
site.register("requests", RequestSampleViewSet, basename="request-sample")
site.register("backend-health", BackendHealthViewSet, basename="backend-health")

@csrf_exempt  # it changes nothing; an API client should get this JSON, not a CSRF page
def not_found(request, rest: str = ""):
    """Any other URL under /api/: a JSON 404 (not the site's HTML page), with a hint when only the
    trailing slash is missing."""
    detail = "No such API endpoint: see /api/docs/."
    if not request.path.endswith("/"):
        try:
            resolve(request.path + "/")
            detail = f"No such API endpoint; did you mean {request.path}/ ?"
        except Resolver404:
            pass
    return JsonResponse({"detail": detail}, status=404)


urlpatterns = [
    path("v1/", include(platform.urls)),
    path("v1/orgs/<slug:org_slug>/", include(org.urls)),
    path("v1/orgs/<slug:org_slug>/sites/<uuid:site_pk>/", include(site.urls)),
    # One object per organization, so no id in its URL (a router would want one).
    path("v1/orgs/<slug:org_slug>/alert-settings/",
         AlertSettingsViewSet.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"}, detail=True),
         name="alert-settings-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file: the site's Content-Security-Policy forbids inline scripts.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"), name="docs"),
    re_path(r"^(?P<rest>[\s\S]*)$", not_found),  # [\s\S]: paths may hold a (percent-encoded) newline
]
