"""Access control, the first policy a request meets once the router has found its site:

1. IP rules: an address in ``deny``, or outside a non-empty ``allow``, gets the platform's 403 page.
2. Basic auth: under a ``BasicAuth`` policy's ``path_prefix`` (the longest matching one applies) a
   request needs valid credentials, else 401 with ``WWW-Authenticate``. Verified credentials are
   *consumed*: the ``Authorization`` header is removed before the request goes upstream, because
   it was meant for the platform, and forwarding the password would hand every origin the site's
   shared secret. Requests outside any protected prefix keep their ``Authorization`` untouched
   (the origin's own authentication keeps working).

Every refusal sets ``flow.metadata["portico.blocked"]`` and logs one structured line.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from proxyworker import pages
from proxyworker.addons.headers import request_id_of
from proxyworker.basic_auth import Realm, VerificationCache, check_password, parse_authorization
from proxyworker.filtering import SiteFilters, log_event
from proxyworker.forwarded import client_ip

logger = logging.getLogger("proxyworker.access")


class Access:
    def __init__(self) -> None:
        self.verified = VerificationCache()

    def requestheaders(self, flow: http.HTTPFlow):
        if flow.response or flow.error:
            return None
        site = flow.metadata.get("portico.site")
        if site is None:
            return None
        filters: SiteFilters | None = site.extra.get("filters")
        if filters is None:
            return None
        if filters.ip_allow is not None or filters.ip_deny is not None:
            ip = client_ip(flow)
            if (filters.ip_deny is not None and ip in filters.ip_deny) or (
                filters.ip_allow is not None and ip not in filters.ip_allow
            ):
                rule = "deny" if filters.ip_deny is not None and ip in filters.ip_deny else "not_allowed"
                return _refuse(flow, 403, "ip", rule, "Requests from this address are not allowed on this site.")
        if filters.realms:
            realm = filters.realm_for(flow.metadata.get("portico.client_path", flow.request.path))
            if realm is not None:
                # Returning a coroutine only here keeps every other request on the sync path;
                # mitmproxy awaits whatever awaitable a hook returns.
                return self._authenticate(flow, realm)
        return None

    async def _authenticate(self, flow: http.HTTPFlow, realm: Realm) -> None:
        authorization = flow.request.headers.get("authorization")
        credentials = parse_authorization(authorization)
        ok = False
        if credentials is not None and authorization is not None:
            stored = realm.stored_hash(credentials[0])  # the decoy for an unknown name: same cost
            key = self.verified.key(stored, authorization)
            ok = self.verified.lookup(key)
            if ok is None:
                # pbkdf2 (100k iterations) would stall every connection of this process: a thread.
                ok = await asyncio.to_thread(check_password, credentials[1], stored)
                self.verified.remember(key, ok)
        if not ok:
            _refuse(flow, 401, "basic_auth", realm.prefix, None, {"www-authenticate": realm.challenge})
            return
        del flow.request.headers["authorization"]  # consumed by the platform (see module docstring)
        flow.metadata["portico.user"] = credentials[0]  # type: ignore[index]


def _refuse(flow: http.HTTPFlow, status: int, reason: str, rule: str, detail: str | None,
            headers: dict[str, str] | None = None) -> None:
    request_id = request_id_of(flow)
    if detail is not None:
        detail = f"{detail} Reference: {request_id}"
    flow.response = pages.error_response(status, detail, headers)
    flow.metadata["portico.local"] = True
    flow.metadata["portico.blocked"] = {"reason": reason, "rule": rule}
    # Missing credentials are the normal first step of basic auth, not an event worth a warning.
    level = logging.INFO if status == 401 else logging.WARNING
    log_event(logger, level, reason, flow, action="block", rule=rule, status=status)
