"""The platform's own CA, for names no public CA will certify: ``localhost``, ``*.localhost``,
``*.test``, ``*.internal``, sites set to "Internal CA", and the quick start.

Like Caddy's local CA: a root (10 years) that a developer trusts once (``manage.py
internal_ca_root`` or ``certs.selectors.internal_ca_root_pem()``), an intermediate (1 year,
re-minted when a third of its life remains) that signs leaves, and short-lived leaves renewed by
the same beat task as ACME certificates. Generated on first use; keys stored encrypted.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.db import IntegrityError, transaction

from . import crypto
from .models import InternalCA

ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=365)
LEAF_LIFETIME = dt.timedelta(days=30)
# Clocks on developer machines drift; a certificate valid from "now" can look not-yet-valid.
BACKDATE = dt.timedelta(minutes=10)

INTERNAL_SUFFIXES = (".localhost", ".test", ".internal")


def is_internal_name(name: str) -> bool:
    """Names that can never get a public certificate (RFC 6761 and ICANN's .internal)."""
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(INTERNAL_SUFFIXES)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _ca_cert(*, subject: x509.Name, issuer: x509.Name, public_key, signing_key, lifetime: dt.timedelta, path_length: int):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer != subject:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Portico"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _intermediate(root_key, root: x509.Certificate, tag: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    cert = _ca_cert(
        subject=_name(f"Portico Internal Intermediate {tag} {stamp}"),
        issuer=root.subject,
        public_key=key.public_key(),
        signing_key=root_key,
        lifetime=INTERMEDIATE_LIFETIME,
        path_length=0,
    )
    return cert, key


def _create() -> InternalCA:
    tag = secrets.token_hex(3)
    root_key = ec.generate_private_key(ec.SECP384R1())
    name = _name(f"Portico Internal Root {tag}")
    root = _ca_cert(
        subject=name, issuer=name, public_key=root_key.public_key(), signing_key=root_key, lifetime=ROOT_LIFETIME, path_length=1
    )
    inter, inter_key = _intermediate(root_key, root, tag)
    return InternalCA(
        pk=1,
        root_pem=_pem(root),
        root_key_encrypted=crypto.encrypt(_key_pem(root_key)),
        intermediate_pem=_pem(inter),
        intermediate_key_encrypted=crypto.encrypt(_key_pem(inter_key)),
    )


def authority() -> InternalCA:
    """The CA, created on first use. Two processes racing to create it end with one CA: the
    loser's insert fails on the primary key and it reads the winner's."""
    ca = InternalCA.objects.filter(pk=1).first()
    if ca is not None:
        return _fresh_intermediate(ca)
    candidate = _create()
    try:
        with transaction.atomic():
            candidate.save(force_insert=True)
        return candidate
    except IntegrityError:
        return InternalCA.objects.get(pk=1)


def _fresh_intermediate(ca: InternalCA) -> InternalCA:
    inter = x509.load_pem_x509_certificate(ca.intermediate_pem.encode())
    remaining = inter.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if remaining > INTERMEDIATE_LIFETIME / 3:
        return ca
    with transaction.atomic():
        ca = InternalCA.objects.select_for_update().get(pk=1)
        inter = x509.load_pem_x509_certificate(ca.intermediate_pem.encode())
        if inter.not_valid_after_utc - dt.datetime.now(dt.UTC) > INTERMEDIATE_LIFETIME / 3:
            return ca  # another process re-minted it meanwhile
        root = x509.load_pem_x509_certificate(ca.root_pem.encode())
        root_key = serialization.load_pem_private_key(crypto.decrypt(ca.root_key_encrypted).encode(), password=None)
        tag = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.rsplit(" ", 1)[-1]
        new, key = _intermediate(root_key, root, tag)
        ca.intermediate_pem = _pem(new)
        ca.intermediate_key_encrypted = crypto.encrypt(_key_pem(key))
        ca.save()
    return ca


def root_pem() -> str:
    return authority().root_pem


@dataclass(frozen=True)
class Issued:
    chain_pem: str  # leaf, then the intermediate
    key_pem: str


def issue(hostnames: list[str], *, lifetime: dt.timedelta = LEAF_LIFETIME) -> Issued:
    """A leaf certificate for ``hostnames`` (wildcards allowed), signed by the intermediate."""
    ca = authority()
    inter = x509.load_pem_x509_certificate(ca.intermediate_pem.encode())
    inter_key = serialization.load_pem_private_key(crypto.decrypt(ca.intermediate_key_encrypted).encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + lifetime, inter.not_valid_after_utc)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(inter.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in hostnames]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Python 3.13's default verification (VERIFY_X509_STRICT) refuses leaves without an AKI.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
    return Issued(chain_pem=_pem(leaf) + ca.intermediate_pem, key_pem=_key_pem(key))
