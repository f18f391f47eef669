"""Real backends and real worker processes on 127.0.0.1, for every proxy-worker test.

Fixtures (reusable by later issues' tests):

- ``backend_factory(name=None, *, tls=None, status=200, delay=0.0, health_status=200, load=None,
  headers=None, body=None, content_type="application/json", etag=None)``
  starts a small asyncio HTTP/1.1 server on a free port that answers who it is (``X-Backend`` header
  and a JSON body), counts hits, echoes WebSockets on ``/ws``, and can be stopped and restarted on
  the same port (``.stop()``, ``.start()``). ``.hits`` counts non-health requests; ``.requests``
  keeps their (method, path, headers); ``/health`` answers ``health_status`` and reports ``load``.
- ``worker_factory(snapshot, **options)`` writes the snapshot to a file, starts
  ``python -m proxyworker`` on free ports (``--processes 1`` unless given) and waits until it
  listens and has applied the snapshot's version. The returned ``Worker`` has ``http_port``,
  ``https_port``, ``snapshot_path``, ``status()``, ``swap(snapshot)`` and ``wait_version(n)``.
- ``test_ca``: a CA and ``test_ca.issue(*hostnames)`` -> (chain_pem, key_pem, leaf_pem); the CA file
  is ``test_ca.ca_path``.
- builders: ``site(...)``, ``snapshot(...)``, ``backend_spec(b)``; and ``get(worker, host, path)``
  for a one-shot request through the worker.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import http.client
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxyworker import snapshot as snap

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- backends -----------------------------------------------------------------------------------


class _LoopThread:
    """One event loop in a daemon thread that runs every test backend."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="test-backends")
        self.thread.start()

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


_loop_thread: _LoopThread | None = None


def _backend_loop() -> _LoopThread:
    global _loop_thread
    if _loop_thread is None:
        _loop_thread = _LoopThread()
    return _loop_thread


class Backend:
    """A real HTTP/1.1 origin on 127.0.0.1 that reports who answered."""

    def __init__(self, name: str, *, tls: ssl.SSLContext | None = None, status: int = 200, delay: float = 0.0,
                 health_status: int = 200, load: float | None = None, port: int | None = None,
                 headers: dict[str, str] | None = None, body: bytes | None = None,
                 content_type: str = "application/json", etag: str | None = None):
        self.name = name
        # Cache and compression tests: extra response headers (Cache-Control, Vary, Cache-Tag...),
        # a fixed body, its type, and an ETag that makes a matching If-None-Match a 304.
        self.headers = dict(headers or {})
        self.body = body
        self.content_type = content_type
        self.etag = etag
        self.not_modified = 0
        self.tls = tls
        self.status = status
        self.delay = delay
        self.health_status = health_status
        self.load = load
        self.port = port or 0
        self.hits = 0
        self.health_hits = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lt = _backend_loop()

    def __repr__(self) -> str:
        return f"<Backend {self.name} :{self.port}>"

    # lifecycle (called from the test thread)

    def start(self) -> Backend:
        self._lt.run(self._start())
        return self

    def stop(self) -> None:
        """Close the listener and every open connection: the port now refuses connections."""
        self._lt.run(self._stop())

    async def _start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock, ssl=self.tls)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    # serving

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int((await reader.readline()).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        body += chunk[:-2]
                        if size == 0:
                            break
                if target.startswith("/health"):
                    self.health_hits += 1
                    doc = {"backend": self.name}
                    if self.load is not None:
                        doc["load"] = self.load
                    await self._send(writer, self.health_status, json.dumps(doc).encode(), {})
                    continue
                if target.startswith("/ws") and headers.get("upgrade", "").lower() == "websocket":
                    await self._websocket(reader, writer, headers)
                    return
                self.hits += 1
                self.requests.append((method, target, headers))
                if self.delay:
                    await asyncio.sleep(self.delay)
                doc = {"backend": self.name, "method": method, "path": target, "headers": headers,
                       "body_length": len(body)}
                extra = {"Server": "SecretOrigin/1.0", "X-Powered-By": "PHP/5.1", "X-Backend": self.name,
                         **self.headers}
                if self.etag is not None:
                    extra["ETag"] = self.etag
                    if headers.get("if-none-match") == self.etag:
                        self.not_modified += 1
                        await self._send(writer, 304, b"", extra)
                        continue
                payload = self.body if self.body is not None else json.dumps(doc).encode()
                await self._send(writer, self.status, payload, extra, self.content_type)
                if headers.get("connection", "").lower() == "close":
                    return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(self, writer, status: int, body: bytes, extra: dict[str, str],
                    content_type: str = "application/json") -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", f"Content-Type: {content_type}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _websocket(self, reader, writer, headers) -> None:
        accept = base64.b64encode(
            hashlib.sha1((headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        while True:
            try:
                opcode, payload = await read_ws_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if opcode == 8:
                writer.write(ws_frame(8, b"", mask=False))
                await writer.drain()
                return
            writer.write(ws_frame(opcode, f"{self.name}:".encode() + payload, mask=False))
            await writer.drain()


def ws_frame(opcode: int, payload: bytes, mask: bool = True) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mbit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_ws_frame(reader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


@pytest.fixture
def backend_factory():
    started: list[Backend] = []

    def make(name: str | None = None, **kwargs) -> Backend:
        b = Backend(name or f"b{next(_names)}", **kwargs).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


# --- snapshot builders ---------------------------------------------------------------------------


def backend_spec(b: Backend, **kw) -> snap.Backend:
    return snap.Backend(id=kw.pop("id", b.name), address="127.0.0.1", port=b.port,
                        scheme="https" if b.tls else "http", **kw)


def site(hostnames, backends, *, id=None, balancing="round_robin", health=None, routes=None, pools=None, **kw):
    """A Site with one 'default' pool of the given backends (Backend objects or snap.Backend)."""
    specs = [b if isinstance(b, snap.Backend) else backend_spec(b) for b in backends]
    if isinstance(hostnames, str):
        hostnames = [hostnames]
    extra_pools = pools or []
    return snap.Site(
        id=id or hostnames[0], organization="org1", name=hostnames[0], hostnames=list(hostnames),
        pools=[snap.Pool(name="default", backends=specs), *extra_pools],
        routes=routes or [snap.Route()], balancing=balancing,
        health_check=health or snap.HealthCheck(enabled=False), **kw,
    )


def snapshot(*sites, version=1, certificates=(), acme=()) -> snap.Snapshot:
    return snap.Snapshot(version=version, sites=list(sites), certificates=list(certificates),
                         acme_challenges=list(acme))


# --- worker processes ----------------------------------------------------------------------------


class Worker:
    def __init__(self, tmp: Path, snapshot_obj: snap.Snapshot | bytes, options: dict):
        self.snapshot_path = str(tmp / f"snapshot-{next(_names)}.json")
        self.status_path = self.snapshot_path + ".status.json"
        self.http_port = options.pop("http_port", None) or free_port()
        self.https_port = options.pop("https_port", None) or free_port()
        self.options = {"processes": 1, "log_level": "info", **options}
        self.log_path = self.snapshot_path + ".log"
        self._write(snapshot_obj)
        self.proc: subprocess.Popen | None = None

    def _write(self, snapshot_obj) -> None:
        data = snapshot_obj if isinstance(snapshot_obj, bytes) else snap.encode(snapshot_obj)
        snap.write_file_atomic(self.snapshot_path, data)

    def start(self, expect_version: int | None = None) -> Worker:
        args = [sys.executable, "-m", "proxyworker", "--snapshot", self.snapshot_path,
                "--http-port", str(self.http_port), "--https-port", str(self.https_port), "--listen-host", "127.0.0.1"]
        for k, v in self.options.items():
            flag = f"--{k.replace('_', '-')}"
            args += [flag] if v is True else [flag, str(v)]  # True: a switch without a value
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            status = self.status()
            if status and (expect_version is None or status.get("version") == expect_version):
                try:
                    socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                    socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"worker did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def status(self) -> dict | None:
        try:
            return json.loads(Path(self.status_path).read_text())
        except (OSError, ValueError):
            return None

    def swap(self, snapshot_obj, wait: bool = True) -> None:
        """Write a new snapshot file and (for valid ones) wait until the worker serves it."""
        self._write(snapshot_obj)
        if wait and isinstance(snapshot_obj, snap.Snapshot):
            self.wait_version(snapshot_obj.version)

    def wait_version(self, version: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and status.get("version") == version and status.get("state") == "applied":
                return
            time.sleep(0.05)
        raise AssertionError(f"worker did not apply version {version}: {self.status()}\n{self.log()}")

    def wait_rejection(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and status.get("state") == "rejected":
                return status
            time.sleep(0.05)
        raise AssertionError(f"worker did not reject: {self.status()}")


@pytest.fixture
def worker_factory(tmp_path):
    workers: list[Worker] = []

    def make(snapshot_obj, *, start: bool = True, **options) -> Worker:
        w = Worker(tmp_path, snapshot_obj, options)
        workers.append(w)
        if start:
            w.start(expect_version=snapshot_obj.version if isinstance(snapshot_obj, snap.Snapshot) else None)
        return w

    yield make
    for w in workers:
        w.stop()


# --- requests through a worker -------------------------------------------------------------------


class Reply:
    def __init__(self, resp: http.client.HTTPResponse):
        self.status = resp.status
        self.headers = resp.headers
        self.body = resp.read()

    @property
    def backend(self) -> str | None:
        return self.headers.get("x-backend")

    def json(self) -> dict:
        return json.loads(self.body)


def get(worker: Worker, host: str, path: str = "/", *, method: str = "GET", headers: dict | None = None,
        body: bytes | None = None, tls: ssl.SSLContext | None = None, port: int | None = None,
        timeout: float = 10, source: str | None = None) -> Reply:
    """One request through the worker on a fresh connection (plain HTTP, or TLS with SNI=host)."""
    if tls is not None:
        # SNI and certificate checks use the site's name; the TCP connection goes to 127.0.0.1.
        conn = http.client.HTTPConnection("127.0.0.1", port or worker.https_port, timeout=timeout)
        sock = socket.create_connection(("127.0.0.1", port or worker.https_port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        conn.sock = tls.wrap_socket(sock, server_hostname=host)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port or worker.http_port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        return Reply(conn.getresponse())
    finally:
        conn.close()


# --- a test certificate authority ----------------------------------------------------------------


class TestCA:
    def __init__(self, directory: Path):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portico Test Root")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        # An intermediate, so that "full chain sent" is testable: clients trust only the root.
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        int_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portico Test Intermediate")])
        self.int_cert = (
            x509.CertificateBuilder().subject_name(int_name).issuer_name(name).public_key(self.int_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.int_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_path = str(directory / "test-ca.pem")
        Path(self.ca_path).write_text(self.ca_pem)

    def issue(self, *hostnames: str) -> tuple[str, str, str]:
        """(chain_pem: leaf + intermediate, key_pem, leaf_pem) for the given DNS names or IPs."""
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans = []
        for h in hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(self.int_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.int_key.public_key()), critical=False)
            .sign(self.int_key, hashes.SHA256())
        )
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
        chain = leaf_pem + self.int_cert.public_bytes(serialization.Encoding.PEM).decode()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return chain, key_pem, leaf_pem

    def client_context(self, **kw) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_path)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx

    def server_context(self, *hostnames: str) -> ssl.SSLContext:
        chain, key, _ = self.issue(*hostnames)
        d = Path(self.ca_path).parent
        n = next(_names)
        (d / f"srv{n}.pem").write_text(chain)
        (d / f"srv{n}.key").write_text(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / f"srv{n}.pem", d / f"srv{n}.key")
        return ctx


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))
