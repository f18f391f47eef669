from __future__ import annotations

from django.db import models
from django.utils import timezone
from edge.models import Site
from tenancy.models import OrgOwned


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Finding(OrgOwned):
    """One thing the security check-up found, kept while it holds.

    ``(organization, rule, subject)`` identifies it across runs: a run that no longer finds it
    resolves it, a later run that finds it again reopens it. An acknowledged finding stays listed
    but no longer alerts.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="findings")
    rule = models.CharField(max_length=60)  # which check found it, e.g. "hsts-missing"
    subject = models.CharField(max_length=200)  # what it is about: a hostname, a backend, a token...
    severity = models.CharField(max_length=10, choices=Severity.choices)
    title = models.CharField(max_length=200)
    explanation = models.TextField()
    fix = models.TextField()
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["resolved_at", "-last_seen"]
        constraints = [models.UniqueConstraint(fields=["organization", "rule", "subject"], name="one_finding_per_subject")]

    def __str__(self) -> str:
        return f"{self.get_severity_display()}: {self.title}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
