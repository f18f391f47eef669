from certs.views import internal_ca_root
from django.contrib import admin
from django.urls import include, path
from traffic import views as traffic_views

from .health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", traffic_views.metrics, name="metrics"),
    path("certs/internal-ca.pem", internal_ca_root, name="internal-ca-root"),
    path("api/", include("api.urls")),
    path("accounts/", include("allauth.urls")),
    path("", include("frontend.urls")),
]

handler500 = "config.health.server_error"
