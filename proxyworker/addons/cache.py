"""The shared HTTP cache (RFC 9111), answered before any upstream is contacted.

Two addon objects share one ``Cache``:

- ``Cache`` sits before the balancer. ``requestheaders`` computes the key, and a fresh stored
  response becomes ``flow.response`` right there (``X-Cache: HIT``): the balancer, the upstream
  connection and the compressor never run. A stale one within ``stale-while-revalidate`` is served
  (``STALE``) while one background request revalidates it. Otherwise the request goes upstream,
  made conditional with the stored validators; concurrent misses for one key wait for the first
  (per process with a future, across the node's processes with a lock file) and are then served
  from what it stored.
- ``CacheWriter`` sits last, after compression, so that what is stored is exactly what a client
  with that ``Accept-Encoding`` gets: each coding is its own variant (a ``Vary: Accept-Encoding``
  keys on the negotiated coding, not on the raw header), and a hit costs no compression. It turns
  an origin's 304 into the refreshed stored response (``REVALIDATED``), an origin failure into the
  stale response when ``stale-if-error`` allows it (``STALE``), and stores what is storable
  (``MISS``). Requests the cache must not answer are marked ``BYPASS``.

The ``Cache`` also applies purges: the node's agent drops purge files into
``<snapshot dir>/purges/``; one process claims each (an atomic rename), deletes the matching entry
files, and leaves a receipt in ``purges/done/``. Deleted files invalidate the other processes'
memory copies at their next ``stat``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from urllib.parse import urlsplit

from mitmproxy import http

from proxyworker import compression
from proxyworker import snapshot as snap
from proxyworker.addons.router import hostname_of
from proxyworker.cache import rules as rfc
from proxyworker.cache.rules import SiteRules, rules_for
from proxyworker.cache.store import LOCK_SECONDS, Entry, Store
from proxyworker.forwarded import client_https, client_ip
from proxyworker.tables import Live
from proxyworker.upstream import UpstreamError, fetch

logger = logging.getLogger(__name__)

HIT, MISS, STALE, BYPASS, REVALIDATED = "HIT", "MISS", "STALE", "BYPASS", "REVALIDATED"
RECEIPT_SECONDS = 3600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Never stored: per-request or per-connection fields, and what is recomputed on every answer.
_NOT_STORED = frozenset(
    {
        b"x-request-id", b"set-cookie", b"age", b"x-cache", b"cache-tag", b"connection", b"keep-alive",
        b"transfer-encoding", b"content-length", b"proxy-connection", b"trailer", b"upgrade",
    }
)  # fmt: skip
# An origin's 304 updates the stored fields (RFC 9111 §4.3.4) except these, which describe the
# stored body (its coding and length may be ours) or the exchange itself.
_NOT_FRESHENED = _NOT_STORED | {b"content-encoding", b"etag", b"content-type"}
# RFC 9110 §15.4.5: what a 304 carries.
_IN_304 = frozenset({b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"})
_CONDITIONALS = (b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range")


class Pending:
    """What the cache decided for one request, carried in ``flow.metadata["portico.cache"]``."""

    __slots__ = (
        "rules", "status", "site_id", "host", "url_path", "primary", "reqh", "ae", "coding_class", "entry",
        "entry_key", "revalidating", "client_inm", "client_ims", "origin_set_cookie", "leader", "lock",
        "invalidate", "purge_mark",
    )  # fmt: skip

    def __init__(self, rules: SiteRules):
        self.rules = rules
        self.status = MISS
        self.primary = ""
        self.entry: Entry | None = None
        self.entry_key = ""
        self.revalidating = False
        self.client_inm: str | None = None
        self.client_ims: str | None = None
        self.origin_set_cookie = False
        self.leader: str | None = None
        self.lock: str | None = None
        self.invalidate = False
        self.purge_mark = 0


def _variant(vary: tuple[str, ...], reqh: dict[bytes, bytes], coding_class: str) -> str:
    """RFC 9111 §4.1: the request's values of the fields the stored response varies on."""
    if not vary:
        return ""
    values = []
    for name in vary:
        if name == "accept-encoding":
            values.append(coding_class)
        else:
            values.append(reqh.get(name.encode("latin-1"), b"").decode("latin-1"))
    return "\x00".join(values)


_new = object.__new__


def _response(status: int, reason: bytes, fields: tuple, body: bytes, now: float) -> http.Response:
    """``http.Response(...)`` without its per-field type checks and header validation, which cost
    ~75 µs, more than the rest of a hit: the fields were validated when the response was stored."""
    headers = _new(http.Headers)
    headers.fields = fields
    data = _new(http.ResponseData)
    data.__dict__.update(
        http_version=b"HTTP/1.1", status_code=status, reason=reason, headers=headers, content=body, trailers=None,
        timestamp_start=now, timestamp_end=now,
    )  # fmt: skip
    response = _new(http.Response)
    response.data = data
    return response


def _carry(old: http.Response | None, new: http.Response) -> None:
    """Per-request fields the earlier addons put on the response being replaced."""
    if old is None:
        return
    for name in ("x-request-id", "strict-transport-security"):
        value = old.headers.get(name)
        if value is not None:
            new.headers[name] = value


class Cache:
    def __init__(
        self,
        live: Live,
        *,
        directory: str,
        purge_dir: str,
        max_bytes: int,
        memory_bytes: int,
        lock_timeout: float = 10.0,
        upstream_timeout: float = 60.0,
        purge_poll: float = 0.05,
    ):
        self.live = live
        self.store = Store(directory, max_bytes=max_bytes, memory_bytes=memory_bytes)
        self.purge_dir = purge_dir
        self.lock_timeout = lock_timeout
        self.upstream_timeout = upstream_timeout
        self.purge_poll = purge_poll
        self._inflight: dict[str, asyncio.Future] = {}
        self._revalidating: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._evicting = False

    @classmethod
    def from_settings(cls, live: Live, settings) -> Cache:
        """The node's cache: ``<snapshot dir>/cache`` unless ``--cache-dir``; purges from the agent
        arrive in ``<snapshot dir>/purges``."""
        folder = os.path.dirname(os.path.abspath(settings.snapshot))
        return cls(
            live,
            directory=settings.cache_dir or os.path.join(folder, "cache"),
            purge_dir=os.path.join(folder, "purges"),
            max_bytes=settings.cache_max_bytes,
            memory_bytes=settings.cache_memory_bytes,
            upstream_timeout=settings.upstream_timeout,
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def running(self) -> None:
        self._spawn(self._watch_purges())

    def done(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- lookup -------------------------------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        site = flow.metadata.get("portico.site")
        if site is None:
            return
        rules = rules_for(site)
        if rules is None:
            return
        req = flow.request
        reqh = {k.lower(): v for k, v in req.headers.fields}
        if b"upgrade" in reqh:
            return  # WebSocket handshakes are not cacheable exchanges
        p = Pending(rules)
        flow.metadata["portico.cache"] = p
        path = flow.metadata.get("portico.client_path") or req.path
        p.site_id = site.id
        authority = reqh.get(b"host")
        p.host = hostname_of(authority.decode("latin-1") if authority is not None else req.host_header or "")
        p.url_path = rules.key_path(path)
        p.primary = f"{'https' if client_https(flow) else 'http'}\x00{site.id}\x00{p.host}\x00{p.url_path}"
        method = req.method
        if method != "GET" and method != "HEAD":
            p.status = BYPASS
            p.invalidate = method not in SAFE_METHODS
            return
        if b"authorization" in reqh or (rules.bypass_on_cookie and b"cookie" in reqh) or rules.bypassed(path):
            p.status = BYPASS
            return
        ae = reqh.get(b"accept-encoding")
        p.ae = ae.decode("latin-1") if ae is not None else None
        p.reqh = reqh
        p.coding_class = rules.coding_class(p.ae)
        entry, key = self._lookup(p, refresh_vary=False)
        if entry is not None and self._answer_from(flow, p, entry, key):
            return
        # Going upstream: note the purge folder's state, so that a response fetched before a purge
        # is not stored after it (see _store).
        p.purge_mark = self._purge_mark()
        if method == "HEAD":
            return  # a HEAD miss is only forwarded
        # Misses and revalidations alike: concurrent requests for an expired hot key make one
        # (conditional) origin request, and the others are answered from its result.
        await self._coalesce(flow, p)

    def _lookup(self, p: Pending, refresh_vary: bool) -> tuple[Entry | None, str]:
        store = self.store
        primary = p.primary
        vary = store.vary_names(primary, refresh=refresh_vary)
        variant = _variant(vary, p.reqh, p.coding_class)
        key = f"{primary}\x01{variant}"
        entry = store.lookup(key, primary, variant)
        if entry is None and not refresh_vary:
            # Another process may have stored this URL with a Vary this process has not seen yet.
            fresh_vary = store.vary_names(primary, refresh=True)
            if fresh_vary != vary:
                variant = _variant(fresh_vary, p.reqh, p.coding_class)
                key = f"{primary}\x01{variant}"
                entry = store.lookup(key, primary, variant)
        if entry is not None and entry.encoding and entry.encoding != p.coding_class:
            # A body the origin encoded itself: serve it only to clients that can decode it.
            if not compression.accepts(p.ae, entry.encoding):
                return None, key
        return entry, key

    def _answer_from(self, flow: http.HTTPFlow, p: Pending, entry: Entry, key: str) -> bool:
        """Serve ``entry`` if it is fresh (or stale within stale-while-revalidate); else prepare the
        upstream request to validate it. True when answered."""
        now = time.time()
        age = entry.age(now)
        if age < entry.lifetime and not entry.no_cache:  # RFC 9111 §4.2: fresh
            self._serve(flow, p, entry, age, HIT)
            return True
        stale_for = age - entry.lifetime
        if not entry.must_revalidate and not entry.no_cache and stale_for < entry.swr:
            # RFC 5861 §3: serve stale at once, revalidate in the background (once per key).
            self._serve(flow, p, entry, age, STALE)
            if key not in self._revalidating:
                self._revalidating.add(key)
                self._spawn(self._revalidate(flow, p, entry, key))
            return True
        # RFC 9111 §4.3.1: validate the stored response with the origin; keep it for stale-if-error.
        p.entry, p.entry_key = entry, key
        headers = flow.request.headers
        p.client_inm = headers.get("if-none-match")
        p.client_ims = headers.get("if-modified-since")
        if entry.etag or entry.last_modified:
            for name in _CONDITIONALS:
                if name in p.reqh:
                    del headers[name.decode()]
            if entry.etag:
                headers["if-none-match"] = entry.etag
            if entry.last_modified:
                headers["if-modified-since"] = entry.last_modified
            p.revalidating = True
        return False

    def _serve(self, flow: http.HTTPFlow, p: Pending, entry: Entry, age: float, status: str) -> None:
        self.store.touch(entry, time.monotonic())
        p.status = status
        flow.metadata["portico.cache_hit"] = True
        flow.response = self.response_from(entry, age, status, flow.request.method, p.reqh)

    @staticmethod
    def response_from(
        entry: Entry, age: float, status: str, method: str, reqh: dict[bytes, bytes] | None, client_cond=None
    ) -> http.Response:
        now = time.time()
        tail = ((b"age", str(int(age)).encode()), (b"x-cache", status.encode()))
        if client_cond is not None:
            inm, ims = client_cond
        elif reqh is not None and (b"if-none-match" in reqh or b"if-modified-since" in reqh):
            inm = reqh.get(b"if-none-match")
            ims = reqh.get(b"if-modified-since")
            inm = inm.decode("latin-1") if inm is not None else None
            ims = ims.decode("latin-1") if ims is not None else None
        else:
            inm = ims = None
        if (inm is not None or ims is not None) and 200 <= entry.status < 300:
            if rfc.not_modified(inm, ims, entry.etag, entry.last_modified):
                fields = tuple(f for f in entry.fields if f[0].lower() in _IN_304) + tail
                return _response(304, b"Not Modified", fields, b"", now)
        return _response(entry.status, entry.reason, entry.fields + tail, entry.body if method != "HEAD" else b"", now)

    # --- coalescing ---------------------------------------------------------------------------

    async def _coalesce(self, flow: http.HTTPFlow, p: Pending) -> None:
        """Make concurrent misses for one key wait for the first one's response."""
        ckey = f"{p.primary}\x01{p.coding_class}"
        waiting = self._inflight.get(ckey)
        if waiting is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiting), self.lock_timeout)
            except TimeoutError:
                # The first request never finished (its flow vanished without a response or an
                # error hook): let the next miss lead instead of waiting behind it forever.
                if self._inflight.get(ckey) is waiting:
                    del self._inflight[ckey]
            self._after_wait(flow, p)
            return
        # This request leads for the process; register before any await.
        self._inflight[ckey] = asyncio.get_running_loop().create_future()
        p.leader = ckey
        lock = self.store.lock_path(p.primary, p.coding_class)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                p.lock = lock
                return  # this process leads for the node: go upstream
            except FileNotFoundError:
                os.makedirs(os.path.dirname(lock), exist_ok=True)
                continue
            except FileExistsError:
                pass
            try:
                if time.time() - os.stat(lock).st_mtime > LOCK_SECONDS:
                    os.unlink(lock)  # left by a process that died mid-request
                    continue
            except OSError:
                continue
            if time.monotonic() > deadline:
                return  # waited long enough: fetch it ourselves, without the lock
            # Another process is fetching this key: wait for its response to appear.
            await asyncio.sleep(0.01)
            entry, key = self._lookup(p, refresh_vary=True)
            if entry is not None and self._answer_from(flow, p, entry, key):
                self._release(p)
                return

    def _after_wait(self, flow: http.HTTPFlow, p: Pending) -> None:
        entry, key = self._lookup(p, refresh_vary=False)
        if entry is not None:
            self._answer_from(flow, p, entry, key)

    def _release(self, p: Pending) -> None:
        if p.leader is not None:
            future = self._inflight.pop(p.leader, None)
            if future is not None and not future.done():
                future.set_result(None)
            p.leader = None
        if p.lock is not None:
            try:
                os.unlink(p.lock)
            except OSError:
                pass
            p.lock = None

    # --- what came back -----------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        p = flow.metadata.get("portico.cache")
        if p is not None and p.status is not HIT and flow.response is not None and "set-cookie" in flow.response.headers:
            # Only the origin's cookies count here: the balancer adds its sticky cookie later.
            p.origin_set_cookie = True

    def finish(self, flow: http.HTTPFlow) -> None:
        """CacheWriter's response hook: the response as every other addon left it."""
        p: Pending | None = flow.metadata.get("portico.cache")
        if p is None:
            return
        resp = flow.response
        try:
            if resp is None or p.status in (HIT, STALE):
                return
            if p.status == BYPASS:
                # RFC 9111 §4.4: a successful unsafe request invalidates the stored target URI.
                if p.invalidate and 200 <= resp.status_code < 400:
                    for scheme in ("http", "https"):
                        self.store.delete_url(scheme + p.primary[p.primary.index("\x00") :])
                resp.headers["x-cache"] = BYPASS
                return
            entry = p.entry
            if entry is not None:
                if resp.status_code == 304 and p.revalidating:
                    fresh = self._freshen(p, entry, resp.headers.fields)
                    answer = self.response_from(fresh or entry, 0, REVALIDATED, flow.request.method, None, (p.client_inm, p.client_ims))
                    _carry(resp, answer)
                    flow.response = answer
                    return
                if (resp.status_code >= 500 or flow.metadata.get("portico.local")) and self._may_serve_stale(entry):
                    self._serve_stale_instead(flow, p, entry)
                    return
            if flow.request.method == "GET" and not flow.metadata.get("portico.local"):
                self._store(flow, p, resp)
            if "cache-tag" in resp.headers:
                del resp.headers["cache-tag"]  # the origin's tags are for purging, not for clients
            resp.headers["x-cache"] = MISS
        finally:
            self._release(p)

    def error(self, flow: http.HTTPFlow) -> None:
        """CacheWriter's error hook: the origin could not be reached or dropped the connection."""
        p: Pending | None = flow.metadata.get("portico.cache")
        if p is None:
            return
        entry = p.entry
        if (
            entry is not None
            and flow.metadata.get("portico.can_replace")
            and "portico.replacement" not in flow.metadata
            and self._may_serve_stale(entry)
        ):
            # RFC 5861 §4 stale-if-error: the stale response replaces the error page.
            p.status = STALE
            flow.metadata["portico.cache_hit"] = True
            flow.metadata["portico.replacement"] = self.response_from(entry, entry.age(time.time()), STALE, flow.request.method, p.reqh)
            self._release(p)
            return
        if "portico.replacement" not in flow.metadata:
            self._release(p)  # otherwise the replacement still passes through finish()

    def _may_serve_stale(self, entry: Entry) -> bool:
        return not entry.must_revalidate and entry.age(time.time()) - entry.lifetime < entry.sie

    def _serve_stale_instead(self, flow: http.HTTPFlow, p: Pending, entry: Entry) -> None:
        p.status = STALE
        answer = self.response_from(entry, entry.age(time.time()), STALE, flow.request.method, p.reqh)
        _carry(flow.response, answer)
        flow.response = answer

    # --- storing ------------------------------------------------------------------------------

    def _make_entry(
        self, p: Pending, status: int, reason: bytes, fields, body: bytes, request_time: float, response_time: float
    ) -> tuple[Entry, tuple[str, ...]] | None:
        """An Entry for a response, or None when RFC 9111 §3 (or the site) says not to store it."""
        headers = http.Headers(fields)
        cc = rfc.parse_cache_control(",".join(headers.get_all("cache-control")))
        if not rfc.storable(status, cc, "expires" in headers):
            return None
        vary_names: list[str] = []
        for value in headers.get_all("vary"):
            for name in value.split(","):
                name = name.strip().lower()
                if name == "*":
                    return None  # RFC 9111 §4.1: never matches a later request
                if name and name not in vary_names:
                    vary_names.append(name)
        rules = p.rules
        if len(body) > rules.max_object_bytes:
            return None
        date = rfc.http_date(headers.get("date"))
        lifetime = rfc.freshness_lifetime(
            cc, headers.get("expires"), date, rules.ttl_override(p.url_path), rules.default_ttl, rules.max_ttl
        )
        etag = headers.get("etag")
        last_modified = headers.get("last-modified")
        no_cache = "no-cache" in cc
        if lifetime <= 0 and not etag and not last_modified:
            return None  # stale at once and impossible to validate: storing it would never help
        swr = rfc.seconds(cc.get("stale-while-revalidate")) if "stale-while-revalidate" in cc else rules.swr
        sie = rfc.seconds(cc.get("stale-if-error")) if "stale-if-error" in cc else rules.sie
        tags = tuple(t.strip() for value in headers.get_all("cache-tag") for t in value.split(",") if t.strip())
        kept = tuple((k, v) for k, v in fields if k.lower() not in _NOT_STORED and k.lower() not in rules.not_stored)
        if b"strict-transport-security" in {k.lower() for k, _ in kept}:
            kept = tuple((k, v) for k, v in kept if k.lower() != b"strict-transport-security")
        kept += ((b"content-length", str(len(body)).encode()),)
        coding = headers.get("content-encoding", "").strip().lower()
        entry = Entry(
            site=p.site_id, host=p.host, url_path=p.url_path, scheme=p.primary.partition("\x00")[0], status=status,
            reason=reason, fields=kept, body=body, stored_at=response_time,
            initial_age=rfc.initial_age(headers.get("age"), date, request_time, response_time), lifetime=lifetime,
            swr=swr or 0, sie=sie or 0,
            # §5.2.2.2 must-revalidate; §5.2.2.8 proxy-revalidate; §5.2.2.10 s-maxage implies it too.
            must_revalidate="must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc,
            no_cache=no_cache, etag=etag, last_modified=last_modified, tags=tags,
            encoding=coding if coding and coding != "identity" else None,
        )  # fmt: skip
        return entry, tuple(vary_names)

    def _purge_mark(self) -> int:
        try:
            return os.stat(self.purge_dir).st_mtime_ns
        except OSError:
            return 0

    def _store(self, flow: http.HTTPFlow, p: Pending, resp: http.Response) -> None:
        if p.origin_set_cookie or resp.stream or resp.raw_content is None:
            return
        if p.purge_mark != self._purge_mark():
            # A purge arrived (the agent wrote it, a process claimed it) while this response was on
            # its way: it may predate the purge, so it is not stored. Rare and harmless otherwise.
            return
        # The stored etag is the origin's validator: compression weakens the client-facing one.
        fields = resp.headers.fields
        origin_etag = flow.metadata.get("portico.origin_etag")
        made = self._make_entry(
            p, resp.status_code, resp.data.reason, fields, resp.raw_content,
            flow.request.timestamp_start, resp.timestamp_end or time.time(),
        )  # fmt: skip
        if made is None:
            return
        entry, vary = made
        if origin_etag is not None:
            entry.etag = origin_etag
        self._put(p, entry, vary)

    def _put(self, p: Pending, entry: Entry, vary: tuple[str, ...]) -> None:
        variant = _variant(vary, p.reqh, p.coding_class)
        self.store.put(f"{p.primary}\x01{variant}", p.primary, variant, vary, entry)
        if self.store.needs_eviction_scan() and not self._evicting:
            self._evicting = True
            self._spawn(self._evict())

    def _freshen(self, p: Pending, entry: Entry, fields_304) -> Entry | None:
        """RFC 9111 §4.3.4: a 304 updates the stored response's fields and its freshness."""
        updated = http.Headers(entry.fields)
        names = {k.lower() for k, _ in fields_304 if k.lower() not in _NOT_FRESHENED}
        for name in names:
            updated.set_all(name.decode("latin-1"), [v.decode("latin-1") for k, v in fields_304 if k.lower() == name])
        now = time.time()
        made = self._make_entry(p, entry.status, entry.reason, updated.fields, entry.body, now, now)
        if made is None:
            self.store.delete(p.entry_key, entry)
            return None
        fresh, vary = made
        fresh.etag = entry.etag or fresh.etag
        fresh.encoding = entry.encoding
        self._put(p, fresh, vary)
        return fresh

    async def _revalidate(self, flow: http.HTTPFlow, p: Pending, entry: Entry, key: str) -> None:
        """Background revalidation (stale-while-revalidate): a 304 refreshes the entry; a new body
        drops it, so that the next request fetches it through the whole pipeline."""
        try:
            route = flow.metadata.get("portico.route")
            if route is None:
                return
            backend = route.pool.pick_backend(client_ip(flow), time.monotonic())
            if backend is None:
                return
            req = flow.request
            headers = [(k, v) for k, v in req.headers.fields if k.lower() not in _CONDITIONALS and k.lower() != b"connection"]
            if entry.etag:
                headers.append((b"if-none-match", entry.etag.encode("latin-1")))
            if entry.last_modified:
                headers.append((b"if-modified-since", entry.last_modified.encode("latin-1")))
            try:
                status, resp_fields, _ = await fetch(backend, "GET", req.path, headers, b"", timeout=self.upstream_timeout)
            except UpstreamError as exc:
                logger.info("background revalidation of %s failed: %s", req.path, exc)
                return
            p.entry_key = key
            if status == 304:
                self._freshen(p, entry, resp_fields)
            elif status < 500:
                self.store.delete(key, entry)
        finally:
            self._revalidating.discard(key)

    async def _evict(self) -> None:
        try:
            deleted, total = await asyncio.to_thread(self.store.evict)
            if deleted:
                logger.info("cache eviction: %d entries deleted, %d bytes left", deleted, total)
        finally:
            self._evicting = False

    # --- purges -------------------------------------------------------------------------------

    async def _watch_purges(self) -> None:
        done_dir = os.path.join(self.purge_dir, "done")
        next_prune = 0.0
        while True:
            await asyncio.sleep(self.purge_poll)
            if time.monotonic() > next_prune:
                next_prune = time.monotonic() + 600
                _prune(done_dir, RECEIPT_SECONDS)
            try:
                names = sorted(n for n in os.listdir(self.purge_dir) if n.endswith(".json") and not n.startswith("."))
            except FileNotFoundError:
                continue
            for name in names:
                source = os.path.join(self.purge_dir, name)
                claimed = os.path.join(self.purge_dir, f".{name}.{os.getpid()}.applying")
                try:
                    os.rename(source, claimed)  # atomic: exactly one process applies each purge
                except FileNotFoundError:
                    continue
                try:
                    with open(claimed, "rb") as fh:
                        message = json.load(fh)
                    started = time.monotonic()
                    removed = await asyncio.to_thread(self.apply_purge, message)
                    receipt = {"id": message.get("id"), "removed": removed, "applied_at": time.time(), "pid": os.getpid(),
                               "seconds": round(time.monotonic() - started, 4)}  # fmt: skip
                    logger.info("purge %s (%s %s): %d entries removed", message.get("id"), message.get("purge_kind"),
                                message.get("value"), removed)  # fmt: skip
                except Exception as exc:  # a bad file must not stop the watcher
                    logger.error("purge file %s could not be applied: %s", name, exc)
                    receipt = {"error": str(exc), "applied_at": time.time(), "pid": os.getpid()}
                os.makedirs(done_dir, exist_ok=True)
                snap.write_file_atomic(os.path.join(done_dir, name), json.dumps(receipt).encode())
                try:
                    os.unlink(claimed)
                except OSError:
                    pass

    def apply_purge(self, message: dict) -> int:
        """Delete what a purge message covers. Returns how many stored responses were removed."""
        kind = message.get("purge_kind")
        value = message.get("value") or ""
        sites = set(message.get("sites") or ())
        if message.get("site"):
            sites.add(message["site"])
        if not sites:
            # A purge always names the sites it covers: one that names none must never become
            # "every tenant's cache" (an organization without sites purging "all").
            logger.warning("purge %s names no site: nothing removed", message.get("id"))
            return 0
        if kind in ("url", "prefix"):
            parts = urlsplit(value)
            try:
                host = snap.normalize_hostname(parts.hostname or "")
            except ValueError:
                return 0
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if kind == "url":
                removed = 0
                by_id = {s.id: s for s in self.live.tables.sites}
                for site_id in sites:
                    table = by_id.get(site_id)
                    site_rules = rules_for(table) if table is not None else None
                    key_path = site_rules.key_path(path) if site_rules is not None else path
                    for scheme in ("http", "https"):
                        removed += self.store.delete_url(f"{scheme}\x00{site_id}\x00{host}\x00{key_path}")
                return removed
            return self.store.delete_matching(lambda s, h, p, t: s in sites and h == host and p.startswith(path))
        if kind == "tag":
            return self.store.delete_matching(lambda s, h, p, t: s in sites and value in t)
        if kind == "all":
            return self.store.delete_matching(lambda s, h, p, t: s in sites)
        raise ValueError(f"unknown purge kind {kind!r}")


def _prune(folder: str, older_than: float) -> None:
    """Receipts are read by the agent within seconds; keep an hour of them for people."""
    limit = time.time() - older_than
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                try:
                    if e.stat().st_mtime < limit:
                        os.unlink(e.path)
                except OSError:
                    pass
    except OSError:
        pass


class CacheWriter:
    """The cache's second half, placed after compression: stores and finishes the exchange."""

    def __init__(self, cache: Cache):
        self.cache = cache

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Before compression weakens it: the origin's own validator, for revalidating later.
        if flow.metadata.get("portico.cache_hit"):
            return
        p = flow.metadata.get("portico.cache")
        resp = flow.response
        if p is not None and resp is not None:
            etag = resp.headers.get("etag")
            if etag is not None:
                flow.metadata["portico.origin_etag"] = etag

    def response(self, flow: http.HTTPFlow) -> None:
        self.cache.finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.cache.error(flow)
