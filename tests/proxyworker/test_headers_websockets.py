"""Forwarding headers, hidden origin headers, request ids, and WebSockets through the worker."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

from tests.proxyworker.conftest import _backend_loop, get, read_ws_frame, site, snapshot, ws_frame


def test_forwarding_headers_reach_the_backend(backend_factory, worker_factory, test_ca):
    a = backend_factory()
    w = worker_factory(snapshot(site("fwd.test", [a])))
    seen = get(w, "fwd.test", headers={"X-Forwarded-For": "203.0.113.9"}).json()["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # appended, not replaced
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "fwd.test"
    assert len(seen["x-request-id"]) == 32
    seen = get(w, "fwd.test", source="127.0.0.5").json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.5"


def test_request_id_is_kept_when_sane_and_echoed_to_the_client(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("rid.test", [a])))
    r = get(w, "rid.test", headers={"X-Request-ID": "abc-123"})
    assert r.json()["headers"]["x-request-id"] == "abc-123"
    assert r.headers["x-request-id"] == "abc-123"
    r = get(w, "rid.test", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.json()["headers"]["x-request-id"] != "bad id\twith spaces"
    assert r.headers["x-request-id"] == r.json()["headers"]["x-request-id"]


def test_origin_revealing_headers_are_removed(backend_factory, worker_factory):
    a, b = backend_factory("plain"), backend_factory("custom")
    w = worker_factory(snapshot(
        site("hide.test", [a]),
        site("hide2.test", [b], hide_response_headers=["x-backend", "server"]),
    ))
    r = get(w, "hide.test")
    assert "server" not in r.headers and "x-powered-by" not in r.headers
    assert r.backend == "plain"
    r = get(w, "hide2.test")
    assert "x-backend" not in r.headers and "server" not in r.headers
    assert r.headers["x-powered-by"] == "PHP/5.1"  # only the configured list


def test_websocket_echo_passes_through(backend_factory, worker_factory):
    a = backend_factory("wsb")
    w = worker_factory(snapshot(site("ws.test", [a])))

    async def talk() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        got = []
        for text in (b"hello", b"x" * 70000):
            writer.write(ws_frame(1, text))
            await writer.drain()
            got.append((await asyncio.wait_for(read_ws_frame(reader), 5))[1])
        writer.write(ws_frame(8, b""))
        await writer.drain()
        writer.close()
        return got

    # on the fixtures' own loop thread: a browser test earlier in the session may leave a loop
    # running in this thread, and asyncio.run() refuses to nest
    assert _backend_loop().run(talk(), timeout=30) == [b"wsb:hello", b"wsb:" + b"x" * 70000]


def test_keep_alive_connection_serves_many_requests(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("ka.test", [a])))
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        f = s.makefile("rb")
        for _ in range(5):
            s.sendall(b"GET / HTTP/1.1\r\nHost: ka.test\r\n\r\n")
            assert f.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
    assert a.hits == 5
