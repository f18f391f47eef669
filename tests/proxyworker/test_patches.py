"""The worker's replacements inside mitmproxy answer exactly as the originals did."""

from __future__ import annotations

import asyncio
import threading
import typing
import uuid

import pytest
import uvloop
from mitmproxy.coretypes.multidict import _MultiDict
from mitmproxy.http import Headers

from proxyworker import patches, server

FIELDS = [
    (b"Host", b"a.test"),
    (b"Accept", b"text/html"),
    (b"X-Forwarded-For", b"10.0.0.1"),
    (b"x-forwarded-for", b"10.0.0.2"),  # repeated, other case: folded with ", "
    (b"X-Odd", b"caf\xc3\xa9 \xff"),  # UTF-8 and an invalid byte (surrogateescape)
    (b"Empty", b""),
]
NAMES = ["host", "HOST", b"host", "x-forwarded-for", "X-Odd", "x-odd", "empty", "content-length", b"missing", "caf\xe9"]


@pytest.mark.parametrize("name", NAMES)
def test_header_lookups_match_mitmproxys_own(name):
    h = Headers(FIELDS)
    values = h.get_all(name)
    expected = ", ".join(values) if values else None
    assert patches._headers_get(h, name) == expected
    assert patches._headers_get(h, name, "default") == (expected if values else "default")
    assert patches._headers_contains(h, name) == bool(values)
    if values:
        assert patches._headers_getitem(h, name) == _MultiDict.__getitem__(h, name)
    else:
        with pytest.raises(KeyError):
            patches._headers_getitem(h, name)


def test_header_lookups_see_every_change():
    h = Headers(FIELDS)
    assert patches._headers_get(h, "host") == "a.test"  # builds the index
    h["host"] = "b.test"
    assert patches._headers_get(h, "Host") == "b.test"
    h.add("X-Forwarded-For", "10.0.0.3")
    assert patches._headers_get(h, "x-forwarded-for") == "10.0.0.1, 10.0.0.2, 10.0.0.3"
    del h["accept"]
    assert not patches._headers_contains(h, "accept")
    h.fields = ((b"Accept", b"*/*"),)
    assert patches._headers_get(h, "accept") == "*/*"
    assert patches._headers_get(h, "host") is None


def test_a_non_string_key_is_never_contained():
    assert patches._headers_contains(Headers(FIELDS), 42) is False


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_the_eager_task_factory_runs_on_both_loops(new_loop):
    """mitmproxy installs asyncio's eager task factory, which uvloop calls with an argument it
    does not take; the replacement takes it, and tasks still start eagerly on both loops."""
    steps = []

    async def quick():
        steps.append("quick ran")
        return 1

    async def slow():
        steps.append("slow started")
        await asyncio.sleep(0)
        steps.append("slow finished")
        return 2

    async def main():
        with patches._set_eager_task_factory():
            a, b = asyncio.create_task(quick()), asyncio.create_task(slow())
            assert a.done() and not b.done()  # ran up to the first suspension inside create_task
            assert steps == ["quick ran", "slow started"]
            return await a + await b

    # In a thread of its own: other tests of the session may leave a loop running in this one.
    results = []

    def run():
        loop = new_loop()
        try:
            results.append(loop.run_until_complete(main()))
        finally:
            loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert results == [3]
    assert steps[-1] == "slow finished"


def test_the_worker_chooses_uvloop_unless_told_otherwise():
    assert server.loop_factory("auto") is uvloop.new_event_loop
    assert server.loop_factory("uvloop") is uvloop.new_event_loop
    assert server.loop_factory("asyncio") is None  # asyncio.run's default loop


def test_option_reads_copy_only_what_could_be_changed_in_place():
    from mitmproxy import optmanager

    opt = optmanager._Option("modes", typing.Sequence[str], ["reverse:http://a"], "help", None)
    assert patches._option_current(opt) == ["reverse:http://a"]
    assert patches._option_current(opt) is not opt._default  # a list: still a copy
    opt.set(["regular"])
    got = patches._option_current(opt)
    got.append("changed")
    assert opt.value == ["regular"]
    flag = optmanager._Option("flag", bool, False, "help", None)
    assert patches._option_current(flag) is False
    flag.set(True)
    assert patches._option_current(flag) is True


def test_hook_arguments_are_the_dataclass_fields_in_order():
    from mitmproxy.proxy.layers.http._hooks import HttpRequestHook
    from mitmproxy.test import tflow

    f = tflow.tflow()
    hook = HttpRequestHook(f)
    assert patches._hook_args(hook) == [f]
    assert patches._hook_args(hook) == [f]  # from the per-class cache


def test_generated_ids_are_version_4_uuids_and_differ():
    ids = {patches._uuid4() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


def test_writes_of_one_server_event_leave_in_one_piece_and_in_order():
    class Transport(asyncio.WriteTransport):
        def __init__(self):
            super().__init__()
            self.calls: list = []

        def write(self, data):
            self.calls.append(bytes(data))

        def write_eof(self):
            self.calls.append("eof")

        def close(self):
            self.calls.append("close")

        def is_closing(self):
            return False

    loop = asyncio.new_event_loop()
    try:
        transport = Transport()
        protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop)
        io = patches._ConnectionIO(writer=asyncio.StreamWriter(transport, protocol, None, loop))
        w = io.writer
        assert isinstance(w, patches._CoalescingWriter)
        w.write(b"HTTP/1.1 200 OK\r\n\r\n")
        w.write(b"body")
        assert transport.calls == []  # held until the server_event call returns
        patches._flush_writes()
        assert transport.calls == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        w.write(b"last")
        w.write_eof()  # what was written goes first
        w.write(b"x")
        w.close()
        assert transport.calls[1:] == [b"last", "eof", b"x", "close"]
        assert patches._UNFLUSHED == [] or all(not p._pending for p in patches._UNFLUSHED)
    finally:
        patches._UNFLUSHED.clear()
        loop.close()


def test_a_forked_context_is_the_original_one_with_its_own_layer_list():
    from mitmproxy.proxy import context
    from mitmproxy.test import tflow

    ctx = context.Context(tflow.tclient_conn(), object())
    ctx.layers.append("outer")
    forked = patches._context_fork(ctx)
    expected = context.Context.fork(ctx)  # mitmproxy's own, unless patched in this process
    for f in (forked, expected):
        assert (f.client, f.options, f.server, f.layers) == (ctx.client, ctx.options, ctx.server, ["outer"])
    forked.layers.append("inner")
    assert ctx.layers == ["outer"]
