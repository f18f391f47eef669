"""The few seams where mitmproxy 12 offers no hook, adapted in one place.

Each adaptation replaces one module-level name inside mitmproxy (never a method body), so it is
small, visible, and checked by the tests that exercise the behaviour:

1. ``reuse_port``: mitmproxy binds with ``asyncio.start_server`` and has no SO_REUSEPORT option.
   Its server module gets an ``asyncio`` whose ``start_server`` passes ``reuse_port=True``, so N
   worker processes share one port and the kernel spreads connections over them. With
   ``--cpu-affinity``, a process pinned to one core also marks its listening sockets with that
   core (``SO_INCOMING_CPU``): the kernel then hands it the connections whose packets that core
   handles, so a connection stays on one core from the network stack to the proxy.
2. Failover: mitmproxy connects upstream right after the ``server_connect`` hook, without a timeout
   and without retry. The balancer's async ``server_connect`` hook connects itself (trying other
   backends when one refuses) and parks the open stream in ``PRECONNECTED``; mitmproxy's connect
   call, in the same task, picks it up instead of dialling again.
3. Error pages: mitmproxy's own error responses carry ``Server: mitmproxy`` and its HTML. The
   platform answers with its own page and no Server header.
4. Header size: mitmproxy buffers request headers without a limit (its own FIXME). An incomplete
   HTTP/1 request head larger than the limit is answered 431 and the connection closed.
5. Retry after a lost upstream: when a backend drops the connection (or is cut off after the
   upstream timeout) before answering, mitmproxy sends its error page right after the ``error``
   hook. For a request whose body was fully received, the wrapper lets the ``error`` hook supply a
   replacement response (``flow.metadata["portico.replacement"]``: the balancer's retry on another
   backend, or a 504); the replacement then goes through ``responseheaders``/``response`` like any
   answer. Without one, the original error handling runs unchanged.
6. Hook dispatch: mitmproxy's ``AddonManager.trigger_event`` visits every addon for every event,
   each visit a context manager, a coroutine, a generator and a ``getattr``, and rebuilds the
   event's arguments per addon; every flow event is followed by an ``update`` event nobody here
   handles. With ~15 addons that was most of a cache hit's cost. The replacement calls a list of
   the handlers per event name, built once per addon chain, with the same error handling
   (an addon's exception is logged and the next addon still runs; ``AddonHalt`` stops the event).
7. Header lookups: ``headers.get(name)``, ``name in headers`` and ``headers[name]`` go through
   ``collections.abc``'s mixins to ``get_all``, which decodes every matching value into a new list:
   about 4.5 µs each, and a proxied request makes a few dozen (mitmproxy's HTTP/1 layer, then the
   addons). The replacements keep an index per headers object (lower-cased name -> value, repeated
   headers folded with ``", "`` as mitmproxy does), built in one pass over the raw fields and
   rebuilt after any change.
8. Hook completion: a hook runs in a task that mitmproxy starts eagerly inside ``server_event``;
   when the addons finish without suspending (nearly always), the task then waits for the
   ``server_event`` lock its own caller holds, and the ``HookCompleted`` event is handled one
   event-loop round trip later, four times per request. The replacement queues that event on the
   connection instead, and ``server_event`` handles the queue before it returns, in the order the
   hooks finished; a hook that did suspend completes through the lock as before.
9. Option reads: every ``options.name`` deep-copies the value (``copy.deepcopy`` even of an int or
   a bool); mitmproxy's layers read a dozen options per request. Immutable values (None, bool,
   int, float, str, bytes) are returned as they are; anything else is still deep-copied.
10. Hook arguments: ``Hook.args()`` asks ``dataclasses.fields`` for the hook's fields on every call
    (twice per hook). The field names are looked up once per hook class.
11. Flow and connection ids: ``uuid.uuid4()`` reads the kernel's random source, a system call for
    each of the two ids a request gets. mitmproxy's flow and connection modules draw their
    version-4 UUIDs from ``random`` instead (seeded from the kernel, and again in each forked
    process). The ids name flows within the worker; nothing depends on them being unguessable.
12. Writes: each ``SendData`` command is one ``write`` on the socket, and an HTTP/1 response leaves
    as two (its head, then its body): two system calls and two TCP segments. The connections'
    writers keep what one ``server_event`` sends and write it in one piece when that call
    returns (in order, before any ``write_eof``, ``close`` or ``drain``).
13. Hook plumbing: around the addons, every hook went through a generator-based context manager
    (the timeout watchdog's ``disarm``), built its arguments twice, built an ``update`` event that
    no addon here handles, and awaited ``wait_for_resume`` of a flow nobody intercepts; and each
    hook command re-checked at creation that its class is a dataclass. The replacement of
    ``handle_hook`` does the same steps inline and skips the ``update`` event and the resume wait
    when they cannot matter; the class checks are made once per class.
14. Layer contexts: every request forks the connection's layer context, and the fork first builds
    a complete placeholder server connection (a dataclass of some twenty fields, each set through
    a checking ``__setattr__``, and a new id) that it overwrites on the next line. The replacement
    copies the four attributes the fork consists of.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import copy
import dataclasses
import inspect
import random
import socket
import sys
import types
import uuid

from mitmproxy import addonmanager, connection, exceptions, hooks, optmanager, version
from mitmproxy import flow as mflow
from mitmproxy import http as mhttp
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, context, events, mode_servers
from mitmproxy.proxy import server as proxy_server
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import _http1, _http2
from mitmproxy.proxy.layers.http._events import ResponseProtocolError
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook, HttpResponseHeadersHook
from mitmproxy.utils import asyncio_utils

from proxyworker import pages

# (host, port) -> (reader, writer) opened by the balancer in this connection task.
PRECONNECTED: contextvars.ContextVar[tuple[tuple[str, int], tuple] | None] = contextvars.ContextVar(
    "portico_preconnected", default=None
)

MAX_HEADER_BYTES = 32 * 1024
_applied = False


def _namespace_of(module: types.ModuleType, **overrides) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{**vars(module), **overrides})


async def _open_connection(host, port, *args, **kwargs):
    parked = PRECONNECTED.get()
    if parked is not None and parked[0] == (host, port):
        PRECONNECTED.set(None)
        return parked[1]
    return await asyncio.open_connection(host, port, *args, **kwargs)


def _make_error_response(status_code: int, message: str = "") -> bytes:
    # The engine's message may name internals (addresses, exceptions): log it, don't show it.
    resp = pages.error_response(status_code if status_code in (400, 413, 502, 503, 504) else 502)
    resp.headers["connection"] = "close"
    return http1.assemble_response(resp)


def _format_error(status_code: int, message: str) -> bytes:
    return pages.render(status_code if status_code in (400, 413, 502, 503, 504) else 502)


_original_read_headers = _http1.Http1Server.read_headers


def _read_headers_limited(self, event):
    yield from _original_read_headers(self, event)
    if (
        isinstance(event, events.DataReceived)
        and self.state == self.read_headers
        and len(self.buf) > MAX_HEADER_BYTES
    ):
        resp = pages.error_response(431)
        yield commands.SendData(self.conn, http1.assemble_response(resp))
        yield commands.CloseConnection(self.conn)
        self.buf.clear()
        self.state = self.done


_original_handle_protocol_error = http_layer.HttpStream.handle_protocol_error


def _handle_protocol_error(self, event):
    f = getattr(self, "flow", None)
    if not (
        isinstance(event, ResponseProtocolError)
        and f is not None
        and f.response is None
        and f.error is None
        and "portico.backend" in f.metadata
        and self.client_state == self.state_done  # the whole request is in hand
        and self.server_state == self.state_wait_for_response_headers
    ):
        yield from _original_handle_protocol_error(self, event)
        return
    f.error = mflow.Error(event.message)
    f.metadata["portico.can_replace"] = True
    yield HttpErrorHook(f)
    replacement = f.metadata.pop("portico.replacement", None)
    if replacement is not None:
        f.error = None
        f.response = replacement
        yield HttpResponseHeadersHook(f)
        yield from self.send_response()
        return
    # What mitmproxy does after its error hook (handle_protocol_error, mitmproxy 12.3).
    if (yield from self.check_killed(False)):
        return
    if self.client_state != self.state_errored:
        yield http_layer.SendHttp(event, self.context.client)
    self.server_state = self.state_errored
    f.live = False
    yield http_layer.DropStream(self.stream_id)


def _handlers(manager: addonmanager.AddonManager, event) -> list:
    chain = manager.chain
    cache = manager.__dict__.get("_portico_handlers")
    # Addons are added and removed in place (the chain's length changes); the worker adds its
    # addons once at start-up.
    if cache is None or cache[0] != len(chain):
        cache = (len(chain), {})
        manager.__dict__["_portico_handlers"] = cache
    handlers = cache[1].get(event.name)
    if handlers is None:
        handlers = [func for addon in chain for _, func in manager._iter_hooks(addon, event)]
        cache[1][event.name] = handlers
    return handlers


async def _trigger_event(self: addonmanager.AddonManager, event) -> None:
    """``AddonManager.trigger_event`` (mitmproxy 12.3), with the handler list computed once."""
    handlers = _handlers(self, event)
    if handlers:
        await _call_handlers(handlers, event.args())


async def _call_handlers(handlers: list, args: list) -> None:
    """Each handler in turn; an addon's exception is logged and the next still runs, ``AddonHalt``
    stops the event (as ``AddonManager.trigger_event`` does)."""
    for func in handlers:
        try:
            res = func(*args)
            if res is not None and inspect.isawaitable(res):
                await res
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception as exc:
            etype, value, tb = sys.exc_info()
            tb = addonmanager.cut_traceback(tb, "_call_handlers")
            addonmanager.logger.error(f"Addon error: {exc}", exc_info=(etype, value, tb))


_HEADER_KEYS: dict[str | bytes, bytes] = {}


def _header_key(name: str | bytes) -> bytes:
    key = _HEADER_KEYS.get(name)
    if key is None:
        key = (name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name).lower()
        if len(_HEADER_KEYS) > 4096:  # names come from code and config; never let requests grow it
            _HEADER_KEYS.clear()
        _HEADER_KEYS[name] = key
    return key


def _header_index(headers: mhttp.Headers) -> dict[bytes, str]:
    """Lower-cased name -> folded value, kept until the headers change (``fields`` is a tuple that
    every change replaces; the index holds on to the one it was built from)."""
    fields = headers.fields
    cached = headers.__dict__.get("_portico_index")
    if cached is not None and cached[0] is fields:
        return cached[1]
    index: dict[bytes, str] = {}
    for k, v in fields:
        key = k.lower()
        value = v.decode("utf-8", "surrogateescape")
        found = index.get(key)
        index[key] = value if found is None else f"{found}, {value}"
    headers.__dict__["_portico_index"] = (fields, index)
    return index


def _header_value(headers: mhttp.Headers, name: str | bytes) -> str | None:
    return _header_index(headers).get(_header_key(name))


def _headers_get(self: mhttp.Headers, name, default=None):
    value = _header_value(self, name)
    return default if value is None else value


def _headers_getitem(self: mhttp.Headers, name):
    value = _header_value(self, name)
    if value is None:
        raise KeyError(name)
    return value


def _headers_contains(self: mhttp.Headers, name) -> bool:
    if not isinstance(name, str | bytes):
        return False
    return _header_key(name) in _header_index(self)


_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes})


def _option_current(self: optmanager._Option):
    value = self._default if self.value is optmanager.unset else self.value
    return value if type(value) in _IMMUTABLE else copy.deepcopy(value)


_HOOK_FIELDS: dict[type, tuple[str, ...]] = {}


def _hook_args(self: hooks.Hook) -> list:
    names = _HOOK_FIELDS.get(type(self))
    if names is None:
        names = _HOOK_FIELDS[type(self)] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
    return [getattr(self, name) for name in names]


def _uuid4() -> uuid.UUID:
    return uuid.UUID(int=random.getrandbits(128), version=4)


class _CoalescingWriter:
    """An ``asyncio.StreamWriter`` whose ``write`` waits for the end of the ``server_event`` call."""

    __slots__ = ("_writer", "_pending")

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            _UNFLUSHED.append(self)
        self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            self._writer.write(pending[0])
        elif pending:
            self._writer.write(b"".join(pending))

    def write_eof(self) -> None:
        self.flush()
        self._writer.write_eof()

    def close(self) -> None:
        self.flush()
        self._writer.close()

    async def drain(self) -> None:
        self.flush()
        await self._writer.drain()

    def __getattr__(self, name: str):
        return getattr(self._writer, name)


_UNFLUSHED: list[_CoalescingWriter] = []


def _flush_writes() -> None:
    while _UNFLUSHED:
        _UNFLUSHED.pop().flush()


@dataclasses.dataclass
class _ConnectionIO(proxy_server.ConnectionIO):
    def __post_init__(self) -> None:
        if isinstance(self.writer, asyncio.StreamWriter):
            self.writer = _CoalescingWriter(self.writer)  # type: ignore[assignment]


async def _handle_hook(self: mode_servers.ProxyConnectionHandler, hook: commands.StartHook) -> None:
    """``ProxyConnectionHandler.handle_hook`` (mitmproxy 12.3) with its steps inline."""
    watchdog = self.timeout_watchdog
    watchdog.can_timeout.clear()
    watchdog.blocker += 1
    try:
        args = hook.args()  # once: the handlers get the same list
        (data,) = args
        manager = self.master.addons
        handlers = _handlers(manager, hook)
        if handlers:
            await _call_handlers(handlers, args)
        if isinstance(data, mflow.Flow):
            if _has_update_handlers(manager):
                await manager.trigger_event(hooks.UpdateHook([data]))
            if data.intercepted:
                await data.wait_for_resume()
    finally:
        watchdog.blocker -= 1
        if watchdog.blocker == 0:
            watchdog.register_activity()
            watchdog.can_timeout.set()


_UPDATE = hooks.UpdateHook([])


def _has_update_handlers(manager: addonmanager.AddonManager) -> bool:
    return bool(_handlers(manager, _UPDATE))


_CHECKED_HOOK_CLASSES: set[type] = set()
_hook_new = hooks.Hook.__new__


def _start_hook_new(cls, *args, **kwargs):
    if cls in _CHECKED_HOOK_CLASSES:
        return object.__new__(cls)
    if cls is commands.StartHook:
        raise TypeError("StartHook may not be instantiated directly.")
    hook = _hook_new(cls, *args, **kwargs)  # raises for a class that is not a dataclass
    _CHECKED_HOOK_CLASSES.add(cls)
    return hook


def _context_fork(self: context.Context) -> context.Context:
    """``Context.fork`` (mitmproxy 12.3) without the placeholder server connection."""
    forked = object.__new__(type(self))
    forked.client = self.client
    forked.options = self.options
    forked.server = self.server
    forked.layers = self.layers.copy()
    return forked


_server_event = proxy_server.ConnectionHandler.server_event


async def _server_event_then_completions(self: proxy_server.ConnectionHandler, event: events.Event) -> None:
    try:
        await _server_event(self, event)
    finally:
        _flush_writes()
    completed = self.__dict__.get("_portico_completed")
    while completed:
        try:
            await _server_event(self, completed.popleft())
        finally:
            _flush_writes()


async def _hook_task(self: proxy_server.ConnectionHandler, hook: commands.StartHook) -> None:
    await self.handle_hook(hook)
    if not hook.blocking:
        return
    if self._server_event_lock.locked():
        # The lock is only held while server_event runs without suspending, so it is held by the
        # call that started this task eagerly, further up this very stack: it handles the queue.
        completed = self.__dict__.get("_portico_completed")
        if completed is None:
            completed = self.__dict__["_portico_completed"] = collections.deque()
        completed.append(events.HookCompleted(hook))
    else:
        await self.server_event(events.HookCompleted(hook))


def _eager_task_factory(loop, coro, *, eager_start=None, **kwargs):
    """``asyncio.eager_task_factory`` that also takes the ``eager_start`` uvloop passes."""
    return asyncio.Task(coro, loop=loop, eager_start=True if eager_start is None else eager_start, **kwargs)


@contextlib.contextmanager
def _set_eager_task_factory():
    loop = asyncio.get_running_loop()
    existing = loop.get_task_factory()
    loop.set_task_factory(_eager_task_factory)
    try:
        yield
    finally:
        loop.set_task_factory(existing)


INCOMING_CPU: int | None = None  # the core this process is pinned to, if it is


async def _start_server(*args, **kwargs) -> asyncio.Server:
    server = await asyncio.start_server(*args, reuse_port=True, **kwargs)
    if INCOMING_CPU is not None:
        for sock in server.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_INCOMING_CPU, INCOMING_CPU)
    return server


def apply(*, reuse_port: bool, max_header_bytes: int, incoming_cpu: int | None = None) -> None:
    global _applied, MAX_HEADER_BYTES, INCOMING_CPU
    MAX_HEADER_BYTES = max_header_bytes
    INCOMING_CPU = incoming_cpu
    if _applied:
        return
    _applied = True
    if reuse_port:
        mode_servers.asyncio = _namespace_of(asyncio, start_server=_start_server)  # type: ignore[attr-defined]
    proxy_server.asyncio = _namespace_of(asyncio, open_connection=_open_connection)  # type: ignore[attr-defined]
    _http1.make_error_response = _make_error_response
    _http2.format_error = _format_error
    version.MITMPROXY = "Portico"
    _http1.Http1Server.read_headers = _read_headers_limited
    http_layer.HttpStream.handle_protocol_error = _handle_protocol_error
    addonmanager.AddonManager.trigger_event = _trigger_event
    mhttp.Headers.get = _headers_get
    mhttp.Headers.__getitem__ = _headers_getitem
    mhttp.Headers.__contains__ = _headers_contains
    asyncio_utils.set_eager_task_factory = _set_eager_task_factory
    proxy_server.ConnectionHandler.server_event = _server_event_then_completions
    proxy_server.ConnectionHandler.hook_task = _hook_task
    optmanager._Option.current = _option_current
    proxy_server.ConnectionIO = _ConnectionIO  # type: ignore[misc]
    mode_servers.ProxyConnectionHandler.handle_hook = _handle_hook
    commands.StartHook.__new__ = _start_hook_new  # type: ignore[method-assign]
    context.Context.fork = _context_fork
    hooks.Hook.args = _hook_args
    mflow.uuid = connection.uuid = _namespace_of(uuid, uuid4=_uuid4)  # type: ignore[attr-defined]
