from __future__ import annotations

from django.db import models
from django.utils import timezone
from tenancy.models import ApiToken, Organization, OrgScopedQuerySet, User

from .chain import sealed_hash


class AuditEvent(models.Model):
    """One change, by a person, a token or the system, in one organization's hash chain.

    ``hash = HMAC-SHA256(audit key, prev_hash + canonical JSON of the event)``, and ``seq`` counts
    up from 1 per organization without gaps: editing, deleting or reordering a row breaks the chain,
    which ``manage.py audit_verify`` reports. The key (``settings.AUDIT_KEYS``, named by ``key_id``)
    lives with the application, not in the database: a database user cannot re-seal a rewritten
    chain.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="audit_events")
    seq = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=10)  # user | token | system
    actor_user = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_token = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # Copied, and the only actor fields in the hash: they survive the user or token being deleted.
    actor_ref = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=300)
    action = models.CharField(max_length=80, db_index=True)  # e.g. site.create
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    changes = models.JSONField(default=dict, blank=True)  # {"field": [before, after]}, secrets redacted
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16, blank=True)  # which audit key sealed it ("": none, legacy)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        constraints = [models.UniqueConstraint(fields=["organization", "seq"], name="audit_seq_unique")]
        indexes = [models.Index(fields=["organization", "target_type", "target_id"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_name}"

    def compute_hash(self, key: bytes) -> str:
        return sealed_hash(self, key)

