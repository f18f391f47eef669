"""Platform-wide policies: rules platform staff set for every tenant's sites, on top of their own.

- ``ip_blocklist`` ``{"deny": ["203.0.113.0/24", ...]}``: added to every site's IP deny list;
- ``min_tls`` ``{"version": "1.3"}``: every site's minimum TLS version is raised to it;
- ``managed_waf`` ``{"groups": ["sqli", "xss", ...]}``: these managed WAF groups block on every
  site, whatever the site's own WAF policy says (a tenant may add rules, not lower these).

The merge happens in the compiler (``apply``), so the worker needs nothing new: it serves one
site's effective rules as if the tenant had written them. Only staff change these rules (Django
admin, through ``platform_policy_set``); tenants read them in the API and the dashboard.

Audit: the audit log is per organization and hash-chained per organization. A change to a
platform policy changes what every tenant's sites do, so it is recorded in every organization's
log (action ``platform_policy.update``, the staff member as actor): each tenant's log stays the
complete story of its own sites. Changes are rare; one event per organization is cheap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from audit.services import record
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from fleet.publisher import publish_on_commit
from tenancy.access import Actor
from tenancy.models import Organization

from proxyworker import snapshot

from .models import PlatformPolicy


class IpBlocklist(msgspec.Struct, forbid_unknown_fields=True):
    deny: list[str] = []


class MinTls(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.2", "1.3"] = "1.2"


class ManagedWaf(msgspec.Struct, forbid_unknown_fields=True):
    groups: list[str] = []


SCHEMA = {
    PlatformPolicy.Kind.IP_BLOCKLIST: IpBlocklist,
    PlatformPolicy.Kind.MIN_TLS: MinTls,
    PlatformPolicy.Kind.MANAGED_WAF: ManagedWaf,
}


def validate_settings(kind: str, settings: Any) -> dict[str, Any]:
    """Normalized settings for ``kind``; ValidationError naming what is wrong."""
    if kind not in SCHEMA:
        raise ValidationError({"kind": f"Unknown platform policy {kind!r}; use one of {', '.join(SCHEMA)}."})
    try:
        value = msgspec.convert(settings, SCHEMA[kind])
    except msgspec.ValidationError as exc:
        raise ValidationError({"settings": str(exc).replace("$.", "").replace("`$`", "settings")}) from None
    if isinstance(value, IpBlocklist):
        networks = []
        for cidr in value.deny:
            try:
                networks.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
            except ValueError:
                raise ValidationError({"settings": f"deny: {cidr!r} is not an IP address or CIDR network."}) from None
        value.deny = sorted(set(networks), key=networks.index)
    if isinstance(value, ManagedWaf):
        unknown = [g for g in value.groups if g not in snapshot.MANAGED_WAF_GROUPS]
        if unknown:
            raise ValidationError({"settings": f"groups: unknown group {unknown[0]!r}; use {', '.join(snapshot.MANAGED_WAF_GROUPS)}."})
    return msgspec.to_builtins(value)


def _require_staff(actor: Actor) -> None:
    if actor.kind == "system":
        return
    if actor.kind != "user" or actor.user is None or not actor.user.is_staff:
        raise PermissionDenied("Only platform staff change platform policies.")


@transaction.atomic
def platform_policy_set(*, actor: Actor, kind: str, settings: Any, enabled: bool = True, note: str = "") -> PlatformPolicy:
    """Create or change the platform policy of ``kind``; audited in every organization, published."""
    _require_staff(actor)
    normalized = validate_settings(kind, settings)
    policy = PlatformPolicy.objects.select_for_update().filter(kind=kind).first()
    before = {"settings": policy.settings, "enabled": policy.enabled, "note": policy.note} if policy else None
    if policy is None:
        policy = PlatformPolicy(kind=kind)
    policy.settings, policy.enabled, policy.note = normalized, enabled, note.strip()[:300]
    after = {"settings": policy.settings, "enabled": policy.enabled, "note": policy.note}
    if before == after:
        return policy
    policy.updated_by = actor.display[:300]
    policy.save()
    for org in Organization.objects.order_by("pk").only("pk"):
        record(org=org, actor=actor, action="platform_policy.update", target=policy, before=before, after=after)
    publish_on_commit(f"platform policy {kind} changed")
    return policy


# --- the compiler's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformRules:
    deny: tuple[str, ...] = ()
    min_tls: str | None = None
    waf_groups: tuple[str, ...] = field(default=())


def load() -> PlatformRules:
    """The enabled platform policies, read once per compile."""
    rules: dict[str, Any] = {}
    for kind, settings in PlatformPolicy.objects.filter(enabled=True).values_list("kind", "settings"):
        rules[kind] = settings
    return PlatformRules(
        deny=tuple(rules.get(PlatformPolicy.Kind.IP_BLOCKLIST, {}).get("deny", ())),
        min_tls=rules.get(PlatformPolicy.Kind.MIN_TLS, {}).get("version"),
        waf_groups=tuple(rules.get(PlatformPolicy.Kind.MANAGED_WAF, {}).get("groups", ())),
    )


def apply(site: snapshot.Site, rules: PlatformRules) -> None:
    """Merge the platform rules into one compiled site, in place."""
    pol = site.policies
    if rules.deny:
        ip_rules = pol.ip_rules or snapshot.IpRules()
        # The worker checks deny before allow: a blocked network stays blocked even if the tenant allows it.
        extra = [c for c in rules.deny if c not in ip_rules.deny]
        pol.ip_rules = snapshot.IpRules(allow=list(ip_rules.allow), deny=[*ip_rules.deny, *extra])
    if rules.min_tls and float(rules.min_tls) > float(site.tls_min_version):
        site.tls_min_version = rules.min_tls  # type: ignore[assignment]
    if rules.waf_groups:
        waf = pol.waf or snapshot.WafPolicy()
        pol.waf = snapshot.WafPolicy(managed={**waf.managed, **dict.fromkeys(rules.waf_groups, "block")}, rules=list(waf.rules),
                                     enforced=sorted(set(waf.enforced) | set(rules.waf_groups)))
