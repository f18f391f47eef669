"""Hostile and malformed input against a real worker: every case gets a clean 4xx/5xx or a
closed connection, never reaches the backend as a second (smuggled) request, and leaves the
worker serving everyone else."""

from __future__ import annotations

import os
import socket
import ssl

import pytest

from .conftest import get, site, snapshot

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: evil.test\r\n\r\n"

CASES = {
    "content-length and transfer-encoding together": (
        b"POST / HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    ),
    "transfer-encoding then content-length": (
        b"POST / HTTP/1.1\r\nHost: evil.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED
    ),
    "two different content-lengths": b"POST / HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + SMUGGLED,
    "obfuscated transfer-encoding": b"POST / HTTP/1.1\r\nHost: evil.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "transfer-encoding with a space before the colon": (
        b"POST / HTTP/1.1\r\nHost: evil.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED
    ),
    "absurd content-length": b"POST / HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: evil.test\r\nContent-Length: -5\r\n\r\n",
    "absurd chunk size": b"POST / HTTP/1.1\r\nHost: evil.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nab\r\n",
    "request line without a target": b"GET\r\nHost: evil.test\r\n\r\n",
    "unknown HTTP version": b"GET / HTTP/9.9\r\nHost: evil.test\r\n\r\n",
    "bare LF line endings": b"GET / HTTP/1.1\nHost: evil.test\n\n",
    "a very long request line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    "random bytes": os.urandom(2048),
    "a TLS record that is not a ClientHello": b"\x16\x03\x01\x00\x30" + os.urandom(48),
}


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the worker closed on us mid-send: acceptable
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_cleanly_and_never_smuggled(name, backend_factory, worker_factory):
    origin = backend_factory()
    w = worker_factory(snapshot(site("evil.test", [origin])))
    reply = exchange(w.http_port, CASES[name])
    if reply:
        status_line = reply.split(b"\r\n", 1)[0]
        assert status_line[:9] == b"HTTP/1.1 " and status_line[9:10] in (b"4", b"5"), (name, status_line)
        assert reply.count(b"HTTP/1.1 ") == 1, f"{name}: more than one response: a second request got through"
    assert all(path != "/smuggled" for _, path, _ in origin.requests), f"{name}: the backend saw a smuggled request"
    # the worker is alive and serves other clients
    assert get(w, "evil.test").status == 200
    assert w.proc.poll() is None


def test_a_tls_handshake_with_garbage_does_not_stop_tls_for_others(backend_factory, worker_factory, test_ca):
    origin = backend_factory()
    chain, key, _ = test_ca.issue("evil.test")
    from proxyworker import snapshot as snap

    s = snapshot(site("evil.test", [origin]), certificates=[snap.Certificate(id="c1", hostnames=["evil.test"],
                                                                              chain_pem=chain, key_pem=key)])
    w = worker_factory(s)
    for _ in range(3):
        exchange(w.https_port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500))
    ctx = test_ca.client_context()
    with socket.create_connection(("127.0.0.1", w.https_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="evil.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(12) == b"HTTP/1.1 200"
    assert isinstance(ctx, ssl.SSLContext)
