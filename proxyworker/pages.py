"""The platform's own answers: error pages the worker sends instead of a backend's.

Bodies are rendered once at import; a hook that answers builds one small Response around them.
Nothing here names the proxy engine or an origin: the page says "Portico" and nothing else.
"""

from __future__ import annotations

import html

from mitmproxy import http

_REASONS = {
    400: ("Bad Request", "The request could not be understood."),
    401: ("Unauthorized", "This site needs a user name and password."),
    403: ("Forbidden", "This request is not allowed on this site."),
    404: ("Not Found", "No site is configured for this hostname."),
    413: ("Content Too Large", "The request body is larger than this site accepts."),
    421: ("Misdirected Request", "This connection cannot serve the requested hostname."),
    429: ("Too Many Requests", "Too many requests from this client; try again later."),
    431: ("Request Header Fields Too Large", "The request headers are too large."),
    502: ("Bad Gateway", "The origin server could not be reached."),
    503: ("Service Unavailable", "No healthy origin server is available for this site right now."),
    504: ("Gateway Timeout", "The origin server did not answer in time."),
}


def render(status: int, detail: str | None = None) -> bytes:
    title, default = _REASONS.get(status, ("Error", "The request could not be served."))
    text = html.escape(detail or default)
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{status} {title}</title></head>\n"
        f"<body><h1>{status} {title}</h1>\n<p>{text}</p>\n<hr><p>Portico</p></body></html>\n"
    ).encode()


_BODIES = {status: render(status) for status in _REASONS}


def error_response(status: int, detail: str | None = None, headers: dict[str, str] | None = None) -> http.Response:
    body = _BODIES[status] if detail is None and status in _BODIES else render(status, detail)
    resp = http.Response.make(
        status,
        body,
        {"content-type": "text/html; charset=utf-8", "cache-control": "no-store", **(headers or {})},
    )
    if status in (400, 413, 431):
        # RFC 9112 §9.6: after refusing a request we may not be able to find the next one on this
        # connection (the unread body), so close it.
        resp.headers["connection"] = "close"
    return resp


def redirect_response(location: str, status: int = 308) -> http.Response:
    return http.Response.make(
        status, b"", {"location": location, "cache-control": "no-store", "content-length": "0"}
    )


def text_response(status: int, text: str) -> http.Response:
    return http.Response.make(status, text.encode(), {"content-type": "text/plain", "cache-control": "no-store"})
