"""A tiny CA for upload tests: root → intermediate → leaves with any names and dates."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class MiniCA:
    def __init__(self, label: str = "Upload Test"):
        now = dt.datetime.now(dt.UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(f"{label} Root", self.root_key, self.root_key, _name(f"{label} Root"), now, path_length=1)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca(f"{label} Intermediate", self.int_key, self.root_key, self.root.subject, now, path_length=0)

    @staticmethod
    def _ca(cn, key, signer, issuer, now, *, path_length):
        return (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signer, hashes.SHA256())
        )

    def leaf(
        self,
        *names: str,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key=None,
        ca: bool = False,
    ) -> tuple[x509.Certificate, object]:
        now = dt.datetime.now(dt.UTC)
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0] if names else "no names"))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.int_key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        return builder.sign(self.int_key, hashes.SHA256()), key

    def bundle(self, *names: str, **kw) -> tuple[str, str]:
        """(chain_pem: leaf + intermediate, key_pem)"""
        leaf, key = self.leaf(*names, **kw)
        return pem(leaf) + pem(self.intermediate), key_pem(key)


def weak_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)
