"""TLS termination by SNI from the snapshot's certificates, and verified TLS to backends."""

from __future__ import annotations

import os
import socket
import ssl

import pytest

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import backend_spec, get, site, snapshot


@pytest.fixture
def tls_worker(backend_factory, worker_factory, test_ca):
    a, b = backend_factory("alpha"), backend_factory("beta")
    chain_a, key_a, _ = test_ca.issue("alpha.test")
    chain_w, key_w, _ = test_ca.issue("*.wild.test")
    certs = [
        snap.Certificate(id="c-alpha", hostnames=["alpha.test"], chain_pem=chain_a, key_pem=key_a),
        snap.Certificate(id="c-wild", hostnames=["*.wild.test"], chain_pem=chain_w, key_pem=key_w),
    ]
    sites = [site("alpha.test", [a], hsts=snap.Hsts(max_age=600, include_subdomains=True)), site(["*.wild.test"], [b])]
    return worker_factory(snapshot(*sites, certificates=certs))


def handshake(port: int, server_name: str | None, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(sock, server_hostname=server_name)


def test_certificate_is_chosen_by_sni_and_verifies_with_the_full_chain(tls_worker, test_ca):
    ctx = test_ca.client_context()  # trusts only the root: the intermediate must come from the worker
    r = get(tls_worker, "alpha.test", tls=ctx)
    assert r.status == 200 and r.backend == "alpha"
    r = get(tls_worker, "app.wild.test", tls=ctx)
    assert r.status == 200 and r.backend == "beta"
    with handshake(tls_worker.https_port, "alpha.test", ctx) as s:
        assert s.getpeercert()["subject"][0][0][1] == "alpha.test"


def test_the_plain_http_port_also_terminates_tls(tls_worker, test_ca):
    r = get(tls_worker, "alpha.test", tls=test_ca.client_context(), port=tls_worker.http_port)
    assert r.status == 200 and r.backend == "alpha"


def test_unknown_sni_is_refused(tls_worker, test_ca):
    ctx = test_ca.client_context(check_hostname=False, verify_mode=ssl.CERT_NONE)  # accept anything
    for name in ("unknown.test", "deep.app.wild.test", None):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(tls_worker.https_port, name, ctx).close()


def test_tls_1_1_is_refused(tls_worker, test_ca):
    ctx = test_ca.client_context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(tls_worker.https_port, "alpha.test", ctx).close()
    ok = test_ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with handshake(tls_worker.https_port, "alpha.test", ok) as s:
        assert s.version() == "TLSv1.2"


def test_alpn_offers_h2_and_http11(tls_worker, test_ca):
    for offer, expected in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = test_ca.client_context()
        ctx.set_alpn_protocols(offer)
        with handshake(tls_worker.https_port, "alpha.test", ctx) as s:
            assert s.selected_alpn_protocol() == expected


def test_http2_request_is_served(tls_worker, test_ca):
    import h2.config
    import h2.connection
    import h2.events

    ctx = test_ca.client_context()
    ctx.set_alpn_protocols(["h2"])
    with handshake(tls_worker.https_port, "alpha.test", ctx) as s:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/h2"), (":scheme", "https"),
                              (":authority", "alpha.test")], end_stream=True)
        s.sendall(conn.data_to_send())
        status, headers, done = None, {}, False
        while not done:
            data = s.recv(65536)
            assert data
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = {k.decode(): v.decode() for k, v in ev.headers}
                    status = headers[":status"]
                if isinstance(ev, h2.events.StreamEnded):
                    done = True
            s.sendall(conn.data_to_send())
    assert status == "200"
    assert headers["x-backend"] == "alpha"


def test_sni_and_host_of_different_certificates_is_421(tls_worker, test_ca):
    r = get(tls_worker, "alpha.test", tls=test_ca.client_context(), headers={"Host": "app.wild.test"})
    assert r.status == 421


def test_hsts_is_sent_over_tls_only(tls_worker, test_ca):
    r = get(tls_worker, "alpha.test", tls=test_ca.client_context())
    assert r.headers["strict-transport-security"] == "max-age=600; includeSubDomains"
    assert "strict-transport-security" not in get(tls_worker, "alpha.test").headers


def test_encrypted_private_key_and_signed_envelope_are_served(backend_factory, worker_factory, test_ca, monkeypatch):
    secret = "fleet-secret-for-tests-" + os.urandom(4).hex()
    monkeypatch.setenv("PORTICO_FLEET_KEY", secret)
    key = snap.FleetKey(secret)
    a = backend_factory("enc")
    chain, key_pem, _ = test_ca.issue("enc.test")
    cert = snap.Certificate(id="c-enc", hostnames=["enc.test"], chain_pem=chain, key_enc=key.encrypt_key("c-enc", key_pem))
    env = snap.sign(snapshot(site("enc.test", [a]), certificates=[cert], version=7), key)
    w = worker_factory(snap.encode_envelope(env))
    w.wait_version(7)
    assert get(w, "enc.test", tls=test_ca.client_context()).backend == "enc"


def test_upstream_tls_is_verified_against_the_backends_ca(backend_factory, worker_factory, test_ca, tmp_path):
    good = backend_factory("tls-good", tls=test_ca.server_context("127.0.0.1"))
    other_ca = type(test_ca)(tmp_path)  # its own folder: the session CA file stays as it is
    bad = backend_factory("tls-bad", tls=other_ca.server_context("127.0.0.1"))
    w = worker_factory(snapshot(
        site("up-good.test", [backend_spec(good, ca_pem=test_ca.ca_pem)]),
        site("up-bad.test", [backend_spec(bad, ca_pem=test_ca.ca_pem)]),
        site("up-noverify.test", [backend_spec(bad, id="nv", tls_verify=False)]),
    ))
    r = get(w, "up-good.test")
    assert r.status == 200 and r.backend == "tls-good"
    assert get(w, "up-bad.test").status == 502  # wrong CA: never talk to an unverified origin
    assert bad.hits == 0
    assert get(w, "up-noverify.test").backend == "tls-bad"


def test_a_reload_takes_over_the_tls_contexts_of_unchanged_certificates(test_ca):
    from proxyworker.tables import compile_snapshot

    key = snap.FleetKey("fleet-secret-for-context-reuse-0123")
    chain_a, key_a, _ = test_ca.issue("a.test")
    chain_b, key_b, _ = test_ca.issue("b.test")
    certs = [snap.Certificate(id="ca", hostnames=["a.test"], chain_pem=chain_a, key_enc=key.encrypt_key("ca", key_a)),
             snap.Certificate(id="cb", hostnames=["b.test"], chain_pem=chain_b, key_pem=key_b)]
    sites = [site("a.test", []), site("b.test", [])]
    first = compile_snapshot(snapshot(*sites, certificates=certs), None, key)
    second = compile_snapshot(snapshot(*sites, version=2, certificates=certs), first, key)
    assert second.sni["a.test"] is first.sni["a.test"] and second.sni["b.test"] is first.sni["b.test"]

    renewed_chain, renewed_key, _ = test_ca.issue("b.test")
    renewed = [certs[0], snap.Certificate(id="cb", hostnames=["b.test"], chain_pem=renewed_chain, key_pem=renewed_key)]
    stricter = [site("a.test", [], tls_min_version="1.3"), sites[1]]
    third = compile_snapshot(snapshot(*stricter, version=3, certificates=renewed), second, key)
    assert third.sni["b.test"] is not second.sni["b.test"]  # a renewed certificate gets its own context
    assert third.sni["a.test"] is not second.sni["a.test"]  # so does a new minimum TLS version
    assert set(third.contexts) == {("ca", "1.3", chain_a, certs[0].key_enc), ("cb", "1.2", renewed_chain, renewed_key)}
