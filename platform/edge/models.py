"""What the proxy serves: sites, their hostnames, routes, backends and policies."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from tenancy.models import OrgOwned

from proxyworker import snapshot


class Site(OrgOwned):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    class TlsMode(models.TextChoices):
        OFF = "off", "Plain HTTP only"
        ACME = "acme", "Automatic (ACME)"
        INTERNAL = "internal", "Internal CA"
        CUSTOM = "custom", "Uploaded certificate"

    class Balancing(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round robin"
        WEIGHTED_ROUND_ROBIN = "weighted_round_robin", "Weighted round robin"
        LEAST_CONNECTIONS = "least_connections", "Least connections"
        WEIGHTED_LEAST_CONNECTIONS = "weighted_least_connections", "Weighted least connections"
        WEIGHTED_RESPONSE_TIME = "weighted_response_time", "Weighted response time"
        RESOURCE_BASED = "resource_based", "Resource based"
        IP_HASH = "ip_hash", "IP hash"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    tls_mode = models.CharField(max_length=10, choices=TlsMode.choices, default=TlsMode.ACME)
    tls_min_version = models.CharField(max_length=3, choices=[("1.2", "TLS 1.2"), ("1.3", "TLS 1.3")], default="1.2")
    force_https = models.BooleanField(default=False)
    hsts_max_age = models.PositiveIntegerField(default=0, help_text="0 turns HSTS off")
    hsts_include_subdomains = models.BooleanField(default=False)
    hsts_preload = models.BooleanField(default=False)
    balancing = models.CharField(max_length=30, choices=Balancing.choices, default=Balancing.ROUND_ROBIN)
    sticky_cookie = models.CharField(max_length=64, blank=True, help_text="cookie name; empty turns stickiness off")
    hc_enabled = models.BooleanField("health checks", default=True)
    hc_path = models.CharField("health-check path", max_length=200, default="/")
    hc_interval = models.FloatField("health-check interval (s)", default=5.0)
    hc_timeout = models.FloatField("health-check timeout (s)", default=2.0)
    hc_expected_status = models.CharField("expected status", max_length=100, blank=True, help_text="e.g. 200,204; empty: 200-399")
    hc_rise = models.PositiveSmallIntegerField(default=2)
    hc_fall = models.PositiveSmallIntegerField(default=3)
    max_body_bytes = models.PositiveBigIntegerField(default=100 * 1024 * 1024, help_text="0: unlimited")
    require_backend_tls = models.BooleanField(
        "require TLS to backends", default=False, help_text="Refuse backends reached over plain HTTP (end-to-end encryption)."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Hostname(OrgOwned):
    """A name a site answers to. Globally unique across tenants: it routes traffic."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="hostnames")
    name = models.CharField(max_length=253, unique=True)  # normalized: lower-case, IDNA, optional *.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_wildcard(self) -> bool:
        return self.name.startswith("*.")


class Route(OrgOwned):
    """Requests whose path starts with ``path_prefix`` go to the backends of ``pool``."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="routes")
    path_prefix = models.CharField(max_length=200, default="/")
    class Kind(models.TextChoices):
        PROXY = "proxy", "Proxy to the pool"
        AGGREGATE = "aggregate", "Aggregate several backend paths into one JSON answer"

    pool = models.CharField(max_length=50, default="default")
    strip_prefix = models.BooleanField(default=False)
    rewrite_prefix = models.CharField(
        max_length=200, blank=True, help_text="Replace the matched prefix with this upstream; empty: keep it."
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PROXY)
    # aggregate routes: [{"key": "user", "path": "/users/me", "timeout": 2.0, "pool": "users"}, ...]
    aggregate = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-path_prefix"]
        constraints = [models.UniqueConstraint(fields=["site", "path_prefix"], name="route_prefix_unique")]

    def __str__(self) -> str:
        return f"{self.path_prefix} → {self.pool}"


class Backend(OrgOwned):
    """An origin server. Its address is never shown to the site's visitors."""

    class State(models.TextChoices):
        ENABLED = "enabled", "Enabled"
        DRAINING = "draining", "Draining"
        DISABLED = "disabled", "Disabled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="backends")
    pool = models.CharField(max_length=50, default="default")
    address = models.CharField(max_length=253)
    port = models.PositiveIntegerField(default=80)
    scheme = models.CharField(max_length=5, choices=[("http", "http"), ("https", "https")], default="http")
    weight = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ENABLED)
    tls_verify = models.BooleanField("verify upstream certificate", default=True)
    ca_pem = models.TextField("CA certificate (PEM)", blank=True)
    sni = models.CharField(max_length=253, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pool", "created_at"]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}"


class Policy(OrgOwned):
    """Typed, validated settings for one edge feature; on a site, or an organization default
    (``site`` empty) that applies to every site without a policy of the same kind."""

    class Kind(models.TextChoices):
        CACHE = "cache", "Caching"
        COMPRESSION = "compression", "Compression"
        RATE_LIMIT = "rate_limit", "Rate limit"
        IP_RULES = "ip_rules", "IP allow/deny"
        WAF = "waf", "WAF rules"
        HEADERS = "headers", "Header rules"
        BASIC_AUTH = "basic_auth", "Basic auth"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="policies")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    settings = models.JSONField(default=dict)  # validated against snapshot's schema for the kind
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.name}"


class PlatformPolicy(models.Model):
    """A rule platform staff set for every tenant's site, applied on top of the tenant's own
    policies by the compiler. Tenants see these rules but cannot change them. One row per kind;
    ``settings`` are validated by ``edge.platform_policies``."""

    class Kind(models.TextChoices):
        IP_BLOCKLIST = "ip_blocklist", "IP blocklist"
        MIN_TLS = "min_tls", "Minimum TLS version"
        MANAGED_WAF = "managed_waf", "Managed WAF rules always on"

    kind = models.CharField(max_length=20, choices=Kind.choices, unique=True)
    settings = models.JSONField(default=dict)
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=300, blank=True, help_text="Why the rule exists; tenants read it.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["kind"]
        verbose_name = "platform policy"
        verbose_name_plural = "platform policies"

    def __str__(self) -> str:
        return self.get_kind_display()


# The snapshot type each policy kind's settings must decode to. Header rules are a list.
POLICY_SCHEMA = {
    Policy.Kind.CACHE: snapshot.CachePolicy,
    Policy.Kind.COMPRESSION: snapshot.CompressionPolicy,
    Policy.Kind.RATE_LIMIT: snapshot.RateLimit,
    Policy.Kind.IP_RULES: snapshot.IpRules,
    Policy.Kind.WAF: snapshot.WafPolicy,
    Policy.Kind.HEADERS: list[snapshot.HeaderRule],
    Policy.Kind.BASIC_AUTH: snapshot.BasicAuth,
}


class Purge(OrgOwned):
    """A request to drop cached responses on every worker: one URL, a URL prefix, a cache tag, or
    everything of a site (or of the whole organization when ``site`` is empty)."""

    class Kind(models.TextChoices):
        URL = "url", "One URL"
        PREFIX = "prefix", "URL prefix"
        TAG = "tag", "Cache tag"
        ALL = "all", "Everything"

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        SENT = "sent", "Sent to the workers"
        DONE = "done", "Confirmed by every worker"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="purges")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    value = models.CharField(max_length=2000, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    created_by = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    workers_sent = models.PositiveIntegerField(default=0)
    # names of the workers it was sent to: a worker that was away gets it when it comes back
    sent_to = models.JSONField(default=list, blank=True)
    # {worker name: ISO time of its confirmation}
    confirmations = models.JSONField(default=dict, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"purge {self.kind} {self.value}".strip()
