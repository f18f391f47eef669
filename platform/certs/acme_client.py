"""The control plane's side of RFC 8555, on top of the ``acme`` library (certbot's).

The library does the protocol (JWS, nonces, account, order, challenge, finalize, revoke); this
module adds what a long-running service needs around it: more than one retry on ``badNonce``
(RFC 8555 §6.5: the client should retry; pebble rejects 5 % of nonces on purpose), fast polling
(the library sleeps a whole second between polls), the account stored in the database, and
errors translated into reasons a person can act on.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import josepy as jose
import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError, transaction

from . import crypto
from .models import AcmeAccount

log = logging.getLogger(__name__)

DIRECTORY_PRESETS = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
USER_AGENT = "Portico (acme-python)"
MAX_NONCE_RETRIES = 10

# Rejected nonces seen by this process, for tests and metrics.
rejected_nonces = 0


def directory_url() -> str:
    """The configured ACME directory URL; empty when ACME is off (PORTICO_ACME_DIRECTORY unset
    outside production)."""
    value = (settings.ACME_DIRECTORY or "").strip()
    return DIRECTORY_PRESETS.get(value, value)


NOT_CONFIGURED = "No ACME CA is configured: set PORTICO_ACME_DIRECTORY (letsencrypt, letsencrypt-staging or a directory URL)."


def generate_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


class AcmeFailure(Exception):
    """An issuance step failed. ``reason`` is shown to people as is. ``retry_in`` (seconds) is
    set when trying again later can help; ``retry_in=None`` with ``permanent=False`` means "use
    the caller's backoff"."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_in: float | None = None, kind: str = "transient"):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_in = retry_in
        self.kind = kind  # transient | validation | rate_limit | rejected


class _Network(client.ClientNetwork):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_response: requests.Response | None = None
        self.nonce_rejections = 0

    def _send_request(self, method: str, url: str, *args, **kwargs) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        if response.status_code == 400 and "badNonce" in response.text:
            global rejected_nonces
            rejected_nonces += 1
            self.nonce_rejections += 1
            log.info("the ACME server rejected a nonce (badNonce); retrying with a fresh one")
        return response

    def post(self, *args, **kwargs) -> requests.Response:
        # The library retries a badNonce once; two in a row happen (pebble: 5 % each). Each
        # attempt signs with a fresh nonce, so retrying is always safe.
        for attempt in range(MAX_NONCE_RETRIES):
            try:
                return super().post(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == MAX_NONCE_RETRIES - 1:
                    raise
                log.debug("badNonce again; retrying (%s)", attempt + 1)
        raise AssertionError("unreachable")


@dataclass
class Order:
    url: str
    status: str
    authorizations: list[str]
    finalize: str
    certificate: str | None
    error: messages.Error | None


class AcmeCA:
    """One ACME directory, spoken to with one account key."""

    def __init__(self, *, directory: str, account_key_pem: str, account_uri: str = "", ca_bundle: str | None = None):
        self.directory_url = directory
        key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
        self.jwk = jose.JWKEC(key=key) if isinstance(key, ec.EllipticCurvePrivateKey) else jose.JWKRSA(key=key)
        alg = jose.ES256 if isinstance(key, ec.EllipticCurvePrivateKey) else jose.RS256
        self.net = _Network(self.jwk, alg=alg, verify_ssl=ca_bundle or True, user_agent=USER_AGENT, timeout=30)
        self.account_uri = account_uri
        self._client: client.ClientV2 | None = None

    @property
    def client(self) -> client.ClientV2:
        if self._client is None:
            self._client = client.ClientV2(client.ClientV2.get_directory(self.directory_url, self.net), self.net)
        return self._client

    @property
    def host(self) -> str:
        return urlsplit(self.directory_url).netloc

    # --- account ----------------------------------------------------------------------------------

    def register(self, email: str = "") -> str:
        """Use the stored account, or register (or find) the account of this key. Returns its URL."""
        acme = self.client
        if self.account_uri:
            self.net.account = messages.RegistrationResource(uri=self.account_uri, body=messages.Registration())
            return self.account_uri
        registration = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
        try:
            regr = acme.new_account(registration)
            uri = regr.uri
        except errors.ConflictError as existing:  # RFC 8555 §7.3.1: the key already has an account
            uri = existing.location
            self.net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        self.account_uri = uri
        return uri

    # --- orders -------------------------------------------------------------------------------------

    def fetch(self, url: str) -> requests.Response:
        """POST-as-GET (RFC 8555 §6.3)."""
        return self.net.post(url, None, new_nonce_url=self.client.directory["newNonce"])

    def new_order(self, csr_pem: str) -> messages.OrderResource:
        return self.client.new_order(csr_pem.encode())

    def order(self, url: str) -> Order:
        body = messages.Order.from_json(self.fetch(url).json())
        return Order(
            url=url,
            status=body.status.name,
            authorizations=list(body.authorizations),
            finalize=body.finalize,
            certificate=body.certificate,
            error=body.error,
        )

    def authorization(self, url: str) -> messages.Authorization:
        return messages.Authorization.from_json(self.fetch(url).json())

    def http01(self, authz: messages.Authorization) -> tuple[str, str, str]:
        """(challenge URL, token, key authorization) of the authorization's HTTP-01 challenge."""
        for challb in authz.challenges:
            if isinstance(challb.chall, challenges.HTTP01):
                return challb.uri, challb.chall.encode("token"), challb.chall.validation(self.jwk)
        raise AcmeFailure(
            f"The CA offers no HTTP-01 challenge for {authz.identifier.value}; it cannot be validated by the fleet.",
            permanent=True,
            kind="rejected",
        )

    def answer(self, challenge_url: str, token: str) -> None:
        challb = messages.ChallengeBody.from_json({"type": "http-01", "url": challenge_url, "status": "pending", "token": token})
        self.client.answer_challenge(challb, challb.chall.response(self.jwk))

    def begin_finalization(self, order: Order, csr_pem: str) -> None:
        orderr = messages.OrderResource(
            uri=order.url,
            csr_pem=csr_pem.encode(),
            body=messages.Order(status=messages.Status.from_json(order.status), finalize=order.finalize, identifiers=()),
        )
        try:
            self.client.begin_finalization(orderr)
        except messages.Error as error:
            if error.code != "orderNotReady":
                raise

    def download(self, certificate_url: str) -> str:
        return self.fetch(certificate_url).text

    def revoke(self, chain_pem: str, reason: int = 0) -> None:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        self.client.revoke(leaf, reason)

    def renewal_time(self, chain_pem: str) -> dt.datetime | None:
        """ACME Renewal Information (RFC 9773), when the CA offers it: when to renew."""
        try:
            self.client.directory["renewalInfo"]
        except KeyError:
            return None
        try:
            when, _ = self.client.renewal_time(chain_pem.encode())
        except errors.ARIError as exc:
            log.info("ARI unavailable: %s", exc)
            return None
        if when is None:
            return None
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)

    def retry_after(self, default: float) -> float:
        """Seconds the CA asked us to wait (Retry-After of its last response), else ``default``."""
        if self.net.last_response is None:
            return default
        when = client.ClientV2.retry_after(self.net.last_response, int(default))
        return max(1.0, (when - dt.datetime.now()).total_seconds())


# --- the platform's account --------------------------------------------------------------------


def account_for(org, directory: str) -> AcmeAccount:
    """The account to order with: the platform's, or the organization's when
    PORTICO_ACME_ACCOUNT_PER_ORG is on. Created (key generated, encrypted) on first use."""
    owner = org if settings.ACME_ACCOUNT_PER_ORG else None
    account = AcmeAccount.objects.filter(directory_url=directory, organization=owner).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return AcmeAccount.objects.create(
                directory_url=directory, organization=owner, email=settings.ACME_EMAIL, key_encrypted=crypto.encrypt(generate_key_pem())
            )
    except IntegrityError:  # another process created it first
        return AcmeAccount.objects.get(directory_url=directory, organization=owner)


def connect(account: AcmeAccount) -> AcmeCA:
    """A client logged in to ``account``'s CA; registers the account on first use."""
    ca = AcmeCA(
        directory=account.directory_url,
        account_key_pem=account.private_key(),
        account_uri=account.uri,
        ca_bundle=settings.ACME_CA_BUNDLE or None,
    )
    with translated_errors(ca, []):
        uri = ca.register(account.email)
    if uri != account.uri:
        AcmeAccount.objects.filter(pk=account.pk).update(uri=uri)
        account.uri = uri
    return ca


# --- errors people can act on ---------------------------------------------------------------------

_DIAL = re.compile(r"dial tcp ([0-9a-fA-F.:\[\]]+?):(\d+): (?:connect: )?(.+)$")


def explain_challenge_error(name: str, error: messages.Error) -> AcmeFailure:
    """Why the CA could not validate ``name``, as the person who owns its DNS needs to hear it."""
    code, detail = error.code or "", (error.detail or str(error)).strip()
    if code == "dns":
        return AcmeFailure(
            f"{name} does not resolve: the CA's DNS lookup failed ({detail}). Add an A or AAAA record pointing at the fleet.",
            kind="validation",
        )
    if code == "connection":
        dial = _DIAL.search(detail)
        if dial:
            address, port, why = dial.groups()
            return AcmeFailure(
                f"{name} does not resolve to the fleet: the CA connected to {address} port {port} and got \"{why}\". "
                f"Point {name}'s A/AAAA records at the fleet's addresses.",
                kind="validation",
            )
        return AcmeFailure(f"{name} does not resolve to the fleet: the CA could not connect ({detail}).", kind="validation")
    if code in ("unauthorized", "incorrectResponse"):
        return AcmeFailure(
            f"{name} does not resolve to the fleet: the server that answered for {name} did not serve the challenge token "
            f"({detail}). Check its DNS records and that no other proxy or CDN sits in front.",
            kind="validation",
        )
    if code == "caa":
        return AcmeFailure(
            f"{name}'s CAA DNS records forbid this CA from issuing ({detail}). Add the CA to its CAA records.", kind="validation"
        )
    if code in ("rejectedIdentifier", "malformed", "unsupportedIdentifier"):
        return AcmeFailure(f"The CA refuses to issue for {name}: {detail}", permanent=True, kind="rejected")
    return AcmeFailure(f"The CA could not validate {name}: {detail}", kind="validation")


class translated_errors:
    """Turn library and network exceptions inside the block into AcmeFailure with a reason."""

    def __init__(self, ca: AcmeCA, names: list[str]):
        self.ca, self.names = ca, names

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, AcmeFailure):
            return False
        what = ", ".join(self.names) or "the account"
        if isinstance(exc, messages.Error):
            if exc.code == "rateLimited":
                wait = self.ca.retry_after(3600)
                raise AcmeFailure(f"CA rate limit for {what}: {exc.detail or exc}", retry_in=wait, kind="rate_limit") from exc
            if exc.code in ("rejectedIdentifier", "malformed", "unsupportedIdentifier", "caa"):
                raise explain_challenge_error(self.names[0] if len(self.names) == 1 else what, exc) from exc
            if exc.code in ("accountDoesNotExist", "unauthorized") and self.ca.account_uri:
                raise AcmeFailure(
                    f"The CA no longer knows this platform's account ({exc.detail}); registering again.", kind="account"
                ) from exc
            raise AcmeFailure(f"The CA ({self.ca.host}) answered with an error for {what}: {exc.detail or exc}") from exc
        if isinstance(exc, requests.exceptions.SSLError):
            raise AcmeFailure(
                f"The CA at {self.ca.host} presented a certificate this platform does not trust ({exc.__class__.__name__}); "
                "set PORTICO_ACME_CA_BUNDLE for a private CA."
            ) from exc
        if isinstance(exc, requests.exceptions.RequestException):
            raise AcmeFailure(f"The CA at {self.ca.host} could not be reached ({exc.__class__.__name__}).") from exc
        if isinstance(exc, errors.Error):
            raise AcmeFailure(f"The ACME exchange with {self.ca.host} failed for {what}: {exc}") from exc
        return False


def poll_interval(started: float) -> float:
    """Short polls first (pebble and a nearby CA answer in milliseconds), longer ones later."""
    elapsed = time.monotonic() - started
    return 0.05 if elapsed < 1 else 0.25 if elapsed < 10 else 1.0
