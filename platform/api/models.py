from __future__ import annotations

from django.db import models
from django.utils import timezone


class IdempotencyKey(models.Model):
    """The answer to a POST sent with an ``Idempotency-Key`` header, kept for a day so that a
    client retrying the same request (same key, same body) gets the same answer instead of a
    second site, token or purge."""

    actor_ref = models.CharField(max_length=64)  # token:<id> or user:<id>, as in the audit log
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # of method, path and body
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True)  # secrets shown once (new tokens) are removed
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["actor_ref", "key"], name="one_idempotency_key_per_actor")]

    def __str__(self) -> str:
        return f"{self.actor_ref} {self.key}"
