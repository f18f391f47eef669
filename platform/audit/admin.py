from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("organization", "seq", "created_at", "actor_name", "action", "target_repr")
    list_filter = ("action", "actor_kind")
    search_fields = ("actor_name", "action", "target_repr", "request_id")

    # The log is append-only, even for staff.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
