"""The WAF addon: runs a site's compiled ``proxyworker.waf.Waf`` on each request.

Rules that need no body run in ``requestheaders`` (before the cache could answer); rules that
read the body, and the managed groups' body checks, run in ``request`` once it has arrived. A block
is the platform's 403 page quoting the request id (``X-Request-ID``); a redirect is a 302 to the
rule's ``redirect_to``. Each decision is one structured log line naming the rule, and lands in
``flow.metadata``: ``portico.blocked`` = ``{"reason": "waf", "rule": id, "action": ...}`` for the
decisive rule, ``portico.logged`` = a list of the same for ``log`` rules that matched.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from proxyworker import pages
from proxyworker.addons.headers import request_id_of
from proxyworker.filtering import SiteFilters, log_event
from proxyworker.waf import RequestView, Verdict

logger = logging.getLogger("proxyworker.waf")


class WebFirewall:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        site = flow.metadata.get("portico.site")
        if site is None:
            return
        filters: SiteFilters | None = site.extra.get("filters")
        if filters is None or filters.waf is None:
            return
        waf = filters.waf
        view = RequestView(flow, flow.metadata.get("portico.client_path", flow.request.path))
        logged: list[Verdict] = []
        verdict = waf.check_head(view, logged)
        self._record(flow, logged)
        if verdict is not None:
            self._decide(flow, verdict)
        allowed = verdict is not None and verdict.action == "allow"
        if (verdict is None and waf.needs_body) or (allowed and waf.body_enforced):
            # an allowed request still gets the platform-enforced groups' body checks
            flow.metadata["portico.waf_view"] = (view, allowed)

    def request(self, flow: http.HTTPFlow) -> None:
        pending = flow.metadata.pop("portico.waf_view", None)
        if pending is None or flow.response or flow.error:
            return
        view, allowed = pending
        waf = flow.metadata["portico.site"].extra["filters"].waf
        logged: list[Verdict] = []
        verdict = waf.check_body(view, logged, allowed=allowed)
        self._record(flow, logged)
        if verdict is not None:
            self._decide(flow, verdict)

    @staticmethod
    def _record(flow: http.HTTPFlow, logged: list[Verdict]) -> None:
        if not logged:
            return
        request_id_of(flow)
        entries = flow.metadata.setdefault("portico.logged", [])
        for v in logged:
            entries.append({"reason": "waf", "rule": v.rule, "action": "log"})
            log_event(logger, logging.WARNING, "waf", flow, action="log", rule=v.rule)

    @staticmethod
    def _decide(flow: http.HTTPFlow, verdict: Verdict) -> None:
        if verdict.action == "allow":
            flow.metadata["portico.waf_allowed"] = verdict.rule
            return
        request_id = request_id_of(flow)
        if verdict.action == "redirect":
            flow.response = pages.redirect_response(verdict.redirect_to or "/", 302)
            status = 302
        else:
            flow.response = pages.error_response(
                403, f"This request was blocked by the site's security rules. Reference: {request_id}"
            )
            status = 403
        flow.metadata["portico.local"] = True
        flow.metadata["portico.blocked"] = {"reason": "waf", "rule": verdict.rule, "action": verdict.action}
        log_event(logger, logging.WARNING, "waf", flow, action=verdict.action, rule=verdict.rule, status=status)
