"""The security check-up: each check reads one organization's configuration and yields what it
finds, with a severity, an explanation a person understands and the fix. Pure reads.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from certs.models import Certificate
from cryptography import x509
from django.db.models import Q
from django.utils import timezone
from edge.models import Backend, Policy, Route, Site
from tenancy.models import ApiToken, Membership, Organization, Role

from .models import Severity


@dataclass(frozen=True)
class Found:
    check: str
    subject: str
    severity: str
    title: str
    explanation: str
    fix: str
    site: Site | None = None


Check = Callable[[Organization, dt.datetime], Iterator[Found]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def _active_sites(org: Organization):
    return Site.objects.for_org(org).filter(state=Site.State.ACTIVE)


# --- TLS ------------------------------------------------------------------------------------------


@check
def tls_settings(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for site in _active_sites(org):
        if site.tls_mode == Site.TlsMode.OFF:
            yield Found("tls-off", f"site:{site.pk}", Severity.HIGH, f"{site.name} is served over plain HTTP only",
                        "Visitors' passwords, cookies and pages cross the network unencrypted and can be read or changed.",
                        "Set the site's certificates to Automatic (ACME) and turn on Redirect HTTP to HTTPS.", site)
            continue
        if not site.force_https:
            yield Found("https-not-forced", f"site:{site.pk}", Severity.MEDIUM, f"{site.name} still answers over plain HTTP",
                        "A visitor who types the address without https:// stays on an unencrypted connection.",
                        "Turn on Redirect HTTP to HTTPS in the site's TLS settings.", site)
        if site.hsts_max_age < 15552000:  # six months, the usual minimum for HSTS to protect anyone
            yield Found("hsts-missing", f"site:{site.pk}", Severity.MEDIUM, f"{site.name} sends no lasting HSTS header",
                        "Without HSTS (for at least six months) a browser can be downgraded to HTTP on its first request.",
                        "Set HSTS max-age to 31536000 (one year) in the site's TLS settings.", site)


@check
def certificates(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for cert in Certificate.objects.for_org(org).filter(status=Certificate.Status.ISSUED):
        names = ", ".join(cert.hostnames) or str(cert.pk)
        if cert.not_after and cert.not_after <= now:
            yield Found("certificate-expired", f"certificate:{cert.pk}", Severity.CRITICAL, f"The certificate for {names} has expired",
                        "Browsers refuse the site with a security error.",
                        "Renew it (Certificates → Request) or upload a new one.")
        elif cert.not_after and cert.not_after <= now + dt.timedelta(days=14):
            days = (cert.not_after - now).days
            yield Found("certificate-expiring", f"certificate:{cert.pk}", Severity.HIGH,
                        f"The certificate for {names} expires in {days} days",
                        "Automatic renewal should have replaced it by now; if it keeps failing, the site goes down at expiry.",
                        "Check the certificate's last renewal error on the Certificates page, or upload a new one.")
        if cert.chain_pem and _chain_incomplete(cert.chain_pem):
            yield Found("certificate-chain-incomplete", f"certificate:{cert.pk}", Severity.MEDIUM,
                        f"The certificate for {names} is sent without its intermediate",
                        "Clients that do not already hold the intermediate certificate cannot verify the site.",
                        "Upload the full chain: the certificate first, then its intermediates.")


def _chain_incomplete(chain_pem: str) -> bool:
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        return False
    return len(certs) == 1 and certs[0].issuer != certs[0].subject


# --- origins ----------------------------------------------------------------------------------------


def _public(address: str) -> bool:
    """A backend reached across the internet: a public IP, or a name outside private suffixes."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return not address.endswith((".internal", ".local", ".lan", ".localhost", ".svc", ".cluster.local")) and "." in address
    return ip.is_global


@check
def backends(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for b in Backend.objects.for_org(org).exclude(state=Backend.State.DISABLED).select_related("site"):
        if b.site.state != Site.State.ACTIVE:
            continue
        if b.scheme == "http" and _public(b.address):
            yield Found("backend-plain-http", f"backend:{b.pk}", Severity.HIGH,
                        f"{b.site.name} reaches {b.address} over plain HTTP across the internet",
                        "Traffic between the proxy and this origin, cookies and passwords included, is unencrypted on a public network.",
                        "Serve the origin over HTTPS and set the backend's scheme to https.", b.site)
        if b.scheme == "https" and not b.tls_verify:
            yield Found("backend-tls-unverified", f"backend:{b.pk}", Severity.MEDIUM,
                        f"{b.site.name} does not verify the certificate of {b.address}",
                        "Anyone on the path to the origin can impersonate it and read or change the traffic.",
                        "Turn on upstream certificate verification; for a private CA, paste its certificate into the backend.", b.site)


# --- filtering --------------------------------------------------------------------------------------

LOGIN_PREFIXES = ("/login", "/signin", "/sign-in", "/wp-login", "/admin", "/auth", "/account/login", "/api/login", "/user/login")


def _site_policies(site: Site, kind: str) -> list[Policy]:
    """The site's own enabled policies of ``kind`` and its organization's defaults."""
    return list(Policy.objects.filter(organization_id=site.organization_id, kind=kind, enabled=True)
                .filter(Q(site=site) | Q(site__isnull=True)))


@check
def waf(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for site in _active_sites(org):
        policies = _site_policies(site, Policy.Kind.WAF)
        own = [p for p in policies if p.site_id == site.pk] or policies
        managed = own[0].settings.get("managed", {}) if own else {}
        if not own or not any(mode != "off" for mode in managed.values()):
            yield Found("waf-off", f"site:{site.pk}", Severity.MEDIUM, f"{site.name} has no managed WAF rules on",
                        "SQL injection, cross-site scripting and path traversal attempts reach the origin unfiltered.",
                        "Add a WAF policy with the managed groups (sqli, xss, traversal, scanners) set to block.", site)
        elif any(mode == "log" for mode in managed.values()) and own[0].updated_at <= now - dt.timedelta(days=14):
            groups = ", ".join(g for g, m in managed.items() if m == "log")
            yield Found("waf-log-only", f"site:{site.pk}", Severity.LOW, f"{site.name} has WAF rules in log-only mode for two weeks",
                        f"The groups {groups} only log attacks; log-only is for trying rules out, not for keeping.",
                        "Check the blocked-request log for false positives, then switch these groups to block.", site)


# Response headers that name the origin's software; the worker strips them (``hide_response_headers``),
# but header rules run after that, so a rule that adds one puts it back on every response.
ORIGIN_HEADERS = ("server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-generator", "via")


@check
def origin_headers(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for site in _active_sites(org):
        # Header rules add up: the organization's defaults apply alongside the site's own.
        for policy in _site_policies(site, Policy.Kind.HEADERS):
            for rule in policy.settings if isinstance(policy.settings, list) else []:
                name = str(rule.get("name", "")).lower()
                if rule.get("direction") == "response" and rule.get("op") in ("add", "set") and name in ORIGIN_HEADERS:
                    yield Found("origin-header-leak", f"site:{site.pk}:{policy.pk}:{name}", Severity.LOW,
                                f"{site.name} sends {rule.get('name')}: {rule.get('value', '')} on every response",
                                f"The header rule {policy.name!r} puts back a header the proxy removes to hide the origin: "
                                "it tells attackers which software (and often which version) to target.",
                                f"Remove the {rule.get('name')} rule from the header policy {policy.name!r}.", site)


@check
def login_rate_limits(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for site in _active_sites(org):
        login_paths = sorted({r.path_prefix for r in Route.objects.filter(site=site) if r.path_prefix.lower().startswith(LOGIN_PREFIXES)})
        if not login_paths:
            continue
        limits = [p.settings for p in _site_policies(site, Policy.Kind.RATE_LIMIT)]
        for path in login_paths:
            if not any(path.startswith(limit.get("path_prefix", "/")) and limit.get("action", "block") == "block" for limit in limits):
                yield Found("login-no-rate-limit", f"site:{site.pk}:{path}", Severity.MEDIUM,
                            f"{site.name}'s {path} has no rate limit",
                            "A login form without a rate limit lets anyone try passwords as fast as the origin answers.",
                            f"Add a rate-limit policy for {path} (for example 10 requests per minute per IP, action block).", site)


# --- people and tokens ---------------------------------------------------------------------------------


@check
def members(org: Organization, now: dt.datetime) -> Iterator[Found]:
    from allauth.mfa.models import Authenticator

    with_2fa = set(Authenticator.objects.filter(type=Authenticator.Type.TOTP).values_list("user_id", flat=True))
    memberships = list(Membership.objects.filter(organization=org).select_related("user"))
    for m in memberships:
        if m.user_id not in with_2fa and m.role != Role.VIEWER:
            yield Found("member-no-2fa", f"user:{m.user_id}", Severity.MEDIUM if m.role != Role.OWNER else Severity.HIGH,
                        f"{m.user.email} ({m.role}) signs in without two-factor authentication",
                        "A stolen or guessed password is enough to change this organization's sites.",
                        "Ask them to turn on two-factor authentication from the account menu.")
    if sum(m.role == Role.OWNER for m in memberships) < 2:
        yield Found("single-owner", "owners", Severity.LOW, "The organization has a single owner",
                    "If that person leaves or loses access, nobody can manage ownership or delete the organization.",
                    "Make a second trusted member an owner.")


@check
def tokens(org: Organization, now: dt.datetime) -> Iterator[Found]:
    for token in ApiToken.objects.for_org(org).filter(revoked_at__isnull=True):
        if token.expires_at is not None and token.expires_at <= now:
            continue
        if token.expires_at is None:
            yield Found("token-never-expires", f"token:{token.pk}", Severity.LOW, f"API token {token.name!r} never expires",
                        "A token that leaks from a script or a CI log keeps working forever.",
                        "Create a replacement with an expiry date and revoke this one.")
        last = token.last_used_at or token.created_at
        if last <= now - dt.timedelta(days=90):
            yield Found("token-unused", f"token:{token.pk}", Severity.MEDIUM, f"API token {token.name!r} unused for 90 days",
                        "An unused token is only a risk: nobody would notice it being misused.",
                        "Revoke it.")


def run_checks(org: Organization, now: dt.datetime | None = None) -> list[Found]:
    now = now or timezone.now()
    return [found for fn in CHECKS for found in fn(org, now)]
