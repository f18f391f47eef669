from __future__ import annotations

import hashlib
import secrets
import uuid

from audit.chain import current_anchor
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """A person. Signs in with an email address; belongs to organizations through memberships."""

    username = None
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    def __str__(self) -> str:
        return self.email


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"


# Higher rank includes everything a lower rank may do.
ROLE_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3, Role.OWNER: 4}


class Organization(models.Model):
    """A tenant. Everything a customer owns hangs off one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # End-to-end encryption for every site of the organization: no backend over plain HTTP.
    require_backend_tls = models.BooleanField("require TLS to backends", default=False)
    # Head and base of the audit hash chain: deleting the newest events, or pruning without the
    # retention job, is detectable because these no longer match the rows; each carries an HMAC
    # under the audit key, so they cannot be moved back over deleted events without it.
    audit_head_seq = models.BigIntegerField(default=0)
    audit_head_hash = models.CharField(max_length=64, default="")
    audit_head_mac = models.CharField(max_length=64, default="", blank=True)
    audit_base_seq = models.BigIntegerField(default=0)
    audit_base_hash = models.CharField(max_length=64, default="")
    audit_base_mac = models.CharField(max_length=64, default="", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if self._state.adding and not self.audit_head_mac:
            # The empty chain is sealed too: a log wiped back to it must not verify.
            self.audit_head_mac = current_anchor(self.pk, "head", self.audit_head_seq, self.audit_head_hash)
            self.audit_base_mac = current_anchor(self.pk, "base", self.audit_base_seq, self.audit_base_hash)
        super().save(*args, **kwargs)


class OrgScopedQuerySet(models.QuerySet):
    """The one place tenant scoping happens: every tenant-owned model's manager is built from it."""

    def for_org(self, org: Organization) -> OrgScopedQuerySet:
        return self.filter(organization=org)


class OrgOwned(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        abstract = True


class Membership(OrgOwned):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_user")]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} as {self.role}"


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Invitation(OrgOwned):
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class TokenScope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Read and write"


# What a token may do, expressed as the role it acts with. Tokens never manage members or tokens.
TOKEN_ROLE = {TokenScope.READ: Role.VIEWER, TokenScope.WRITE: Role.EDITOR}

TOKEN_PREFIX = "pt_"


class ApiToken(OrgOwned):
    """An organization-scoped API credential: ``pt_<lookup>_<secret>``, shown once, stored hashed.

    The lookup part is stored in clear to find the row with an index; only the SHA-256 of the
    whole token is stored, so a database leak reveals no usable token.
    """

    name = models.CharField(max_length=100)
    lookup = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=5, choices=TokenScope.choices, default=TokenScope.READ)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({TOKEN_PREFIX}{self.lookup}_…)"

    @staticmethod
    def generate() -> tuple[str, str, str]:
        """Return (token, lookup, hash). The token is shown once and never stored."""
        lookup = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{lookup}_{secrets.token_urlsafe(32)}"
        return token, lookup, _hash_secret(token)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def matches(self, token: str) -> bool:
        return secrets.compare_digest(self.token_hash, _hash_secret(token))
