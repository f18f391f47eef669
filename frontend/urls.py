from __future__ import annotations

from django.urls import include, path

from .views import alerts, audit, certificates, fleet, inspector, organizations, security, sites, tokens, traffic

app_name = "frontend"

site_urls = [
    path("", sites.SiteDetailView.as_view(), name="site"),
    path("live/", sites.SiteLiveView.as_view(), name="site_live"),
    path("traffic/", traffic.SiteTrafficView.as_view(), name="site_traffic"),
    path("settings/<str:section>/", sites.SiteSectionView.as_view(), name="site_section"),
    path("state/<str:action>/", sites.SiteStateView.as_view(), name="site_state"),
    path("delete/", sites.SiteDeleteView.as_view(), name="site_delete"),
    path("hostnames/", sites.HostnameAddView.as_view(), name="hostname_add"),
    path("hostnames/<int:hostname_id>/remove/", sites.HostnameRemoveView.as_view(), name="hostname_remove"),
    path("backends/", sites.BackendAddView.as_view(), name="backend_add"),
    path("backends/<uuid:backend_id>/", sites.BackendUpdateView.as_view(), name="backend_update"),
    path("backends/<uuid:backend_id>/remove/", sites.BackendRemoveView.as_view(), name="backend_remove"),
    path("routes/", sites.RouteAddView.as_view(), name="route_add"),
    path("routes/<int:route_id>/remove/", sites.RouteRemoveView.as_view(), name="route_remove"),
    path("policies/", sites.PolicyAddView.as_view(), name="policy_add"),
    path("policies/<uuid:policy_id>/", sites.PolicyUpdateView.as_view(), name="policy_update"),
    path("policies/<uuid:policy_id>/remove/", sites.PolicyRemoveView.as_view(), name="policy_remove"),
    path("inspector/", inspector.InspectorView.as_view(), name="inspector"),
    path("inspector/<int:sample_id>/", inspector.SampleView.as_view(), name="sample"),
    path("inspector/<int:sample_id>/replay/", inspector.SampleReplayView.as_view(), name="sample_replay"),
]

org_urls = [
    path("", sites.SiteListView.as_view(), name="sites"),
    path("sites/new/", sites.SiteCreateView.as_view(), name="site_create"),
    path("sites/<uuid:site_id>/", include(site_urls)),
    path("certificates/", certificates.CertificatesView.as_view(), name="certificates"),
    path("certificates/progress/", certificates.CertificateProgressView.as_view(), name="certificate_progress"),
    path("certificates/internal-ca-root.pem", certificates.InternalCARootView.as_view(), name="internal_ca_root"),
    path("tokens/", tokens.TokenListView.as_view(), name="tokens"),
    path("tokens/<int:token_id>/revoke/", tokens.TokenRevokeView.as_view(), name="token_revoke"),
    path("audit/", audit.AuditView.as_view(), name="audit"),
    path("security/", security.SecurityView.as_view(), name="security"),
    path("security/run/", security.SecurityRunView.as_view(), name="security_run"),
    path("security/findings/<int:finding_id>/acknowledge/", security.FindingAcknowledgeView.as_view(), name="finding_acknowledge"),
    path("fleet/", fleet.FleetView.as_view(), name="fleet"),
    path("alerts/", alerts.AlertsView.as_view(), name="alerts"),
    path("settings/", organizations.OrganizationView.as_view(), name="organization"),
]

urlpatterns = [
    path("", organizations.home, name="home"),
    path("orgs/new/", organizations.organization_create, name="org_create"),
    path("invitations/<str:token>/", organizations.invitation_accept, name="invitation_accept"),
    path("o/<slug:org_slug>/", include(org_urls)),
]
