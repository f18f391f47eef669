from audit.admin import ReadOnlyAdmin
from django.contrib import admin

from .models import ConfigVersion, Rollout, Worker


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ("name", "pool", "address", "version", "last_heartbeat", "started_at")


@admin.register(ConfigVersion)
class ConfigVersionAdmin(ReadOnlyAdmin):
    list_display = ("number", "size", "sha256", "created_at")
    exclude = ("envelope",)  # holds the fleet-encrypted private keys


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin):
    list_display = ("worker", "version", "outcome", "reason", "at")
    list_filter = ("outcome",)
