"""ACME issuance as a resumable state machine, one step per Celery task run.

    pending ─► validating ─► issued
       ▲           │
       └─ failed ◄─┘  (reason for people; retried at next_attempt_at when that can help)

Step 1 (pending): create the order, store the HTTP-01 tokens (``PendingChallenge``), publish a
config version that carries them, and note its number. Step 2 (validating): once that version is
applied on every online worker (``fleet.selectors.rollout_status``) answer the challenges —
any worker may be the one the CA asks — then poll the order, finalize, download the chain and
store it. A worker that has not applied the tokens yet would answer 404 and fail the order, so
the CA is never told to look before the fleet serves them.

Waiting for the fleet does not hold a Celery worker: the step re-enqueues itself (``advance``
returns a delay), so agents' reports (also Celery tasks) are processed even by a one-slot pool.
Every step starts from the database (order URL, CSR, encrypted key), so a crashed task is
resumed by the sweep; a lease (``locked_until``) keeps a duplicate delivery from running a step
twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from acme import crypto_util, messages
from audit.services import record
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from fleet.publisher import publish, publish_on_commit
from fleet.selectors import rollout_status
from tenancy.access import Actor

from . import acme_client, pem
from .acme_client import AcmeFailure, translated_errors
from .models import AcmeAccount, Certificate, InFlightName, PendingChallenge

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=5)
# How long one task run waits in-process for the fleet before handing the wait back to Celery.
IN_TASK_WAIT = 1.0
# How long the CA may take to validate and issue once the challenges are answered.
CA_TIMEOUT = 90.0
# Backoff after a failure, by attempt number (the last value repeats). Failed validations wait
# longer: usually someone has to change DNS, and CAs limit failed validations per hour.
TRANSIENT_DELAYS = (15, 60, 300, 900, 1800, 3600)
VALIDATION_DELAYS = (60, 600, 1800, 3600, 3 * 3600, 6 * 3600)
MAX_ATTEMPTS = 40

ACTOR = Actor.system("certificate issuance")
REREGISTERING = "The CA no longer knows the platform's ACME account; registering again."


def _now() -> dt.datetime:
    return timezone.now()


# --- the lease --------------------------------------------------------------------------------


def _claim(certificate_id) -> bool:
    now = _now()
    return bool(
        Certificate.objects.filter(pk=certificate_id, status__in=Certificate.IN_FLIGHT)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=now + LEASE)
    )


def _release(certificate_id) -> None:
    Certificate.objects.filter(pk=certificate_id).update(locked_until=None)


def _save(cert: Certificate, **fields) -> None:
    for key, value in fields.items():
        setattr(cert, key, value)
    Certificate.objects.filter(pk=cert.pk).update(updated_at=_now(), **fields)


# --- the steps ----------------------------------------------------------------------------------


def advance(certificate_id) -> float | None:
    """Run the next step for one certificate. Returns seconds after which to run again, or None
    when there is nothing more to do now (issued, failed, or someone else holds the lease)."""
    if not _claim(certificate_id):
        return None
    cert = None
    try:
        cert = Certificate.objects.select_related("organization", "account").get(pk=certificate_id)
        if cert.status == Certificate.Status.PENDING:
            if cert.next_attempt_at and cert.next_attempt_at > _now():
                return None
            return _start(cert)
        if cert.status == Certificate.Status.VALIDATING:
            return _continue(cert)
        return None
    except Certificate.DoesNotExist:
        return None
    except AcmeFailure as failure:
        if failure.kind == "account" and cert is not None and cert.progress != REREGISTERING:
            # The CA forgot the account (a test CA restarted, an account deactivated): register
            # again and start over at once — once; a second refusal is an ordinary failure.
            account = cert.account or acme_client.account_for(cert.organization, cert.directory_url or acme_client.directory_url())
            AcmeAccount.objects.filter(pk=account.pk).update(uri="")
            _reset(cert)
            return 0.0
        fail(cert, failure)
        return None
    except Exception as exc:  # a bug or a database hiccup must not leave the order stuck silently
        log.exception("issuance step failed for certificate %s", certificate_id)
        if cert is not None:
            fail(cert, AcmeFailure(f"Internal error while issuing ({exc.__class__.__name__}: {exc})"))
        return None
    finally:
        _release(certificate_id)


def _reset(cert: Certificate) -> None:
    with transaction.atomic():
        PendingChallenge.objects.filter(certificate=cert).delete()
        _save(
            cert, status=Certificate.Status.PENDING, order_url="", answered_at=None, challenge_version=None,
            challenges_published_at=None, progress=REREGISTERING,
        )


def _names_still_ours(cert: Certificate) -> list[str]:
    from edge.models import Hostname

    return list(Hostname.objects.filter(organization_id=cert.organization_id, name__in=cert.hostnames).values_list("name", flat=True))


def _start(cert: Certificate) -> float | None:
    _save(cert, attempts=cert.attempts + 1)  # counted first: failures before the order count too
    names = sorted(_names_still_ours(cert), key=cert.hostnames.index)
    if not names:
        raise AcmeFailure(f"{', '.join(cert.hostnames)} no longer belong to any of your sites.", permanent=True, kind="rejected")
    directory = cert.directory_url or acme_client.directory_url()
    account = cert.account or acme_client.account_for(cert.organization, directory)
    ca = acme_client.connect(account)
    if not cert.key_encrypted:
        cert.set_private_key(acme_client.generate_key_pem())
    csr_pem = crypto_util.make_csr(cert.private_key().encode(), names).decode()
    with translated_errors(ca, names):
        orderr = ca.new_order(csr_pem)
        rows = []
        for authzr in orderr.authorizations:
            authz = authzr.body
            if authz.status == messages.STATUS_VALID:
                continue  # the CA reused a recent validation (RFC 8555 §7.1.3)
            if authz.status != messages.STATUS_PENDING:
                raise AcmeFailure(f"The CA's authorization for {authz.identifier.value} is {authz.status}; starting over.")
            url, token, key_authorization = ca.http01(authz)
            rows.append(
                PendingChallenge(
                    certificate=cert, hostname=authz.identifier.value, token=token, key_authorization=key_authorization,
                    challenge_url=url, authorization_url=authzr.uri,
                )
            )
    with transaction.atomic():
        PendingChallenge.objects.filter(certificate=cert).delete()
        PendingChallenge.objects.bulk_create(rows)
        _save(
            cert,
            hostnames=names,
            status=Certificate.Status.VALIDATING,
            account=account,
            directory_url=directory,
            key_encrypted=cert.key_encrypted,
            csr_pem=csr_pem,
            order_url=orderr.uri,
            answered_at=None,
            challenge_version=None,
            challenges_published_at=None,
            next_attempt_at=None,
            progress="Publishing the HTTP-01 challenge to the fleet." if rows else "The CA reused earlier validations.",
        )
    if not rows:
        _save(cert, answered_at=_now())
        return _finish(cert, ca)
    version = publish(force=True)  # force: the number must be one that carries the new tokens
    _save(
        cert,
        challenge_version=version.number,
        challenges_published_at=_now(),
        progress=f"Waiting for every worker to serve the challenge (config v{version.number}).",
    )
    return _continue(cert, ca)


def _connect(cert: Certificate) -> acme_client.AcmeCA:
    return acme_client.connect(cert.account or acme_client.account_for(cert.organization, cert.directory_url))


def _continue(cert: Certificate, ca: acme_client.AcmeCA | None = None) -> float | None:
    if cert.answered_at is None:
        if cert.challenge_version is None:  # crashed between storing the tokens and publishing
            version = publish(force=True)
            _save(cert, challenge_version=version.number, challenges_published_at=_now())
        wait_until = time.monotonic() + IN_TASK_WAIT
        while True:
            status = rollout_status(cert.challenge_version)
            if status.complete:
                break
            if status.online == 0:
                raise AcmeFailure(
                    f"No proxy worker is online to answer the CA's HTTP-01 challenge for {', '.join(cert.hostnames)}: "
                    "start a worker (python -m proxyworker) and its agent."
                )
            waited = (_now() - cert.challenges_published_at).total_seconds()
            if waited > settings.ACME_ROLLOUT_TIMEOUT:
                rejected = "; ".join(f"{r['worker']} rejected it: {r['reason']}" for r in status.rejected)
                pending = ", ".join(status.pending)
                raise AcmeFailure(
                    f"The challenge did not reach every worker within {settings.ACME_ROLLOUT_TIMEOUT} s ({status}"
                    + (f"; waiting for {pending}" if pending else "")
                    + (f"; {rejected}" if rejected else "")
                    + ")."
                )
            if time.monotonic() > wait_until:
                _save(cert, progress=f"Waiting for every worker to serve the challenge: {status}.")
                return 0.1
            time.sleep(0.02)
        challenges = list(PendingChallenge.objects.filter(certificate=cert))
        ca = ca or _connect(cert)
        with translated_errors(ca, cert.hostnames):
            for challenge in challenges:
                ca.answer(challenge.challenge_url, challenge.token)
        _save(cert, answered_at=_now(), progress=f"The CA is fetching the challenge from http://{cert.hostnames[0]}/.well-known/acme-challenge/.")
    return _finish(cert, ca or _connect(cert))


def _finish(cert: Certificate, ca: acme_client.AcmeCA) -> None:
    started = time.monotonic()
    finalized = False
    with translated_errors(ca, cert.hostnames):
        while True:
            order = ca.order(cert.order_url)
            if order.status == "valid" and order.certificate:
                chain = ca.download(order.certificate)
                break
            if order.status == "invalid":
                raise _why_invalid(ca, order)
            if order.status == "ready" and not finalized:
                _save(cert, progress="Validated; the CA is issuing the certificate.")
                ca.begin_finalization(order, cert.csr_pem)
                finalized = True
            elif order.status == "pending":
                # An authorization may already be invalid while the order still says pending.
                for url in order.authorizations:
                    authz = ca.authorization(url)
                    if authz.status == messages.STATUS_INVALID:
                        raise _why_invalid(ca, order)
            if time.monotonic() - started > CA_TIMEOUT:
                raise AcmeFailure(f"The CA did not finish validating {', '.join(cert.hostnames)} within {CA_TIMEOUT:.0f} s.")
            time.sleep(acme_client.poll_interval(started))
        renew_at = ca.renewal_time(chain)
    _store(cert, chain, renew_at)
    return None


def _why_invalid(ca: acme_client.AcmeCA, order: acme_client.Order) -> AcmeFailure:
    reasons: list[AcmeFailure] = []
    for url in order.authorizations:
        authz = ca.authorization(url)
        for challb in authz.challenges:
            if challb.error is not None:
                reasons.append(acme_client.explain_challenge_error(authz.identifier.value, challb.error))
    if not reasons:
        detail = order.error.detail if order.error is not None else "no reason given"
        return AcmeFailure(f"The CA refused the order: {detail}", kind="validation")
    failure = reasons[0]
    if len(reasons) > 1:
        failure.reason = " ".join(r.reason for r in reasons)
    failure.permanent = all(r.permanent for r in reasons)
    return failure


def renew_time(not_before: dt.datetime, not_after: dt.datetime, ari: dt.datetime | None = None) -> dt.datetime:
    """Renew when a third of the lifetime remains, or earlier if the CA's ARI window says so."""
    by_lifetime = not_after - (not_after - not_before) / 3
    return min(by_lifetime, ari) if ari else by_lifetime


def _store(cert: Certificate, chain_pem: str, renew_at: dt.datetime | None) -> None:
    try:
        parsed = pem.check(chain_pem, cert.private_key())
    except pem.PemProblem as problem:
        raise AcmeFailure(f"The CA returned an unusable certificate: {problem.message}")
    from .services import retire_covered

    with transaction.atomic():
        current = Certificate.objects.select_for_update().filter(pk=cert.pk).first()
        if current is None or current.status != Certificate.Status.VALIDATING:
            return  # deleted while the CA worked
        _save(
            current,
            chain_pem=parsed.chain_pem,
            names=parsed.names,
            not_before=parsed.not_before,
            not_after=parsed.not_after,
            serial=parsed.serial,
            issuer=parsed.issuer,
            fingerprint_sha256=parsed.fingerprint_sha256,
            issued_at=_now(),
            renew_after=renew_time(parsed.not_before, parsed.not_after, renew_at),
            status=Certificate.Status.ISSUED,
            progress="",
            failure_reason="",
            next_attempt_at=None,
        )
        PendingChallenge.objects.filter(certificate=current).delete()
        InFlightName.objects.filter(certificate=current).delete()
        retire_covered(current)
        record(
            org=current.organization,
            actor=ACTOR,
            action="certificate.issue",
            target=current,
            after={
                "hostnames": current.hostnames,
                "issuer": parsed.issuer,
                "serial": parsed.serial,
                "not_after": parsed.not_after.isoformat(),
                "renews": str(current.replaces_id) if current.replaces_id else None,
            },
        )
        publish_on_commit(f"certificate for {', '.join(current.hostnames)} issued")


# --- failures and retries ------------------------------------------------------------------------


def _delay(failure: AcmeFailure, attempts: int) -> float:
    if failure.retry_in is not None:
        return failure.retry_in
    delays = VALIDATION_DELAYS if failure.kind == "validation" else TRANSIENT_DELAYS
    return float(delays[min(max(attempts, 1), len(delays)) - 1])


def fail(cert: Certificate, failure: AcmeFailure) -> None:
    """Record a failure; schedule a retry unless retrying cannot help."""
    with transaction.atomic():
        current = Certificate.objects.select_for_update().filter(pk=cert.pk).first()
        if current is None or current.status not in Certificate.IN_FLIGHT:
            return
        retry_at = None
        reason = failure.reason
        if not failure.permanent and current.attempts < MAX_ATTEMPTS:
            retry_at = _now() + dt.timedelta(seconds=_delay(failure, current.attempts))
            reason = f"{reason} Retrying at {retry_at:%H:%M} UTC ({retry_at:%Y-%m-%d})."
        _save(
            current,
            status=Certificate.Status.FAILED,
            failure_reason=reason,
            next_attempt_at=retry_at,
            progress="",
            answered_at=None,
            challenge_version=None,
        )
        had_tokens = PendingChallenge.objects.filter(certificate=current).delete()[0]
        InFlightName.objects.filter(certificate=current).delete()
        record(
            org=current.organization,
            actor=ACTOR,
            action="certificate.fail",
            target=current,
            changes={"reason": reason, "attempt": current.attempts, "retry_at": retry_at.isoformat() if retry_at else None},
        )
        if had_tokens:
            publish_on_commit("ACME challenge withdrawn")
    log.warning("certificate %s for %s failed: %s", cert.pk, ", ".join(cert.hostnames), reason)


def run(certificate_id, *, timeout: float = 120.0) -> Certificate:
    """Drive one certificate to a resting state in this process (management command, tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delay = advance(certificate_id)
        if delay is None:
            break
        time.sleep(delay)
    return Certificate.objects.get(pk=certificate_id)
