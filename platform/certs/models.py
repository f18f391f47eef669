"""Certificates, the ACME accounts and orders that produce them, and the internal CA.

Every private key (certificates, ACME accounts, the internal CA) is stored encrypted with
``certs.crypto`` under PORTICO_DATA_KEYS; the ``*_encrypted`` fields never hold plaintext.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone
from tenancy.models import Organization, OrgOwned

from . import crypto


class Certificate(OrgOwned):
    """One certificate for one or more hostnames, and the state of getting it.

    ACME issuance is a state machine a person can follow::

        pending ──► validating ──► issued ──► replaced (by its renewal) | revoked
           ▲            │
           └── failed ◄─┘   (with a reason; retried at ``next_attempt_at`` when that is set)
    """

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
        REPLACED = "replaced", "Replaced"

    IN_FLIGHT = (Status.PENDING, Status.VALIDATING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostnames = models.JSONField(default=list)  # the sites' hostnames this certificate is served for
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    chain_pem = models.TextField(blank=True)  # leaf first
    key_encrypted = models.TextField(blank=True)  # Fernet under PORTICO_DATA_KEYS; never plaintext
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # What the certificate says (filled when issued or uploaded)
    names = models.JSONField(default=list, blank=True)  # DNS names in the certificate (may hold wildcards)
    serial = models.CharField(max_length=64, blank=True)  # hex, no 0x
    issuer = models.CharField(max_length=300, blank=True)
    fingerprint_sha256 = models.CharField(max_length=64, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    renew_after = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expiry_warned_days = models.PositiveIntegerField(null=True, blank=True)  # smallest threshold warned about
    replaces = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="renewals")

    # ACME order state
    account = models.ForeignKey("AcmeAccount", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    directory_url = models.CharField(max_length=500, blank=True)
    order_url = models.CharField(max_length=500, blank=True)
    csr_pem = models.TextField(blank=True)
    progress = models.CharField(max_length=300, blank=True)  # what is happening now, for people
    challenge_version = models.PositiveBigIntegerField(null=True, blank=True)  # config version carrying the tokens
    challenges_published_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # set on a failure that will be retried
    locked_until = models.DateTimeField(null=True, blank=True)  # an issuance task is working on it

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "renew_after"]), models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return ", ".join(self.hostnames) or str(self.id)

    def set_private_key(self, key_pem: str) -> None:
        self.key_encrypted = crypto.encrypt(key_pem)

    def private_key(self) -> str:
        return crypto.decrypt(self.key_encrypted)

    @property
    def in_flight(self) -> bool:
        return self.status in self.IN_FLIGHT


class InFlightName(models.Model):
    """A hostname with an ACME order under way. The unique name is what guarantees, across
    processes and without races, that one name never has two orders at once."""

    name = models.CharField(max_length=253, unique=True)
    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="claims")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class PendingChallenge(models.Model):
    """An HTTP-01 token the fleet must answer while its certificate's order is validated.

    The key authorization is not a secret: anyone fetching the token URL sees it.
    """

    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="challenges")
    hostname = models.CharField(max_length=253)
    token = models.CharField(max_length=200)
    key_authorization = models.CharField(max_length=400)
    challenge_url = models.CharField(max_length=500)
    authorization_url = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hostname", "token"]

    def __str__(self) -> str:
        return f"{self.hostname}/.well-known/acme-challenge/{self.token}"


class AcmeAccount(models.Model):
    """An account at one ACME directory: the platform's (``organization`` empty) or one
    organization's. The account key is stored encrypted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    directory_url = models.CharField(max_length=500)
    email = models.CharField(max_length=254, blank=True)
    key_encrypted = models.TextField()
    uri = models.CharField(max_length=500, blank=True)  # the account's URL at the CA once registered
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["directory_url", "organization"], name="one_acme_account_per_org_and_ca"),
            models.UniqueConstraint(
                fields=["directory_url"], condition=Q(organization__isnull=True), name="one_platform_acme_account_per_ca"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.directory_url} ({self.organization or 'platform'})"

    def private_key(self) -> str:
        return crypto.decrypt(self.key_encrypted)


class InternalCA(models.Model):
    """The platform's own CA (one row), like Caddy's local CA: a long-lived root a developer
    trusts once, and an intermediate that signs the leaf certificates."""

    root_pem = models.TextField()
    root_key_encrypted = models.TextField()
    intermediate_pem = models.TextField()
    intermediate_key_encrypted = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "Portico internal CA"
