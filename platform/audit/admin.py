from django.contrib import admin

from .models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff may look, not edit: every change to tenant data goes through a service, so that it is
    validated, audited and published. The admin would bypass all three."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("organization", "seq", "created_at", "actor_name", "action", "target_repr")
    list_filter = ("action", "actor_kind")
    search_fields = ("actor_name", "action", "target_repr", "request_id")
