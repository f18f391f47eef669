"""An organization's alert settings: where alerts go and when they open.

Reading never writes: an organization that never saved its settings gets the defaults, unsaved
(``current``), so looking at a page or GETting the API changes nothing. ``alert_settings_update``
validates every field (errors name the field), saves, and writes one audit event in the same
transaction; the webhook secret is write-only: it is never returned, and the audit event records
only that it changed (``audit.redact`` hides any field named like a secret).

Who may change them: owners and admins, and read-write API tokens, which only admins can mint
(``tenancy.services.token_create``): automation the admins set up may keep the webhook current.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from audit.services import record
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction
from tenancy.access import Actor, require
from tenancy.models import Organization, Role

from .models import AlertSettings

EDITABLE = ("enabled", "emails", "webhook_url", "webhook_secret", "error_rate_percent", "min_requests",
            "traffic_spike_factor", "cert_expiry_days")
# Inclusive bounds: a threshold outside them either alerts on every request or never.
BOUNDS: dict[str, tuple[float, float]] = {
    "error_rate_percent": (0.1, 100.0),
    "min_requests": (1, 1_000_000),
    "traffic_spike_factor": (1.5, 1000.0),
    "cert_expiry_days": (1, 90),
}
MAX_EMAILS = 20
SECRET_MIN, SECRET_MAX = 16, 100
_WHOLE = frozenset({"min_requests", "cert_expiry_days"})
_AUDITED = tuple(f for f in EDITABLE if f != "webhook_secret")


def plain_number(value: float) -> str:
    """1000000 and 0.1, never 1e+06."""
    return str(int(value)) if value == int(value) else str(value)


def current(org: Organization) -> AlertSettings:
    """The saved settings, or the defaults (unsaved) when there are none yet."""
    return AlertSettings.objects.filter(organization=org).first() or AlertSettings(organization=org)


def may_edit(actor: Actor, org: Organization) -> bool:
    role = actor.role_in(org)
    if role is None:
        return False
    return role in (Role.OWNER, Role.ADMIN) or (actor.kind == "token" and role == Role.EDITOR)


def require_editor_of_settings(actor: Actor, org: Organization) -> None:
    """404 for strangers; 403 for members (or read-only tokens) who may not change the settings."""
    require(actor, org)
    if not may_edit(actor, org):
        raise PermissionDenied("Changing alert settings needs the admin role (or a read-write API token).")


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None. The backends' SSRF guard: no cloud metadata,
    link-local, unspecified or multicast address. Names are resolved again at each delivery."""
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        return "Give a full http:// or https:// address."
    if len(url) > AlertSettings._meta.get_field("webhook_url").max_length:
        return "At most 200 characters."
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host in settings.BACKEND_DENY_HOSTNAMES:
        return f"{host} is a cloud metadata service, which webhooks may not use."
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    for network in settings.BACKEND_DENY_NETWORKS:
        if ip.version == network.version and ip in network:
            return (f"{ip} is in {network}, which webhooks may not use (cloud metadata and link-local services); "
                    "a platform admin can change PORTICO_BACKEND_DENY_NETWORKS.")
    return None


def parse_emails(value: Any) -> list[str]:
    """A list of addresses, or text with one per line or separated by commas."""
    if isinstance(value, str):
        value = value.replace(",", "\n").splitlines()
    if not isinstance(value, (list, tuple)):
        raise ValidationError({"emails": "A list of email addresses."})
    out: list[str] = []
    for raw in value:
        address = str(raw).strip()
        if address and address.lower() not in (a.lower() for a in out):
            out.append(address)
    return out


def _check(conf: AlertSettings, secret_changed: bool) -> None:
    errors: dict[str, str] = {}
    bad = []
    for address in conf.emails:
        try:
            validate_email(address)
        except ValidationError:
            bad.append(address)
    if bad:
        errors["emails"] = f"Not an email address: {', '.join(bad)}."
    elif len(conf.emails) > MAX_EMAILS:
        errors["emails"] = f"At most {MAX_EMAILS} addresses."
    if conf.webhook_url:
        problem = webhook_url_problem(conf.webhook_url)
        if problem:
            errors["webhook_url"] = problem
    if secret_changed and conf.webhook_secret and not SECRET_MIN <= len(conf.webhook_secret) <= SECRET_MAX:
        errors["webhook_secret"] = f"Between {SECRET_MIN} and {SECRET_MAX} characters."
    elif conf.webhook_url and not conf.webhook_secret and "webhook_url" not in errors:
        errors["webhook_secret"] = "A webhook needs a secret: it signs every delivery (X-Portico-Signature)."
    for name, (low, high) in BOUNDS.items():
        value = getattr(conf, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors[name] = "A number."
        elif name in _WHOLE and value != int(value):
            errors[name] = "A whole number."
        elif not low <= value <= high:
            errors[name] = f"Between {plain_number(low)} and {plain_number(high)}."
    if not isinstance(conf.enabled, bool):
        errors["enabled"] = "true or false."
    if errors:
        raise ValidationError(errors)


def _snapshot(conf: AlertSettings) -> dict[str, Any]:
    out = {f: getattr(conf, f) for f in _AUDITED}
    out["webhook_secret"] = conf.webhook_secret  # redacted by audit.record
    return out


def alert_settings_update(*, actor: Actor, org: Organization, **changes: Any) -> AlertSettings:
    """Change some of the settings. ``webhook_secret``: a new value replaces it, ``""`` removes it,
    leaving it out keeps it. ``emails``: a list (or text, one per line); empty means the owners and
    admins."""
    require_editor_of_settings(actor, org)
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})
    if "emails" in changes:
        changes["emails"] = parse_emails(changes["emails"])
    for name in ("webhook_url", "webhook_secret"):
        if name in changes:
            changes[name] = str(changes[name] or "").strip()
    with transaction.atomic():
        conf, _ = AlertSettings.objects.select_for_update().get_or_create(organization=org)
        before = _snapshot(conf)
        for name, value in changes.items():
            setattr(conf, name, value)
        _check(conf, secret_changed="webhook_secret" in changes)
        conf.save()
        after = _snapshot(conf)
        if before != after:
            record(org=org, actor=actor, action="alert_settings.update", target=conf, before=before, after=after)
    return conf


def alert_settings_test(*, actor: Actor, org: Organization) -> list[dict]:
    """Send a made-up alert through the saved channels now, and say how each went. Nothing is
    stored but the audit event; the webhook is signed and guarded as for real alerts."""
    from .alerts import deliver
    from .models import Alert

    require_editor_of_settings(actor, org)
    test = Alert(organization=org, kind="test", subject="test", summary=f"Test alert for {org.name}",
                 details={"sent_by": actor.display})
    results = deliver(test, "test")  # an unsaved alert: deliver records nothing on it
    with transaction.atomic():
        record(org=org, actor=actor, action="alert_settings.test", target=current(org),
               changes={"results": [{k: r.get(k) for k in ("channel", "ok", "status", "error") if k in r} for r in results]})
    return results
