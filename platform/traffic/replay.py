"""Replay of an inspected request against one backend of its site, sent by the control plane.

What is sent is what the worker kept (``RequestSample``): the method, the path (rewritten by the
site's current routes, as a worker would), and the request headers minus

- hop-by-hop headers (RFC 9110 §7.6.1), which belong to one connection, not to the request;
- every header the worker masked (``***``: ``Authorization``, cookies, anything named like a
  secret): the value never left the worker, so it cannot be replayed, and a made-up one must not be;
- ``Content-Length``: samples keep no bodies (see below), so the replay has none;

and query parameters the worker masked are dropped the same way. ``Host`` is the original host.
The answer says which headers and parameters were left out and why.

Why no bodies: a worker captures samples on the request path, where keeping a body costs a copy
of every sampled request, and bodies are where logins, card numbers and personal data travel;
headers can be masked by name, bodies cannot. A replay of a request that had a body goes without
one, and says so.

Safety:
- Roles: editors and up (the API's write tokens); every replay that is sent is audited (sample,
  backend, method, path, outcome; never a header value).
- Methods other than GET, HEAD and OPTIONS can change things on the origin: they need ``confirm``.
- SSRF: the backend's address is resolved now (DNS may have changed since it was saved) and every
  address it resolves to is checked against ``PORTICO_BACKEND_DENY_NETWORKS`` (and the replay-only
  ``PORTICO_REPLAY_DENY_NETWORKS``); the connection goes to the address that was checked, so a
  second lookup cannot swap it (DNS rebinding).
- At most ``PORTICO_REPLAY_PER_MINUTE`` (30) replays per organization and minute; one replay waits
  at most ``PORTICO_REPLAY_TIMEOUT`` (10 s) and reads at most ``PORTICO_REPLAY_BODY_KIB`` (64 KiB).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field

from audit.services import record
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from edge.models import Backend, Route
from tenancy.access import Actor, ensure_in_org, require
from tenancy.models import Organization, Role

from proxyworker import traffic as worker_traffic
from proxyworker.tables import RouteTable
from proxyworker.upstream import make_client_ssl

from .models import RequestSample

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MASK = worker_traffic.MASK
# RFC 9110 §7.6.1 connection-specific fields, plus the proxy's own credentials and HTTP/2's.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate", "http2-settings",
})
_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "html", "csv", "yaml")


class ReplayRateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"At most {settings.PORTICO_REPLAY_PER_MINUTE} replays a minute per organization: "
                         f"try again in {retry_after} s.")
        self.retry_after = retry_after


@dataclass
class Plan:
    """What a replay will send, and what it leaves out."""

    method: str
    target: str  # path and query, as the backend receives them
    host: str
    headers: list[tuple[str, str]]
    omitted: list[tuple[str, str]] = field(default_factory=list)  # (header or "query parameter x", why)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReplayResult:
    sample: int
    backend: str  # the backend's id
    backend_label: str  # scheme://address:port
    address: str  # the IP address connected to
    method: str
    target: str
    host: str
    sent_headers: list[tuple[str, str]]
    omitted: list[tuple[str, str]]
    notes: list[str]
    status: int | None = None
    reason: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""  # the first PORTICO_REPLAY_BODY_KIB, decoded as text; empty for binary bodies
    body_bytes: int = 0  # bytes read (at most the limit)
    body_truncated: bool = False
    body_note: str = ""
    timing: dict[str, float | None] = field(default_factory=dict)  # ms: dns, connect, tls, wait, read, total
    error: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sent_headers"] = [list(h) for h in self.sent_headers]
        d["omitted"] = [{"name": n, "reason": r} for n, r in self.omitted]
        d["response_headers"] = [list(h) for h in self.response_headers]
        return d


# --- what to send -------------------------------------------------------------------------------


def upstream_path(sample: RequestSample) -> tuple[str, str]:
    """The path the backend would receive under the site's current routes, and a note if a route
    changed it. Samples keep the path as the client sent it."""
    routes = Route.objects.filter(site_id=sample.site_id).order_by("-path_prefix")
    best = max((r for r in routes if sample.path.startswith(r.path_prefix)), key=lambda r: len(r.path_prefix), default=None)
    if best is None:
        return sample.path, ""
    if best.kind == Route.Kind.AGGREGATE:
        return sample.path, (f"The route {best.path_prefix} aggregates several backend paths; the replay sends "
                             "the path as the client sent it, to one backend.")
    table = RouteTable(best.path_prefix, None, best.strip_prefix, best.rewrite_prefix or None)  # type: ignore[arg-type]
    if table.rewrite is None:
        return sample.path, ""
    rewritten = table.rewrite_path(sample.path)
    return rewritten, f"The route {best.path_prefix} rewrites the path: the backend receives {rewritten}."


def _strip_masked_query(target: str) -> tuple[str, list[str]]:
    base, q, query = target.partition("?")
    if not q:
        return target, []
    kept, dropped = [], []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if value == MASK:
            dropped.append(name)
        else:
            kept.append(item)
    return (f"{base}?{'&'.join(kept)}" if kept else base), dropped


def plan_replay(sample: RequestSample) -> Plan:
    target, route_note = upstream_path(sample)
    target, masked_params = _strip_masked_query(target)
    host = sample.host or next((v for k, v in sample.request_headers if k.lower() == "host"), "")
    plan = Plan(method=sample.method.upper(), target=target or "/", host=host, headers=[("Host", host)])
    if route_note:
        plan.notes.append(route_note)
    for name in masked_params:
        plan.omitted.append((f"query parameter {name}", "masked on the worker: its value was never stored"))
    named_by_connection = {
        token.strip().lower() for k, v in sample.request_headers if k.lower() == "connection" for token in v.split(",")
    }
    body_length = 0
    for name, value in sample.request_headers:
        lower = name.lower()
        if lower == "host":
            continue
        if lower in HOP_BY_HOP or lower in named_by_connection:
            plan.omitted.append((name, "hop-by-hop: it belongs to the original connection"))
        elif value == MASK or worker_traffic.mask_headers([(name, value)])[0][1] == MASK:
            # The second test: a secret a worker failed to mask (an older version) is not sent either.
            plan.omitted.append((name, "masked on the worker: its value was never stored"))
        elif lower == "content-length":
            body_length = int(value) if value.strip().isdigit() else 0
            plan.omitted.append((name, "samples keep no request body, so the replay has none"))
        elif "\r" in value or "\n" in value or not name.strip() or any(c in name for c in " :\r\n"):
            plan.omitted.append((name, "not a valid header"))
        else:
            plan.headers.append((name, value))
    chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in sample.request_headers)
    if body_length or chunked:
        size = f"{body_length} bytes" if body_length else "a chunked body"
        plan.notes.append(f"The original request had {size}; samples keep no bodies, so the replay was sent without one.")
    return plan


# --- the guard ----------------------------------------------------------------------------------


def _denied(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    for network in (*settings.BACKEND_DENY_NETWORKS, *settings.REPLAY_DENY_NETWORKS):
        if ip.version == network.version and ip in network:
            return str(network)
    return None


def resolve_allowed(backend: Backend) -> str:
    """The address to connect to, after the SSRF guard; ValidationError on ``backend`` otherwise.

    Every address the name resolves to must be allowed: with one allowed and one denied answer, a
    resolver that rotates them would otherwise decide where the replay goes.
    """
    name = backend.address.strip("[]")
    if name.lower() in settings.BACKEND_DENY_HOSTNAMES:
        raise ValidationError({"backend": f"{backend}: {name} is a cloud metadata service; replays may not reach it."})
    try:
        infos = socket.getaddrinfo(name, backend.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValidationError({"backend": f"{backend}: {name} does not resolve ({exc.strerror or exc})."}) from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        refused = _denied(ipaddress.ip_address(address.split("%")[0]))
        if refused:
            raise ValidationError({"backend": (
                f"{backend}: {name} resolves to {address}, in {refused}, which replays may not reach "
                "(PORTICO_BACKEND_DENY_NETWORKS, PORTICO_REPLAY_DENY_NETWORKS).")})
    return addresses[0]


def _take_rate_slot(org: Organization) -> None:
    """A fixed one-minute window per organization, counted in the default cache (shared by every
    web process when PORTICO_CACHE_URL is set, as the API's throttle is)."""
    now = time.time()
    key = f"portico:replay:{org.pk}:{int(now) // 60}"
    cache.add(key, 0, timeout=120)
    try:
        used = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=120)
        used = 1
    if used > settings.PORTICO_REPLAY_PER_MINUTE:
        raise ReplayRateLimited(retry_after=max(1, 60 - int(now) % 60))


# --- the service --------------------------------------------------------------------------------


def default_backend(sample: RequestSample) -> Backend | None:
    """The backend the worker chose, if it still exists; else the site's first enabled one."""
    backends = Backend.objects.filter(site_id=sample.site_id)
    if sample.backend_id:
        chosen = backends.filter(pk=sample.backend_id).first() if _is_uuid(sample.backend_id) else None
        if chosen is not None:
            return chosen
    return backends.filter(state=Backend.State.ENABLED).first() or backends.first()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def replay_sample(*, actor: Actor, org: Organization, sample: RequestSample, backend: Backend,
                  confirm: bool = False) -> ReplayResult:
    """Send ``sample`` again, to ``backend``, and return what came back.

    Raises ValidationError naming ``backend`` or ``confirm``, ReplayRateLimited, PermissionDenied
    (below editor) or Http404 (another organization's sample or backend).
    """
    require(actor, org, Role.EDITOR)
    ensure_in_org(sample, org)
    ensure_in_org(backend, org)
    if backend.site_id != sample.site_id:
        raise ValidationError({"backend": f"{backend} is not a backend of this request's site."})
    plan = plan_replay(sample)
    if plan.method not in SAFE_METHODS and not confirm:
        raise ValidationError({"confirm": (
            f"{plan.method} can change data on the origin: confirm that you want to send it again.")})
    _take_rate_slot(org)
    address = resolve_allowed(backend)
    result = _send(plan, backend, address, sample)
    with transaction.atomic():
        record(org=org, actor=actor, action="request.replay", target=backend, changes={
            "sample": sample.pk, "backend": str(backend.pk), "method": plan.method, "path": plan.target,
            "status": result.status, "error": result.error,
        })
    return result


def _send(plan: Plan, backend: Backend, address: str, sample: RequestSample) -> ReplayResult:
    result = ReplayResult(
        sample=sample.pk, backend=str(backend.pk), backend_label=str(backend), address=address, method=plan.method,
        target=plan.target, host=plan.host, sent_headers=list(plan.headers), omitted=list(plan.omitted),
        notes=list(plan.notes),
    )
    timeout = float(settings.PORTICO_REPLAY_TIMEOUT)
    limit = settings.PORTICO_REPLAY_BODY_KIB * 1024
    start = time.monotonic()
    deadline = start + timeout
    marks: dict[str, float] = {}

    def ms(a: str, b: str) -> float | None:
        return round((marks[b] - marks[a]) * 1000, 2) if a in marks and b in marks else None

    sock: socket.socket | None = None
    conn: http.client.HTTPConnection | None = None
    try:
        marks["start"] = start
        sock = socket.create_connection((address, backend.port), timeout=timeout)
        marks["connected"] = time.monotonic()
        if backend.scheme == "https":
            # The worker's own verification for health checks and retries: the backend's CA (or the
            # system store), TLS 1.2+, SNI and the checked name = the backend's SNI or address.
            context = make_client_ssl(verify=backend.tls_verify, ca_pem=backend.ca_pem or None)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock = context.wrap_socket(sock, server_hostname=backend.sni or backend.address.strip("[]"))
            marks["tls"] = time.monotonic()
        conn = http.client.HTTPConnection(address, backend.port, timeout=timeout)
        conn.sock = sock
        conn.putrequest(plan.method, plan.target, skip_host=True, skip_accept_encoding=True)
        for name, value in plan.headers:
            conn.putheader(name, value)
        conn.endheaders()
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        response = conn.getresponse()
        marks["first_byte"] = time.monotonic()
        result.status, result.reason = response.status, response.reason
        result.response_headers = worker_traffic.mask_headers(list(response.getheaders()))
        raw = b""
        while len(raw) <= limit:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = response.read1(min(65536, limit + 1 - len(raw)))
            if not chunk:
                break
            raw += chunk
            if time.monotonic() > deadline:
                raise TimeoutError
        marks["done"] = time.monotonic()
        result.body_truncated = len(raw) > limit
        raw = raw[:limit]
        result.body_bytes = len(raw)
        result.body, result.body_note = _displayable(raw, response.getheader("content-encoding", ""),
                                                     response.getheader("content-type", ""), limit)
    except TimeoutError:
        result.error = f"No answer within {timeout:g} s."
    except ssl.SSLCertVerificationError as exc:
        result.error = f"TLS: the backend's certificate was refused ({exc.verify_message or exc.reason})."
    except ssl.SSLError as exc:
        result.error = f"TLS: {exc.reason or exc}."
    except (OSError, http.client.HTTPException) as exc:
        result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        if conn is not None:
            conn.close()
        elif sock is not None:
            sock.close()
    end = marks.get("done") or time.monotonic()
    result.timing = {
        "connect": ms("start", "connected"),
        "tls": ms("connected", "tls"),
        "wait": ms("tls" if "tls" in marks else "connected", "first_byte"),
        "read": ms("first_byte", "done"),
        "total": round((end - start) * 1000, 2),
    }
    return result


def _displayable(raw: bytes, encoding: str, content_type: str, limit: int) -> tuple[str, str]:
    """The body as text to show escaped, and a note: decoded from gzip/deflate (at most ``limit``
    bytes of output, so a small compressed answer cannot expand without bound), or "binary"."""
    note = ""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
            raw = zlib.decompressobj(wbits).decompress(raw, limit)
            note = f"Decoded from {encoding}."
        except zlib.error:
            try:
                raw = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, limit)  # raw deflate, as some servers send
                note = f"Decoded from {encoding}."
            except zlib.error:
                return "", f"The body is {encoding}-encoded and was cut short or is damaged: not shown."
    elif encoding and encoding != "identity":
        return "", f"The body is {encoding}-encoded: {len(raw)} bytes, not decoded here."
    if not raw:
        return "", note
    textual = any(t in content_type.lower() for t in _TEXT_TYPES) or b"\x00" not in raw[:1024]
    if not textual:
        return "", f"A binary body ({content_type or 'no Content-Type'}): not shown."
    charset = "utf-8"
    if "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        return raw.decode(charset, errors="replace"), note
    except LookupError:
        return raw.decode("utf-8", errors="replace"), note
