from __future__ import annotations

from django.db import models
from django.utils import timezone


class ConfigVersion(models.Model):
    """One compiled, signed snapshot. ``number`` only ever grows; workers ignore older ones."""

    number = models.PositiveBigIntegerField(unique=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)  # of the body without version and time
    envelope = models.TextField()  # the signed envelope as sent, for late joiners and diffs
    changes = models.JSONField(default=dict, blank=True)  # summary of what changed since N-1
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"v{self.number}"


class Worker(models.Model):
    """A proxy worker node, as it registered itself through the broker."""

    name = models.CharField(max_length=100, unique=True)
    pool = models.CharField(max_length=50, default="default")
    address = models.CharField(max_length=200, blank=True)
    capacity = models.PositiveIntegerField(default=1)
    version = models.PositiveBigIntegerField(default=0)  # last applied
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # Cache purges sent up to this time have reached it (sent to it, or caught up since).
    purges_seen_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Rollout(models.Model):
    """What one worker did with one version: applied, or rejected and why."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        REJECTED = "rejected", "Rejected"

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="rollouts")
    version = models.PositiveBigIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-version"]
        constraints = [models.UniqueConstraint(fields=["worker", "version"], name="one_outcome_per_worker_version")]


class PublishState(models.Model):
    """One row. ``requested`` counts committed changes; ``published`` is the last request a
    publish covered. A publish task that finds ``published >= requested`` has nothing to do, so a
    burst of changes costs one compile, not one per change."""

    requested = models.PositiveBigIntegerField(default=0)
    published = models.PositiveBigIntegerField(default=0)

    @classmethod
    def get(cls) -> PublishState:
        return cls.objects.get_or_create(pk=1)[0]
