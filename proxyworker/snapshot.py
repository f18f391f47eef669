"""The contract between the control plane and the proxy workers.

A *snapshot* is the whole configuration a worker serves: sites, their hostnames, routes, backend
pools, balancing, health checks, policies, certificates and pending ACME HTTP-01 tokens. The
control plane compiles one from the database (``platform/fleet/compiler.py``), signs it and
broadcasts it; a worker verifies, validates and swaps it in.

This module imports neither Django nor mitmproxy: both planes import it.

Wire format (an *envelope*)::

    {"schema": 1, "version": N, "sha256": "<hex of body>", "signature": "<hex HMAC-SHA256>",
     "body": "<the snapshot as JSON text>"}

The body is kept as text so that the signed bytes are exactly the bytes verified: no
re-serialisation on either side. Private keys inside the body are encrypted with AES-GCM under a
key derived from the fleet secret, so a snapshot at rest on a worker's disk holds no plaintext key.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import os
import re
from typing import Annotated, Literal

import idna
import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SCHEMA = 1

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]

BALANCING = (
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "weighted_least_connections",
    "weighted_response_time",
    "resource_based",
    "ip_hash",
)
Balancing = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "weighted_least_connections",
    "weighted_response_time",
    "resource_based",
    "ip_hash",
]


class SnapshotError(ValueError):
    """A snapshot that must not be served: bad signature, bad schema or inconsistent content."""


class _Struct(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


# --- backends and routing ---------------------------------------------------------------------


class Backend(_Struct):
    id: str
    address: str  # host name or IP literal, never a URL
    port: Port
    scheme: Literal["http", "https"] = "http"
    weight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    state: Literal["enabled", "draining"] = "enabled"  # disabled backends are not compiled
    tls_verify: bool = True
    ca_pem: str | None = None  # verify the origin against this CA instead of the system store
    sni: str | None = None  # server name sent upstream; defaults to address


class Pool(_Struct):
    name: str
    backends: list[Backend]


class AggregatePart(_Struct):
    """One backend path of an aggregation route; its JSON body lands under ``key``."""

    key: str
    path: str
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    pool: str | None = None  # None: the route's pool


class Route(_Struct):
    path_prefix: str = "/"
    pool: str = "default"
    strip_prefix: bool = False  # the same as rewrite_prefix="/"
    rewrite_prefix: str | None = None  # replace the matched prefix with this before going upstream
    # Non-empty: an aggregation route. A GET fans out to every part concurrently and is answered
    # with one JSON object {key: body, ...}; nothing is proxied.
    aggregate: list[AggregatePart] = []


class HealthCheck(_Struct):
    enabled: bool = True
    path: str = "/"
    interval: Seconds = 5.0
    timeout: Seconds = 2.0
    expected_status: list[Annotated[int, msgspec.Meta(ge=100, le=599)]] = []  # empty: 200-399
    rise: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2
    fall: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # passive checks: this many consecutive failures eject a backend for `eject_seconds`,
    # doubling on each repeated ejection up to `eject_max_seconds`.
    passive_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    eject_seconds: Seconds = 10.0
    eject_max_seconds: Seconds = 300.0
    # resource_based balancing: the load a backend reports on its health-check response, a number
    # in [0, 1] (or a percentage up to 100), read from this JSON field of the body or this header.
    load_field: str = "load"
    load_header: str = "x-backend-load"


class Hsts(_Struct):
    max_age: NonNegInt = 31536000
    include_subdomains: bool = False
    preload: bool = False


# --- policies ---------------------------------------------------------------------------------


class CachePolicy(_Struct):
    enabled: bool = True
    default_ttl: NonNegInt = 0  # freshness for responses without explicit freshness; 0: none
    max_ttl: NonNegInt = 86400
    ttl_by_prefix: dict[str, NonNegInt] = {}
    bypass_paths: list[str] = []
    ignore_query_params: list[str] = []
    bypass_on_cookie: bool = True
    stale_while_revalidate: NonNegInt = 0
    stale_if_error: NonNegInt = 0
    max_object_bytes: PosInt = 10 * 1024 * 1024


class CompressionPolicy(_Struct):
    enabled: bool = True
    encodings: list[Literal["zstd", "br", "gzip"]] = msgspec.field(default_factory=lambda: ["zstd", "br", "gzip"])
    min_bytes: NonNegInt = 1024
    content_types: list[str] = msgspec.field(
        default_factory=lambda: ["text/", "application/json", "application/javascript", "application/xml", "image/svg+xml"]
    )
    gzip_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 6
    brotli_level: Annotated[int, msgspec.Meta(ge=0, le=11)] = 5
    zstd_level: Annotated[int, msgspec.Meta(ge=1, le=22)] = 6


class RateLimit(_Struct):
    requests: PosInt
    name: str = "default"
    per_seconds: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 1.0
    burst: NonNegInt = 0  # extra tokens on top of `requests`
    key: Literal["ip", "header"] = "ip"
    header: str | None = None
    path_prefix: str = "/"
    action: Literal["block", "log"] = "block"


class IpRules(_Struct):
    allow: list[str] = []  # when non-empty, only these networks may connect
    deny: list[str] = []


class WafCondition(_Struct):
    field: Literal["ip", "method", "path", "query", "header", "cookie", "user_agent", "body"]
    op: Literal["equals", "contains", "prefix", "regex", "in_cidr"]
    value: str | list[str]
    name: str | None = None  # header or cookie name
    negate: bool = False


class WafRule(_Struct):
    id: str
    conditions: list[WafCondition]
    description: str = ""
    combine: Literal["and", "or"] = "and"
    action: Literal["block", "log", "allow", "redirect"] = "block"
    redirect_to: str | None = None
    enabled: bool = True


class WafPolicy(_Struct):
    # managed rule groups: sqli, xss, traversal, scanners
    managed: dict[str, Literal["off", "log", "block"]] = {}
    rules: list[WafRule] = []
    # groups the platform enforces: they block even when a tenant's own rule says allow
    enforced: list[str] = []


class HeaderRule(_Struct):
    direction: Literal["request", "response"]
    op: Literal["add", "set", "remove"]
    name: str
    value: str = ""


class BasicAuth(_Struct):
    # username -> "pbkdf2_sha256$<iterations>$<salt>$<b64 hash>" (never a plaintext password)
    users: dict[str, str]
    realm: str = "Restricted"
    path_prefix: str = "/"


class Policies(_Struct):
    cache: CachePolicy | None = None
    compression: CompressionPolicy | None = None
    rate_limits: list[RateLimit] = []
    ip_rules: IpRules | None = None
    waf: WafPolicy | None = None
    headers: list[HeaderRule] = []
    basic_auth: list[BasicAuth] = []


# --- sites, certificates, the snapshot ---------------------------------------------------------


class Site(_Struct):
    id: str
    organization: str
    name: str
    hostnames: list[str]
    pools: list[Pool]
    routes: list[Route] = msgspec.field(default_factory=lambda: [Route()])
    balancing: Balancing = "round_robin"
    sticky_cookie: str | None = None  # cookie name for sticky sessions; None: off
    health_check: HealthCheck = msgspec.field(default_factory=HealthCheck)
    force_https: bool = False
    hsts: Hsts | None = None
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    max_body_bytes: NonNegInt = 100 * 1024 * 1024  # 0: unlimited
    hide_response_headers: list[str] = msgspec.field(default_factory=lambda: ["server", "x-powered-by", "x-aspnet-version"])
    policies: Policies = msgspec.field(default_factory=Policies)


class Certificate(_Struct):
    id: str
    hostnames: list[str]
    chain_pem: str  # leaf first, then intermediates
    key_enc: str | None = None  # AES-GCM under the fleet key (see encrypt_key)
    key_pem: str | None = None  # plaintext; only in hand-written snapshots for local use


class AcmeChallenge(_Struct):
    hostname: str
    token: str
    key_authorization: str


class Snapshot(_Struct):
    version: NonNegInt
    schema: int = SCHEMA
    generated_at: float = 0.0
    sites: list[Site] = []
    certificates: list[Certificate] = []
    acme_challenges: list[AcmeChallenge] = []


class Envelope(_Struct):
    version: NonNegInt
    sha256: str
    signature: str
    body: str
    schema: int = SCHEMA


# --- hostnames --------------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@functools.lru_cache(maxsize=65536)  # validate() checks every name of every snapshot: 10k sites, ~0.5 s uncached
def normalize_hostname(name: str) -> str:
    """Lower-case, IDNA-encode and check a hostname; ``*.`` is allowed as the first label.

    Raises ValueError with a reason a person understands.
    """
    name = name.strip().rstrip(".").lower()
    if not name:
        raise ValueError("A hostname is required.")
    wildcard = name.startswith("*.")
    rest = name[2:] if wildcard else name
    if "*" in rest:
        raise ValueError("A wildcard is only allowed as the whole first label, as in *.example.com.")
    if rest.isascii():
        ascii_name = rest
    else:
        # IDNA 2008 with UTS #46 mapping, as browsers send it: 'straße' stays 'xn--strae-oqa'
        # (Python's built-in 'idna' codec is IDNA 2003 and would turn it into 'strasse').
        try:
            ascii_name = idna.encode(rest, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"'{name}' is not a valid hostname ({exc}).") from None
    if len(ascii_name) > 253:
        raise ValueError(f"'{name}' is longer than 253 characters.")
    labels = ascii_name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(f"'{name}' is not a valid hostname: bad label '{label}'.")
    if wildcard and len(labels) < 2:
        raise ValueError("A wildcard needs at least two labels after it, as in *.example.com.")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"'{name}' is an IP address, not a hostname.")
    return ("*." if wildcard else "") + ascii_name


# --- validation -------------------------------------------------------------------------------


def validate_site(site: Site) -> None:
    """The checks of one site on its own (the compiler uses it to leave out one bad site rather
    than fail the whole platform's snapshot)."""
    where = f"site {site.name!r} ({site.id})"
    if not site.hostnames:
        raise SnapshotError(f"{where}: no hostname")
    for host in site.hostnames:
        try:
            if normalize_hostname(host) != host:
                raise SnapshotError(f"{where}: hostname {host!r} is not normalized")
        except ValueError as exc:
            raise SnapshotError(f"{where}: {exc}") from None
    pools = {p.name for p in site.pools}
    if len(pools) != len(site.pools):
        raise SnapshotError(f"{where}: duplicate pool name")
    for route in site.routes:
        if not route.path_prefix.startswith("/"):
            raise SnapshotError(f"{where}: route prefix {route.path_prefix!r} must start with /")
        if route.pool not in pools:
            raise SnapshotError(f"{where}: route {route.path_prefix!r} names unknown pool {route.pool!r}")
        if route.rewrite_prefix is not None and not route.rewrite_prefix.startswith("/"):
            raise SnapshotError(f"{where}: route {route.path_prefix!r} rewrite {route.rewrite_prefix!r} must start with /")
        keys = set()
        for part in route.aggregate:
            if not _AGGREGATE_KEY.fullmatch(part.key) or part.key in keys:
                raise SnapshotError(f"{where}: route {route.path_prefix!r}: aggregate key {part.key!r} is invalid or repeated")
            keys.add(part.key)
            if part.pool is not None and part.pool not in pools:
                raise SnapshotError(f"{where}: route {route.path_prefix!r}: aggregate part {part.key!r} names unknown pool {part.pool!r}")
            if not part.path.startswith("/") or any(c in part.path for c in " \t\r\n#"):
                raise SnapshotError(f"{where}: route {route.path_prefix!r}: aggregate path {part.path!r} must start with /")
    for pool in site.pools:
        for b in pool.backends:
            if not _is_host(b.address):
                raise SnapshotError(f"{where}: backend {b.id} address {b.address!r} is not a host")
    if site.sticky_cookie is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", site.sticky_cookie):
        raise SnapshotError(f"{where}: sticky cookie name {site.sticky_cookie!r} is invalid")
    _validate_policies(site.policies, where)


def validate(snap: Snapshot, *, sites_checked: bool = False) -> None:
    """Semantic checks msgspec's type validation cannot express. Raises SnapshotError.

    ``sites_checked``: every site already passed ``validate_site`` (the compiler's own output);
    only what spans sites and the certificates are checked."""
    if snap.schema != SCHEMA:
        raise SnapshotError(f"unsupported snapshot schema {snap.schema}")
    seen_hosts: dict[str, str] = {}
    seen_sites: set[str] = set()
    for site in snap.sites:
        where = f"site {site.name!r} ({site.id})"
        if site.id in seen_sites:
            raise SnapshotError(f"{where}: duplicate site id")
        seen_sites.add(site.id)
        if not sites_checked:
            validate_site(site)
        for host in site.hostnames:
            if host in seen_hosts:
                raise SnapshotError(f"{where}: hostname {host!r} also belongs to site {seen_hosts[host]}")
            seen_hosts[host] = site.id
    cert_ids = set()
    for cert in snap.certificates:
        if cert.id in cert_ids:
            raise SnapshotError(f"certificate {cert.id}: duplicate id")
        cert_ids.add(cert.id)
        if (cert.key_enc is None) == (cert.key_pem is None):
            raise SnapshotError(f"certificate {cert.id}: exactly one of key_enc and key_pem is required")
        if "BEGIN CERTIFICATE" not in cert.chain_pem:
            raise SnapshotError(f"certificate {cert.id}: chain_pem holds no certificate")


@functools.lru_cache(maxsize=65536)
def _is_host(address: str) -> bool:
    """An IP literal (IPv6 with or without brackets) or a DNS name; never a URL or host:port."""
    try:
        ipaddress.ip_address(address.strip("[]"))
        return True
    except ValueError:
        pass
    try:
        return not normalize_hostname(address).startswith("*")
    except ValueError:
        return False


def _validate_policies(pol: Policies, where: str) -> None:
    if pol.ip_rules:
        for cidr in (*pol.ip_rules.allow, *pol.ip_rules.deny):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SnapshotError(f"{where}: IP rule {cidr!r} is not a CIDR") from None
    for rl in pol.rate_limits:
        if rl.key == "header" and not rl.header:
            raise SnapshotError(f"{where}: rate limit {rl.name!r} keys on a header but names none")
    if pol.waf:
        for group in (*pol.waf.managed, *pol.waf.enforced):
            if group not in MANAGED_WAF_GROUPS:
                raise SnapshotError(f"{where}: unknown managed WAF group {group!r}")
        for rule in pol.waf.rules:
            if rule.action == "redirect" and not rule.redirect_to:
                raise SnapshotError(f"{where}: WAF rule {rule.id!r} redirects but has no redirect_to")
            for cond in rule.conditions:
                values = cond.value if isinstance(cond.value, list) else [cond.value]
                if cond.op == "regex":
                    for v in values:
                        try:
                            re.compile(v)
                        except re.error as exc:
                            raise SnapshotError(f"{where}: WAF rule {rule.id!r} regex {v!r}: {exc}") from None
                if cond.op == "in_cidr":
                    for v in values:
                        try:
                            ipaddress.ip_network(v, strict=False)
                        except ValueError:
                            raise SnapshotError(f"{where}: WAF rule {rule.id!r}: {v!r} is not a CIDR") from None
                if cond.field in ("header", "cookie") and not cond.name:
                    raise SnapshotError(f"{where}: WAF rule {rule.id!r} matches a {cond.field} but names none")


MANAGED_WAF_GROUPS = ("sqli", "xss", "traversal", "scanners")
_AGGREGATE_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


# --- encoding, signing, key encryption ----------------------------------------------------------

_encoder = msgspec.json.Encoder()
_snapshot_decoder = msgspec.json.Decoder(Snapshot)
_envelope_decoder = msgspec.json.Decoder(Envelope)


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=b"portico-fleet", info=purpose).derive(secret)


class FleetKey:
    """Keys derived from the fleet secret: one for signing snapshots, one for private keys."""

    def __init__(self, secret: str | bytes):
        raw = secret.encode() if isinstance(secret, str) else secret
        if len(raw) < 16:
            raise ValueError("the fleet secret must be at least 16 bytes")
        self.sign_key = _derive(raw, b"snapshot-signature")
        self._nonce_key = _derive(raw, b"private-key-nonce")
        self._aead = AESGCM(_derive(raw, b"private-key-encryption"))

    def encrypt_key(self, cert_id: str, key_pem: str) -> str:
        # The nonce is derived from the plaintext (SIV-style), so the same key encrypts to the same
        # text and compiling an unchanged database gives an identical snapshot; a nonce repeats
        # only with an identical plaintext, which reveals nothing but that equality.
        nonce = hmac.new(self._nonce_key, cert_id.encode() + b"\0" + key_pem.encode(), hashlib.sha256).digest()[:12]
        ct = self._aead.encrypt(nonce, key_pem.encode(), cert_id.encode())
        return base64.b64encode(nonce + ct).decode()

    def decrypt_key(self, cert_id: str, key_enc: str) -> str:
        blob = base64.b64decode(key_enc)
        try:
            return self._aead.decrypt(blob[:12], blob[12:], cert_id.encode()).decode()
        except Exception:
            raise SnapshotError(f"certificate {cert_id}: private key does not decrypt with this fleet key") from None


def encode(snap: Snapshot) -> bytes:
    return _encoder.encode(snap)


def decode(body: bytes | str) -> Snapshot:
    """Decode and validate snapshot JSON. Raises SnapshotError naming what is wrong."""
    try:
        snap = _snapshot_decoder.decode(body)
    except msgspec.DecodeError as exc:  # includes ValidationError
        raise SnapshotError(f"invalid snapshot: {exc}") from None
    validate(snap)
    return snap


def sign(snap: Snapshot, key: FleetKey) -> Envelope:
    body = encode(snap)
    return Envelope(
        version=snap.version,
        sha256=hashlib.sha256(body).hexdigest(),
        signature=hmac.new(key.sign_key, body, hashlib.sha256).hexdigest(),
        body=body.decode(),
    )


def encode_envelope(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode_envelope(data: bytes | str) -> Envelope:
    try:
        return _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"invalid envelope: {exc}") from None


def verify(env: Envelope, key: FleetKey) -> Snapshot:
    """Check the envelope's signature and return its validated snapshot. Raises SnapshotError."""
    body = env.body.encode()
    expected = hmac.new(key.sign_key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, env.signature):
        raise SnapshotError("signature does not match: snapshot unsigned, tampered or signed with another fleet key")
    if hashlib.sha256(body).hexdigest() != env.sha256:
        raise SnapshotError("sha256 does not match the body")
    snap = decode(body)
    if snap.version != env.version:
        raise SnapshotError(f"envelope says version {env.version} but the body is version {snap.version}")
    return snap


def load_file(path: str, key: FleetKey | None = None) -> Snapshot:
    """Read a snapshot file: a signed envelope (verified when a key is given) or plain snapshot JSON.

    A worker's last-known-good is written by its agent after verification, so a plain file on the
    worker's own disk is trusted like any other local configuration.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if b'"signature"' in data[:200] and b'"body"' in data:
        env = decode_envelope(data)
        if key is None:
            raise SnapshotError("signed snapshot file but no fleet key configured (PORTICO_FLEET_KEY)")
        return verify(env, key)
    return decode(data)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write then rename, so a reader never sees half a snapshot."""
    tmp = f"{path}.{os.getpid()}.part"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        # a full disk leaves a partial file behind: remove it so it does not hold the space
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
