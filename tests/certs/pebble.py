"""A real ACME server for tests and benchmarks: pebble plus pebble-challtestsrv as its DNS.

``pebble-challtestsrv`` answers every A query with 127.0.0.1 (and no AAAA), so pebble really
connects to 127.0.0.1:<http_port> to fetch HTTP-01 tokens: that port is the worker under test.
Pebble's issuing root is regenerated on every start; ``root_pem`` holds this run's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def listener_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1/localhost signed by it, for pebble's own
    HTTPS listener (the Debian package ships none). Returns (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a leaf without an Authority Key
        # Identifier is refused.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "listener-ca.pem", folder / "listener-cert.pem", folder / "listener-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_key_pem(key))
    return paths


class Pebble:
    """pebble + pebble-challtestsrv on free 127.0.0.1 ports. ``http_port`` is where pebble sends
    HTTP-01 validation requests: start it after the worker's HTTP port is known."""

    def __init__(self, folder: Path, *, http_port: int, nonce_reject: int | None = None, env: dict | None = None):
        self.folder = folder
        self.http_port = http_port
        self.nonce_reject = nonce_reject  # percent; None keeps pebble's default (5 %)
        self.extra_env = env or {}
        self.port = free_port()
        self.mgmt_port = free_port()
        self.dns_port = free_port()
        self.dns_mgmt_port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.root_pem = ""
        self.listener_ca: Path | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def root_path(self) -> Path:
        """This run's issuing root: what a TLS client trusts to verify issued certificates."""
        return self.folder / "pebble-root.pem"

    def _spawn(self, args: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        fh = open(self.folder / log, "ab")
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> Pebble:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.listener_ca, cert, key = listener_certificate(self.folder)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.folder / "pebble.json").write_text(json.dumps(config))
        self._spawn(
            [shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{self.dns_mgmt_port}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            "challtestsrv.log",
        )
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", **self.extra_env}
        if self.nonce_reject is not None:
            env["PEBBLE_WFE_NONCEREJECT"] = str(self.nonce_reject)
        self._spawn(
            [shutil.which("pebble") or "/usr/bin/pebble", "-config", str(self.folder / "pebble.json"),
             "-dnsserver", f"127.0.0.1:{self.dns_port}", "-strict=false"],
            "pebble.log",
            env=env,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(self.directory_url, verify=str(self.listener_ca), timeout=1).raise_for_status()
                resp = requests.get(f"https://127.0.0.1:{self.mgmt_port}/roots/0", verify=str(self.listener_ca), timeout=1)
                resp.raise_for_status()
                requests.get(f"http://127.0.0.1:{self.dns_mgmt_port}/", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    raise RuntimeError(f"pebble did not start; see {self.folder}/pebble.log and challtestsrv.log")
                time.sleep(0.05)
        self.root_pem = resp.text
        self.root_path.write_text(self.root_pem)
        return self

    # --- the DNS pebble sees ---------------------------------------------------------------------

    def set_a(self, host: str, *addresses: str) -> None:
        """Make ``host`` resolve to ``addresses`` for pebble (instead of 127.0.0.1)."""
        resp = requests.post(f"http://127.0.0.1:{self.dns_mgmt_port}/add-a", json={"host": host, "addresses": list(addresses)}, timeout=2)
        resp.raise_for_status()

    def clear_a(self, host: str) -> None:
        requests.post(f"http://127.0.0.1:{self.dns_mgmt_port}/clear-a", json={"host": host}, timeout=2).raise_for_status()

    def cert_status(self, serial_hex: str) -> dict:
        url = f"https://127.0.0.1:{self.mgmt_port}/cert-status-by-serial/{serial_hex}"
        resp = requests.get(url, verify=str(self.listener_ca), timeout=2)
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.procs.clear()

    def log(self) -> str:
        return (self.folder / "pebble.log").read_text(errors="replace")
