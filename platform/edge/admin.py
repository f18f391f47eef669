from audit.admin import ReadOnlyAdmin
from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from tenancy.access import Actor

from . import platform_policies
from .models import Backend, Hostname, PlatformPolicy, Policy, Purge, Route, Site


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


class PlatformPolicyForm(forms.ModelForm):
    class Meta:
        model = PlatformPolicy
        fields = ("kind", "settings", "enabled", "note")
        help_texts = {
            "settings": 'ip_blocklist: {"deny": ["203.0.113.0/24"]}; min_tls: {"version": "1.3"}; '
            'managed_waf: {"groups": ["sqli", "xss", "traversal", "scanners"]}',
        }

    def clean(self):
        data = super().clean()
        if "kind" in data and "settings" in data:
            try:
                data["settings"] = platform_policies.validate_settings(data["kind"], data["settings"])
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    self.add_error(field if field in self.fields else None, messages)
        return data


@admin.register(PlatformPolicy)
class PlatformPolicyAdmin(admin.ModelAdmin):
    """The one place tenants' rules are edited from the admin: platform staff own these. Saving
    goes through the service, which audits the change in every organization and publishes it."""

    form = PlatformPolicyForm
    list_display = ("kind", "enabled", "settings", "note", "updated_at", "updated_by")
    readonly_fields = ("updated_at", "updated_by")

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "kind") if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        saved = platform_policies.platform_policy_set(
            actor=Actor.from_request(request), kind=obj.kind, settings=obj.settings, enabled=obj.enabled, note=obj.note
        )
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        return False  # disable a rule instead: the change is then audited and published
