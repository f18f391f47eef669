"""Which certificate serves each hostname, as the dashboard shows it."""

from __future__ import annotations

from certs.models import Certificate
from tenancy.models import Organization


def certificates_by_hostname(org: Organization) -> dict[str, Certificate]:
    """hostname → its newest certificate that is not replaced (issued, in flight, failed or revoked)."""
    out: dict[str, Certificate] = {}
    for cert in Certificate.objects.for_org(org).exclude(status=Certificate.Status.REPLACED).order_by("created_at"):
        for name in cert.hostnames:
            out[name] = cert  # newer rows overwrite older ones
    return out


# The steps of an ACME issuance as people follow them, with the test that a step is done.
ISSUANCE_STEPS = [
    ("order", "Order placed with the certificate authority", lambda c: bool(c.order_url) or c.status != Certificate.Status.PENDING),
    ("publish", "Challenge tokens sent to the proxy workers", lambda c: c.challenges_published_at is not None),
    ("validate", "Certificate authority validating the hostnames", lambda c: c.answered_at is not None),
    ("issued", "Certificate issued and sent to the workers", lambda c: c.status == Certificate.Status.ISSUED),
]


def issuance_steps(cert: Certificate) -> list[dict]:
    steps, current_found = [], False
    for key, label, done in ISSUANCE_STEPS:
        finished = bool(done(cert))
        current = not finished and not current_found and cert.in_flight
        current_found = current_found or current
        steps.append({"key": key, "label": label, "done": finished, "current": current})
    return steps
