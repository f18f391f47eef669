"""Limits against abuse: body size (413), header size (431), slow headers, connections per IP."""

from __future__ import annotations

import socket
import time

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import get, site, snapshot


def test_body_over_the_site_limit_is_413(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("small.test", [a], max_body_bytes=1000), site("big.test", [a])))
    assert get(w, "small.test", method="POST", body=b"x" * 1000).status == 200
    assert get(w, "small.test", method="POST", body=b"x" * 1001).status == 413
    assert get(w, "big.test", method="POST", body=b"x" * 5000).status == 200
    # chunked, no Content-Length
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"7d0\r\n" + b"y" * 2000 + b"\r\n0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    assert a.hits == 2


def test_oversized_headers_are_431(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("hdr.test", [a])), max_header_bytes=4096)
    assert get(w, "hdr.test", headers={"X-Big": "a" * 3000}).status == 200
    assert get(w, "hdr.test", headers={"X-Big": "a" * 5000}).status == 431
    # a head that never ends is cut off at the limit instead of being buffered forever
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: hdr.test\r\n")
        for _ in range(10):
            s.sendall(b"X-Filler: " + b"b" * 1000 + b"\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 431")
    assert a.hits == 1


def test_slow_headers_are_cut_off(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("slow.test", [a])), header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        s.settimeout(5)
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        try:
            for _ in range(20):  # slowloris: a byte every 0.2 s keeps the connection "active"
                s.sendall(b"X")
                time.sleep(0.2)
        except OSError:
            pass
        try:
            data = s.recv(1024)
        except OSError:
            data = b""
        assert data == b""  # closed without an answer
        assert time.monotonic() - started < 3.5
    assert a.hits == 0


def test_connections_per_client_ip_are_limited(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("conn.test", [a])), max_conns_per_ip=3)
    time.sleep(0.3)  # the start-up probe connections are gone
    held = [socket.create_connection(("127.0.0.1", w.http_port)) for _ in range(3)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", w.http_port)) as extra:
            extra.settimeout(3)
            extra.sendall(b"GET / HTTP/1.1\r\nHost: conn.test\r\n\r\n")
            try:
                assert extra.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert get(w, "conn.test", source="127.0.0.9").status == 200  # another address is not affected
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert get(w, "conn.test").status == 200


def test_hostile_request_heads_are_400_and_never_reach_the_backend(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("evil.test", [a])))
    heads = [
        b"POST / HTTP/1.1\r\nHost: evil.test\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.test\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"G(T / HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    ]
    for head in heads:
        with socket.create_connection(("127.0.0.1", w.http_port)) as s:
            s.settimeout(5)
            s.sendall(head)
            assert s.recv(4096)[:12] == b"HTTP/1.1 400", head
    assert a.hits == 0


def test_idle_keep_alive_connection_is_closed(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("idle.test", [a])), idle_timeout=1.0)
    with socket.create_connection(("127.0.0.1", w.http_port)) as s:
        s.settimeout(5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):  # the whole response: headers and JSON body
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        try:
            assert s.recv(1024) == b""  # the worker hangs up
        except ConnectionResetError:
            pass
        assert 0.5 < time.monotonic() - started < 3


def test_clients_hanging_up_do_not_eject_a_healthy_backend(backend_factory, worker_factory):
    a = backend_factory(delay=0.5)
    hc = snap.HealthCheck(enabled=False, passive_failures=2, eject_seconds=30)
    w = worker_factory(snapshot(site("slow.test", [a], health=hc)))
    for _ in range(5):  # more than passive_failures, each abandoned while the backend works
        s = socket.create_connection(("127.0.0.1", w.http_port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        time.sleep(0.1)
        s.close()
    time.sleep(0.6)
    assert get(w, "slow.test").status == 200  # an ejected only backend would be a 503
