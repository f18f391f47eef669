"""Talking to origins outside mitmproxy's own connections: TLS contexts and a tiny HTTP/1.1 client.

mitmproxy carries the client's request upstream itself. The worker needs its own client for two
things that happen beside that path: active health checks, and the one retry of an idempotent
request on another backend. Both are HTTP/1.1 with ``Connection: close``; h11 does the parsing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

import h11
from cryptography import x509
from OpenSSL import SSL, crypto

from proxyworker.balancer import BackendState

MAX_BODY = 16 * 1024 * 1024  # a retried response larger than this is not buffered


class UpstreamError(Exception):
    """The origin could not be reached or did not answer properly."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def make_client_ssl(*, verify: bool, ca_pem: str | None) -> ssl.SSLContext:
    """stdlib context for health checks and retries, verifying like the proxied path does."""
    ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def make_upstream_tls(*, verify: bool, ca_pem: str | None) -> SSL.Context:
    """pyOpenSSL context for mitmproxy's upstream connections to one backend."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    if verify:
        ctx.set_verify(SSL.VERIFY_PEER)
        if ca_pem:
            store = ctx.get_cert_store()
            assert store is not None
            for cert in x509.load_pem_x509_certificates(ca_pem.encode()):
                store.add_cert(crypto.X509.from_cryptography(cert))
        else:
            ctx.set_default_verify_paths()
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


def start_upstream_tls(backend: BackendState) -> SSL.Connection:
    """An SSL connection for one upstream handshake: SNI set and the hostname (or IP) verified."""
    conn = SSL.Connection(backend.upstream_tls)
    name = backend.sni or backend.address
    # OpenSSL checks the name only when told to, on the connection's verify parameters.
    param = SSL._lib.SSL_get0_param(conn._ssl)  # type: ignore[attr-defined]
    SSL._lib.X509_VERIFY_PARAM_set_hostflags(param, 0x4)  # type: ignore[attr-defined]  # no partial wildcards
    if _is_ip(name):
        packed = ipaddress.ip_address(name.strip("[]")).packed
        SSL._lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))  # type: ignore[attr-defined]
    else:
        encoded = name.encode("idna")
        conn.set_tlsext_host_name(encoded)
        SSL._lib.X509_VERIFY_PARAM_set1_host(param, encoded, len(encoded))  # type: ignore[attr-defined]
    conn.set_alpn_protos([b"http/1.1"])
    conn.set_connect_state()
    return conn


async def fetch(
    backend: BackendState,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    timeout: float,
    max_body: int = MAX_BODY,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP/1.1 exchange with a backend. Raises UpstreamError (timeouts included)."""
    try:
        return await asyncio.wait_for(_fetch(backend, method, target, headers, body, max_body), timeout)
    except TimeoutError:
        raise UpstreamError("timed out") from None
    except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
        raise UpstreamError(str(exc) or type(exc).__name__) from None


async def _fetch(backend, method, target, headers, body, max_body):
    ssl_ctx = backend.client_ssl if backend.scheme == "https" else None
    server_hostname = None
    if ssl_ctx is not None:
        server_hostname = backend.sni or backend.address
    reader, writer = await asyncio.open_connection(
        backend.address, backend.port, ssl=ssl_ctx, server_hostname=server_hostname
    )
    try:
        conn = h11.Connection(h11.CLIENT)
        send_headers = [(k, v) for k, v in headers if k.lower() not in (b"connection", b"transfer-encoding")]
        send_headers.append((b"connection", b"close"))
        if body and not any(k.lower() == b"content-length" for k, _ in send_headers):
            send_headers.append((b"content-length", str(len(body)).encode()))
        data = conn.send(h11.Request(method=method, target=target, headers=send_headers))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()
        status = 0
        resp_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = [(k, v) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    raise UpstreamError("response too large to buffer")
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        return status, resp_headers, b"".join(chunks)
    finally:
        writer.close()
