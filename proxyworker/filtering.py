"""A site's filtering policies (IP rules, basic auth, rate limits, WAF, header rules) compiled once,
when a snapshot is applied, into the structures the filtering addons read per request.

``tables.compile_snapshot`` stores the result in ``SiteTable.extra["filters"]`` (None for a site
without any of these policies, so those sites pay one dict lookup per addon).
"""

from __future__ import annotations

import json
import logging
import re

from proxyworker import snapshot as snap
from proxyworker.basic_auth import Realm
from proxyworker.cidr import CidrSet
from proxyworker.forwarded import client_ip
from proxyworker.ratelimit import Limit
from proxyworker.waf import Waf


class SiteFilters:
    __slots__ = ("ip_allow", "ip_deny", "realms", "rate_limits", "waf", "request_headers", "response_headers")

    def __init__(self, site: snap.Site):
        pol = site.policies
        rules = pol.ip_rules
        allow = CidrSet(rules.allow) if rules and rules.allow else None
        deny = CidrSet(rules.deny) if rules and rules.deny else None
        self.ip_allow = allow
        self.ip_deny = deny
        # Longest prefix first: the most specific BasicAuth policy for a path applies.
        realms = [Realm(b.path_prefix, b.realm, dict(b.users)) for b in pol.basic_auth]
        realms.sort(key=lambda r: len(r.prefix), reverse=True)
        self.realms = tuple(realms)
        self.rate_limits = tuple(Limit(site.id, rl) for rl in pol.rate_limits)
        self.waf = Waf(pol.waf) if pol.waf and (pol.waf.rules or pol.waf.managed) else None
        self.request_headers = tuple((h.op, h.name, h.value) for h in pol.headers if h.direction == "request")
        self.response_headers = tuple((h.op, h.name, h.value) for h in pol.headers if h.direction == "response")

    def realm_for(self, path: str) -> Realm | None:
        for realm in self.realms:
            if path.startswith(realm.prefix):
                return realm
        return None


def compile_filters(site: snap.Site) -> SiteFilters | None:
    pol = site.policies
    if not (pol.ip_rules or pol.basic_auth or pol.rate_limits or pol.waf or pol.headers):
        return None
    try:
        return SiteFilters(site)
    except (re.error, ValueError) as exc:  # validate() has checked each piece; this is the backstop
        raise snap.SnapshotError(f"site {site.name!r} ({site.id}): policies cannot be compiled: {exc}") from None


def log_event(logger: logging.Logger, level: int, event: str, flow, **fields) -> None:
    """One structured line per filtering decision (logfmt: ``key=value``, values JSON-quoted when
    they hold spaces or quotes), so a log pipeline can count rules without parsing prose."""
    if not logger.isEnabledFor(level):
        return
    site = flow.metadata.get("portico.site")
    base = {"event": event, **fields}
    base.update({
        "site": site.id if site is not None else None,
        "ip": client_ip(flow),
        "method": flow.request.method,
        "path": flow.metadata.get("portico.client_path", flow.request.path)[:200],
        "request_id": flow.metadata.get("portico.request_id"),
    })
    logger.log(level, " ".join(f"{k}={_logfmt(v)}" for k, v in base.items() if v is not None))


def _logfmt(value) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text
