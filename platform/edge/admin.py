from audit.admin import ReadOnlyAdmin
from django.contrib import admin

from .models import Backend, Hostname, Policy, Purge, Route, Site


class HostnameInline(admin.TabularInline):
    model = Hostname
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Site)
class SiteAdmin(ReadOnlyAdmin):
    list_display = ("name", "organization", "state", "tls_mode", "balancing", "updated_at")
    list_filter = ("state", "tls_mode", "balancing")
    search_fields = ("name", "hostnames__name", "organization__name")
    inlines = [HostnameInline]


@admin.register(Backend)
class BackendAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "site", "organization", "pool", "weight", "state")
    list_filter = ("state", "scheme")
    search_fields = ("address", "site__name")


@admin.register(Route)
class RouteAdmin(ReadOnlyAdmin):
    list_display = ("site", "path_prefix", "pool", "strip_prefix")


@admin.register(Policy)
class PolicyAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "organization", "site", "enabled", "updated_at")
    list_filter = ("kind", "enabled")


@admin.register(Purge)
class PurgeAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "organization", "site", "created_at")
