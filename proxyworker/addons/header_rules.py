"""A site's header rules (``HeaderRule``): add, set or remove request headers on the way to the
backend and response headers on the way to the client.

They run after the forwarding headers, so a rule can also override ``X-Forwarded-*`` or put back a
header the site hides. ``add`` appends a field (keeping existing ones; not when the same name and
value is already there), ``set`` replaces every field of that name, ``remove`` deletes them.
Response rules apply to every answer for the site, the platform's own pages and cache hits
included, and again to a retried response.
"""

from __future__ import annotations

from mitmproxy import http

from proxyworker.filtering import SiteFilters


def _apply(headers: http.Headers, rules: tuple[tuple[str, str, str], ...]) -> None:
    for op, name, value in rules:
        if op == "set":
            headers[name] = value
        elif op == "add":
            # Idempotent: a response replayed from the cache already carries what was added when
            # it was stored, and must not get the field twice.
            if value not in headers.get_all(name):
                headers.add(name, value)
        elif name in headers:
            del headers[name]


def _filters(flow: http.HTTPFlow) -> SiteFilters | None:
    site = flow.metadata.get("portico.site")
    return site.extra.get("filters") if site is not None else None


class HeaderRules:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        filters = _filters(flow)
        if filters is not None and filters.request_headers:
            _apply(flow.request.headers, filters.request_headers)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        filters = _filters(flow)
        if filters is not None and filters.response_headers and flow.response is not None:
            _apply(flow.response.headers, filters.response_headers)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("portico.retried_on") is not None:
            self.responseheaders(flow)
