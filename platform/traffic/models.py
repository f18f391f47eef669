"""What the workers tell us about traffic, stored for charts, the inspector and alerts.

- ``TrafficMinute``: one worker process's cumulative counts for one site and minute. The newest
  report (highest ``seq``) replaces the older one, so re-sent or late messages never double-count.
  Charts sum the rows of a minute over workers and processes.
- ``TrafficHour``: the same counts per site and hour, downsampled from the minutes; minutes are
  kept ``PORTICO_TRAFFIC_MINUTE_HOURS`` (48 h), hours ``PORTICO_TRAFFIC_RETENTION_DAYS`` (30 d).
- ``BackendHealth``: per worker, whether its processes see a backend up.
- ``RequestSample``: the inspector's requests (a sample of ordinary ones, every blocked or failed one).
- ``Alert`` / ``AlertSettings``: incidents (one row per incident, resolved when it ends) and where
  an organization wants them sent.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from tenancy.models import OrgOwned


class Counts(models.Model):
    """The counters a minute and an hour share."""

    requests = models.PositiveBigIntegerField(default=0)
    s1xx = models.PositiveBigIntegerField(default=0)
    s2xx = models.PositiveBigIntegerField(default=0)
    s3xx = models.PositiveBigIntegerField(default=0)
    s4xx = models.PositiveBigIntegerField(default=0)
    s5xx = models.PositiveBigIntegerField(default=0)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    cache_hit = models.PositiveBigIntegerField(default=0)
    cache_miss = models.PositiveBigIntegerField(default=0)
    cache_stale = models.PositiveBigIntegerField(default=0)
    cache_bypass = models.PositiveBigIntegerField(default=0)
    cache_revalidated = models.PositiveBigIntegerField(default=0)
    blocked = models.PositiveBigIntegerField(default=0)
    blocked_by = models.JSONField(default=list)  # [[reason, rule, count], ...]
    latency = models.JSONField(default=list)  # histogram counts over proxyworker.traffic.LATENCY_BOUNDS_MS
    latency_sum_ms = models.FloatField(default=0.0)
    backends = models.JSONField(default=dict)  # backend id -> [requests, errors]

    class Meta:
        abstract = True


class TrafficMinute(OrgOwned, Counts):
    site = models.ForeignKey("edge.Site", on_delete=models.CASCADE, related_name="+")
    minute = models.DateTimeField()
    worker = models.CharField(max_length=100)
    process = models.CharField(max_length=40)
    seq = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "minute", "worker", "process"],
                                               name="one_row_per_site_minute_process")]
        indexes = [models.Index(fields=["minute"])]


class TrafficHour(OrgOwned, Counts):
    site = models.ForeignKey("edge.Site", on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "hour"], name="one_row_per_site_hour")]


class BackendHealth(OrgOwned):
    site = models.ForeignKey("edge.Site", on_delete=models.CASCADE, related_name="+")
    backend_id = models.UUIDField()
    worker = models.ForeignKey("fleet.Worker", on_delete=models.CASCADE, related_name="+")
    up = models.BooleanField()
    processes = models.PositiveIntegerField(default=1)
    processes_up = models.PositiveIntegerField(default=1)
    since = models.DateTimeField(default=timezone.now)  # when ``up`` last changed
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["worker", "backend_id"], name="one_health_per_worker_backend")]
        indexes = [models.Index(fields=["site"])]


class RequestSample(OrgOwned):
    class Kind(models.TextChoices):
        SAMPLE = "sample", "Sampled"
        BLOCKED = "blocked", "Blocked"
        FAILED = "failed", "Failed"

    site = models.ForeignKey("edge.Site", on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    worker = models.CharField(max_length=100)
    request_id = models.CharField(max_length=128, blank=True)
    client_ip = models.CharField(max_length=64, blank=True)
    method = models.CharField(max_length=16)
    host = models.CharField(max_length=255, blank=True)
    path = models.TextField()  # secrets in the query are masked by the worker
    status = models.PositiveSmallIntegerField()
    request_headers = models.JSONField(default=list)  # [[name, value]], secrets masked
    response_headers = models.JSONField(default=list)
    blocked_reason = models.CharField(max_length=30, blank=True)
    blocked_rule = models.CharField(max_length=200, blank=True)
    backend_id = models.CharField(max_length=64, blank=True)
    cache = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    timing = models.JSONField(default=dict)  # ms: receive, connect, upstream_wait, send, total

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["site", "-at"])]


class Alert(OrgOwned):
    class Kind(models.TextChoices):
        BACKEND_DOWN = "backend_down", "Backend down"
        ERROR_RATE = "error_rate", "Error-rate spike"
        TRAFFIC_SPIKE = "traffic_spike", "Traffic spike"
        CERT_EXPIRING = "cert_expiring", "Certificate expiring"
        WORKER_OFFLINE = "worker_offline", "Worker offline"
        SECURITY_FINDING = "security_finding", "Critical security finding"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    subject = models.CharField(max_length=200)  # what it is about: a backend id, a worker name...
    site = models.ForeignKey("edge.Site", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    summary = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified = models.JSONField(default=list, blank=True)  # deliveries: [{"channel", "at", "ok", "error"}]

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # One open incident per thing: a backend that stays down is one alert, not one per report.
            models.UniqueConstraint(fields=["organization", "kind", "subject"], condition=Q(resolved_at__isnull=True),
                                    name="one_open_alert_per_subject"),
        ]

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class AlertSettings(OrgOwned):
    organization = models.OneToOneField("tenancy.Organization", on_delete=models.CASCADE, related_name="alert_settings")
    enabled = models.BooleanField(default=True)
    emails = models.JSONField(default=list, blank=True)  # addresses; empty: the organization's owners
    webhook_url = models.URLField(blank=True)
    webhook_secret = models.CharField(max_length=100, blank=True)  # HMAC-SHA256 key of X-Portico-Signature
    error_rate_percent = models.FloatField(default=10.0)  # 5xx share over the last 5 minutes
    min_requests = models.PositiveIntegerField(default=50)  # below this many in 5 minutes: no rate alerts
    traffic_spike_factor = models.FloatField(default=5.0)  # times the site's own hourly baseline
    cert_expiry_days = models.PositiveIntegerField(default=14)

    def __str__(self) -> str:
        return f"alert settings of {self.organization}"
