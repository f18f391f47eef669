"""Reading and checking PEM certificates and keys, with errors a person can act on.

Used for uploads (the strictest path: anything pasted by a person) and for what ACME and the
internal CA return (the same checks catch a CA that sends a chain in the wrong order).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

MAX_PEM_BYTES = 128 * 1024
MAX_CHAIN = 10


class PemProblem(ValueError):
    """What is wrong, and in which input (``chain_pem`` or ``key_pem``)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Parsed:
    chain: list[x509.Certificate]
    chain_pem: str  # normalized: leaf first, one PEM block per certificate
    key_pem: str  # PKCS#8, unencrypted
    names: list[str]  # DNS names of the leaf
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str
    issuer: str
    fingerprint_sha256: str


def describe(cert: x509.Certificate) -> str:
    """How a person recognizes a certificate: its common name, else its first DNS name."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cn:
        return f"CN={cn[0].value}"
    names = dns_names(cert)
    return names[0] if names else cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]


def covers(cert_name: str, hostname: str) -> bool:
    """RFC 6125 §6.4.3: a wildcard matches exactly one whole left-most label."""
    cert_name, hostname = cert_name.lower(), hostname.lower()
    if cert_name == hostname:
        return True
    if cert_name.startswith("*.") and not hostname.startswith("*."):
        _, _, parent = hostname.partition(".")
        return bool(parent) and parent == cert_name[2:]
    return False


def load_chain(text: str) -> list[x509.Certificate]:
    if not text or not text.strip():
        raise PemProblem("chain_pem", "Paste the certificate chain in PEM form (-----BEGIN CERTIFICATE-----).")
    if len(text) > MAX_PEM_BYTES:
        raise PemProblem("chain_pem", f"The chain is larger than {MAX_PEM_BYTES // 1024} KB; paste only the leaf and its intermediates.")
    if "PRIVATE KEY-----" in text:
        raise PemProblem("chain_pem", "The chain contains a private key: paste the key in the key field only.")
    try:
        chain = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise PemProblem(
            "chain_pem", "No readable certificate found: paste the PEM text, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----."
        ) from None
    if len(chain) > MAX_CHAIN:
        raise PemProblem("chain_pem", f"The chain has {len(chain)} certificates; at most {MAX_CHAIN} are accepted.")
    return chain


def load_key(text: str):
    if not text or not text.strip():
        raise PemProblem("key_pem", "Paste the private key in PEM form (-----BEGIN PRIVATE KEY-----).")
    if "ENCRYPTED" in text:
        raise PemProblem(
            "key_pem", "The private key is protected by a passphrase: upload it decrypted (openssl pkey -in key.pem -out plain-key.pem)."
        )
    try:
        key = serialization.load_pem_private_key(text.strip().encode(), password=None)
    except TypeError:
        raise PemProblem("key_pem", "The private key is protected by a passphrase: upload it decrypted.") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PemProblem(
            "key_pem", "No readable private key found: paste the PEM text that starts with -----BEGIN PRIVATE KEY-----."
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise PemProblem("key_pem", f"An RSA key of {key.key_size} bits is too weak; use at least 2048 bits.")
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise PemProblem("key_pem", f"The {key.curve.name} curve is not supported by browsers; use P-256 or P-384.")
    else:
        raise PemProblem("key_pem", "Only RSA and ECDSA (P-256, P-384) keys are supported by browsers.")
    return key


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _when(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def check(chain_pem: str, key_pem: str, *, now: dt.datetime | None = None) -> Parsed:
    """Parse and check a chain and its key. Raises PemProblem naming the field and the fix."""
    now = now or dt.datetime.now(dt.UTC)
    chain = load_chain(chain_pem)
    key = load_key(key_pem)
    leaf = chain[0]
    key_der = _public_der(key.public_key())
    if _public_der(leaf.public_key()) != key_der:
        for i, cert in enumerate(chain[1:], start=2):
            if _public_der(cert.public_key()) == key_der:
                raise PemProblem(
                    "chain_pem",
                    f"The chain is in the wrong order: the key belongs to certificate #{i} ({describe(cert)}). "
                    "Put the site's certificate first, then each intermediate.",
                )
        raise PemProblem("key_pem", f"This private key does not belong to the certificate {describe(leaf)} (the first in the chain).")
    if _is_ca(leaf):
        raise PemProblem("chain_pem", f"The first certificate ({describe(leaf)}) is a CA certificate, not a site's certificate.")
    for i in range(len(chain) - 1):
        child, parent = chain[i], chain[i + 1]
        if not _issued_by(child, parent):
            later = next((j for j in range(len(chain)) if j not in (i, i + 1) and _issued_by(child, chain[j])), None)
            hint = (
                f" It was issued by certificate #{later + 1}: the chain is out of order."
                if later is not None
                else " Put the site's certificate first, then each intermediate in order, each issued by the next."
            )
            raise PemProblem(
                "chain_pem", f"Certificate #{i + 2} ({describe(parent)}) did not issue certificate #{i + 1} ({describe(child)}).{hint}"
            )
    for i, cert in enumerate(chain, start=1):
        label = "The certificate" if i == 1 else f"Certificate #{i} ({describe(cert)})"
        if cert.not_valid_after_utc <= now:
            raise PemProblem("chain_pem", f"{label} expired on {_when(cert.not_valid_after_utc)}.")
        if cert.not_valid_before_utc > now:
            raise PemProblem("chain_pem", f"{label} is not valid until {_when(cert.not_valid_before_utc)}.")
    names = dns_names(leaf)
    if not names:
        raise PemProblem("chain_pem", f"The certificate {describe(leaf)} names no DNS hostname (no subjectAltName).")
    return Parsed(
        chain=chain,
        chain_pem="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
        names=names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=f"{leaf.serial_number:x}",
        issuer=describe_issuer(leaf),
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
    )


def describe_issuer(cert: x509.Certificate) -> str:
    cn = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    parts = [str(a[0].value) for a in (org, cn) if a]
    return " / ".join(parts) or cert.issuer.rfc4514_string()


def leaf_of(chain_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain_pem.encode())[0]
