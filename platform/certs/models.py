from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from tenancy.models import OrgOwned

from . import crypto


class Certificate(OrgOwned):
    class Source(models.TextChoices):
        ACME = "acme", "ACME"
        INTERNAL = "internal", "Internal CA"
        UPLOADED = "uploaded", "Uploaded"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        VALIDATING = "validating", "Validating"
        ISSUED = "issued", "Issued"
        FAILED = "failed", "Failed"
        REVOKED = "revoked", "Revoked"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostnames = models.JSONField(default=list)
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    chain_pem = models.TextField(blank=True)  # leaf first
    key_encrypted = models.TextField(blank=True)  # Fernet under PORTICO_DATA_KEYS; never plaintext
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return ", ".join(self.hostnames) or str(self.id)

    def set_private_key(self, key_pem: str) -> None:
        self.key_encrypted = crypto.encrypt(key_pem)

    def private_key(self) -> str:
        return crypto.decrypt(self.key_encrypted)
