"""The worker's replacements inside mitmproxy answer exactly as the originals did."""

from __future__ import annotations

import asyncio

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

    loop = new_loop()
    try:
        assert loop.run_until_complete(main()) == 3
    finally:
        loop.close()
    assert steps[-1] == "slow finished"


def test_the_worker_chooses_uvloop_unless_told_otherwise():
    assert server.loop_factory("auto") is uvloop.new_event_loop
    assert server.loop_factory("uvloop") is uvloop.new_event_loop
    assert server.loop_factory("asyncio") is None  # asyncio.run's default loop
