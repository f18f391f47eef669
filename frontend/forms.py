"""Forms only parse what people type into Python values; the services decide what is valid."""

from __future__ import annotations

import datetime as dt
import json

from django import forms
from django.forms.models import fields_for_model
from django.utils import timezone
from edge.models import Backend, Policy, Route, Site
from tenancy.models import Role, TokenScope
from traffic.alert_settings import BOUNDS as ALERT_BOUNDS
from traffic.alert_settings import plain_number

# Labels people read, where a model's verbose name is terse.
LABELS = {
    "max_body_bytes": "Largest request body (bytes)",
    "hc_rise": "Healthy after (passed checks)",
    "hc_fall": "Unhealthy after (failed checks)",
    "hc_expected_status": "Expected status",
    "tls_mode": "Certificates",
    "tls_min_version": "Minimum TLS version",
    "force_https": "Redirect HTTP to HTTPS",
    "hsts_max_age": "HSTS max-age (seconds)",
    "hsts_include_subdomains": "HSTS: include subdomains",
    "hsts_preload": "HSTS: preload",
    "sni": "SNI",
    "sticky_cookie": "Sticky-session cookie",
}


def _form(name: str, model, fields: list[str], base=forms.Form) -> type[forms.Form]:
    return type(name, (base,), dict(fields_for_model(model, fields=fields, labels=LABELS)))


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=100)


class SiteCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    hostnames = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), help_text="One per line (or separated by commas), e.g. www.example.com"
    )
    tls_mode = forms.ChoiceField(choices=Site.TlsMode.choices, initial=Site.TlsMode.ACME, label="Certificates")
    address = forms.CharField(max_length=253, label="Backend address", help_text="Host name or IP address of your origin")
    port = forms.IntegerField(initial=80, min_value=1, max_value=65535, label="Backend port")
    scheme = forms.ChoiceField(choices=[("http", "http"), ("https", "https")], label="Backend scheme")

    def hostname_list(self) -> list[str]:
        raw = self.cleaned_data["hostnames"].replace(",", "\n")
        return [h.strip() for h in raw.splitlines() if h.strip()]


# Site settings, one form per section of the site page.
SITE_SECTIONS: dict[str, tuple[str, list[str]]] = {
    "balancing": ("Load balancing", ["balancing", "sticky_cookie", "max_body_bytes"]),
    "health": ("Health checks", ["hc_enabled", "hc_path", "hc_interval", "hc_timeout", "hc_expected_status", "hc_rise", "hc_fall"]),
    "tls": ("TLS", ["tls_mode", "tls_min_version", "force_https", "hsts_max_age", "hsts_include_subdomains", "hsts_preload",
                    "require_backend_tls"]),
}
SITE_SECTION_FORMS = {key: _form(f"{key.title()}Form", Site, fields) for key, (_, fields) in SITE_SECTIONS.items()}

HostnameForm = type("HostnameForm", (forms.Form,), {"name": forms.CharField(max_length=253, label="Hostname")})
BackendForm = _form("BackendForm", Backend, ["pool", "address", "port", "scheme", "weight", "tls_verify", "sni"])


class BackendWeightForm(forms.Form):
    weight = forms.IntegerField(min_value=0)


class BackendStateForm(forms.Form):
    state = forms.ChoiceField(choices=Backend.State.choices)


class RouteForm(forms.Form):
    path_prefix = forms.CharField(max_length=200, initial="/")
    pool = forms.CharField(max_length=50, initial="default")
    strip_prefix = forms.BooleanField(required=False)
    rewrite_prefix = forms.CharField(max_length=200, required=False, label="Replace prefix with",
                                     help_text="e.g. /internal/v2/; empty: keep the path")
    kind = forms.ChoiceField(choices=Route.Kind.choices, initial=Route.Kind.PROXY, required=False)
    aggregate = forms.CharField(
        required=False, label="Aggregate parts",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text='JSON, for kind aggregate: [{"key": "user", "path": "/users/me", "timeout": 2, "pool": "users"}]',
    )

    def clean_kind(self):
        return self.cleaned_data["kind"] or Route.Kind.PROXY

    def clean_aggregate(self):
        text = self.cleaned_data["aggregate"].strip()
        if not text:
            return []
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None


# What a new policy of each kind starts from: a working example people edit.
POLICY_EXAMPLES = {
    Policy.Kind.CACHE: {"default_ttl": 60, "max_ttl": 86400, "bypass_paths": ["/admin"]},
    Policy.Kind.COMPRESSION: {"encodings": ["zstd", "br", "gzip"], "min_bytes": 1024},
    Policy.Kind.RATE_LIMIT: {"requests": 10, "per_seconds": 1, "burst": 20, "key": "ip", "path_prefix": "/"},
    Policy.Kind.IP_RULES: {"allow": [], "deny": ["203.0.113.0/24"]},
    Policy.Kind.WAF: {"rules": [{"id": "no-env", "conditions": [{"field": "path", "op": "contains", "value": ".env"}]}]},
    Policy.Kind.HEADERS: [{"direction": "response", "op": "set", "name": "X-Frame-Options", "value": "DENY"}],
    Policy.Kind.BASIC_AUTH: {"users": {"admin": "change me"}, "realm": "Restricted", "path_prefix": "/"},
}


class PolicyForm(forms.Form):
    kind = forms.ChoiceField(choices=Policy.Kind.choices)
    name = forms.CharField(max_length=100)
    enabled = forms.BooleanField(required=False, initial=True)
    settings = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="JSON. Basic-auth passwords are stored hashed.",
    )

    def clean_settings(self):
        try:
            return json.loads(self.cleaned_data["settings"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None


class PolicyEditForm(PolicyForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["kind"]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    scope = forms.ChoiceField(choices=TokenScope.choices)
    expires_on = forms.DateField(
        required=False, label="Expires on", widget=forms.DateInput(attrs={"type": "date"}), help_text="Empty: never expires"
    )

    def expires_at(self) -> dt.datetime | None:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return dt.datetime.combine(day, dt.time.max.replace(microsecond=0), tzinfo=timezone.get_current_timezone())


class InvitationForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class CertificateUploadForm(forms.Form):
    chain_pem = forms.CharField(
        label="Certificate chain (PEM)", widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
        help_text="The certificate first, then its intermediates.",
    )
    key_pem = forms.CharField(label="Private key (PEM)", widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}))


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False)
    action = forms.CharField(
        required=False, widget=forms.TextInput(attrs={"list": "audit-actions"}), help_text="e.g. site. for all site events"
    )
    target = forms.CharField(required=False)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))


def _bounded(field: forms.Field, name: str, step: str) -> forms.Field:
    """The browser's hint of the bounds; the service checks them and explains."""
    low, high = ALERT_BOUNDS[name]
    field.widget.attrs.update({"min": plain_number(low), "max": plain_number(high), "step": step, "class": "short"})
    return field


class AlertSettingsForm(forms.Form):
    SECRET_HELP = "Signs each delivery (X-Portico-Signature). Leave empty to keep the current one."

    enabled = forms.BooleanField(required=False, label="Send alerts")
    emails = forms.CharField(
        required=False, label="Email recipients", widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="One address per line. Empty: the organization's owners and admins.",
    )
    webhook_url = forms.CharField(required=False, max_length=200, label="Webhook URL",
                                  help_text="Receives a signed JSON POST for each alert opened and resolved.")
    webhook_secret = forms.CharField(
        required=False, max_length=100, label="New webhook secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=SECRET_HELP,
    )
    clear_webhook_secret = forms.BooleanField(required=False, label="Remove the webhook secret")
    error_rate_percent = _bounded(forms.FloatField(label="Error rate (% of requests with 5xx)"), "error_rate_percent", "0.1")
    min_requests = _bounded(forms.IntegerField(label="Minimum requests in 5 minutes"), "min_requests", "1")
    traffic_spike_factor = _bounded(forms.FloatField(label="Traffic spike (× the usual rate)"), "traffic_spike_factor", "0.1")
    cert_expiry_days = _bounded(forms.IntegerField(label="Certificate expiry warning (days)"), "cert_expiry_days", "1")

    def clean(self):
        data = super().clean()
        if data.get("clear_webhook_secret") and data.get("webhook_secret"):
            self.add_error("clear_webhook_secret", "Either type a new secret or remove it, not both.")
        return data

    def changes(self) -> dict:
        """What the service is asked to change: the secret only when typed or removed."""
        data = dict(self.cleaned_data)
        clear = data.pop("clear_webhook_secret")
        if clear:
            data["webhook_secret"] = ""
        elif not data["webhook_secret"]:
            data.pop("webhook_secret")
        return data
