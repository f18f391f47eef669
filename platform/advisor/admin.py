from audit.admin import ReadOnlyAdmin
from django.contrib import admin

from .models import Finding


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    list_display = ("title", "organization", "severity", "rule", "last_seen", "resolved_at", "acknowledged_at")
    list_filter = ("severity", "rule")
