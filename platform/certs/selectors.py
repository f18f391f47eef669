"""Reads about certificates for the fleet, the dashboard and the API. Nothing here returns a
private key: ``certificate_view`` is the shape to show people."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from tenancy.models import Organization

from proxyworker import snapshot

from . import acme_client, internal_ca
from .models import Certificate, PendingChallenge

# Fields safe to show people and API clients (never key_encrypted, csr, order internals).
PUBLIC_FIELDS = (
    "id",
    "hostnames",
    "names",
    "source",
    "status",
    "progress",
    "failure_reason",
    "next_attempt_at",
    "issuer",
    "serial",
    "fingerprint_sha256",
    "not_before",
    "not_after",
    "issued_at",
    "renew_after",
    "revoked_at",
    "created_at",
    "updated_at",
)


def pending_challenges() -> list[snapshot.AcmeChallenge]:
    """HTTP-01 tokens every worker must answer: those of orders being validated."""
    rows = PendingChallenge.objects.filter(certificate__status__in=Certificate.IN_FLIGHT).order_by("hostname", "token")
    return [snapshot.AcmeChallenge(hostname=c.hostname, token=c.token, key_authorization=c.key_authorization) for c in rows]


def internal_ca_root_pem() -> str:
    """The internal CA's root certificate (PEM), for developers to trust; created on first use."""
    return internal_ca.root_pem()


def certificates_for(org: Organization):
    return Certificate.objects.for_org(org).select_related("replaces")


def certificate_view(cert: Certificate) -> dict:
    out = {field: getattr(cert, field) for field in PUBLIC_FIELDS}
    out["id"] = str(cert.id)
    out["days_left"] = (cert.not_after - timezone.now()).days if cert.not_after else None
    out["renews"] = str(cert.replaces_id) if cert.replaces_id else None
    return out


def expiring(org: Organization, *, within: dt.timedelta = dt.timedelta(days=14)):
    """Served certificates of ``org`` that expire within ``within`` (expired ones included)."""
    return Certificate.objects.for_org(org).filter(status=Certificate.Status.ISSUED, not_after__lte=timezone.now() + within).order_by(
        "not_after"
    )


def hostname_tls(org: Organization) -> dict[str, dict]:
    """Per hostname of the organization's sites: which certificate serves it, or what is under
    way or wrong — what the dashboard shows next to each hostname."""
    from edge.models import Hostname, Site

    now = timezone.now()
    certs = list(Certificate.objects.for_org(org).exclude(status=Certificate.Status.REPLACED).order_by("-created_at"))
    out: dict[str, dict] = {}
    for host in Hostname.objects.filter(organization=org).select_related("site").order_by("name"):
        mine = [c for c in certs if host.name in c.hostnames]
        served = next((c for c in mine if c.status == Certificate.Status.ISSUED and c.not_after and c.not_after > now), None)
        latest = mine[0] if mine else None
        entry: dict = {"site": host.site.name, "tls_mode": host.site.tls_mode, "certificate": str(served.id) if served else None}
        if served is not None:
            entry.update(state="served", not_after=served.not_after, issuer=served.issuer)
        elif host.site.tls_mode == Site.TlsMode.OFF:
            entry.update(state="off")
        elif latest is not None and latest.status in (*Certificate.IN_FLIGHT, Certificate.Status.FAILED):
            entry.update(state=latest.status, detail=latest.failure_reason or latest.progress, next_attempt_at=latest.next_attempt_at)
        elif host.name.startswith("*.") and host.site.tls_mode == Site.TlsMode.ACME and not internal_ca.is_internal_name(host.name):
            entry.update(state="needs_upload", detail="Wildcard names need DNS-01 validation; upload a certificate for this name.")
        elif host.site.tls_mode == Site.TlsMode.ACME and not internal_ca.is_internal_name(host.name) and not acme_client.directory_url():
            entry.update(state="missing", detail=acme_client.NOT_CONFIGURED)
        else:
            entry.update(state="missing", detail="No certificate yet.")
        renewing = latest is not None and latest is not served and latest.status in (*Certificate.IN_FLIGHT, Certificate.Status.FAILED)
        if served is not None and renewing:
            entry["renewal"] = {"state": latest.status, "detail": latest.failure_reason or latest.progress}
        out[host.name] = entry
    return out
