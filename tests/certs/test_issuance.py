"""The issuance state machine against a real pebble, where the fleet is missing or slow: the CA is
never asked to validate before every online worker serves the token, and each failure says why
in words a person can act on."""

from __future__ import annotations

import datetime as dt

import pytest
from certs import issuance, services
from certs.models import Certificate, InFlightName, PendingChallenge
from django.utils import timezone
from edge import services as edge
from fleet.models import ConfigVersion, Worker

from proxyworker import snapshot
from tests.e2e.processes import free_port

from .conftest import point_at


@pytest.fixture
def pebble(pebble_factory, settings):
    p = pebble_factory(http_port=free_port())
    point_at(p, settings)
    return p


def order(cast, name="shop.example.com") -> Certificate:
    edge.site_create(actor=cast.editor, org=cast.org, name=name, hostnames=[name], tls_mode="custom")
    return services.certificate_request(actor=cast.editor, org=cast.org, hostnames=[name])


def test_without_an_online_worker_the_order_fails_with_what_to_do(cast, pebble):
    cert = issuance.run(order(cast).pk, timeout=30)

    assert cert.status == Certificate.Status.FAILED
    assert cert.failure_reason.startswith(
        "No proxy worker is online to answer the CA's HTTP-01 challenge for shop.example.com: start a worker"
    )
    assert "Retrying at" in cert.failure_reason
    assert cert.next_attempt_at > timezone.now()
    assert not PendingChallenge.objects.exists() and not InFlightName.objects.exists()


def test_the_ca_is_not_asked_before_every_worker_serves_the_token(cast, pebble, settings):
    settings.ACME_ROLLOUT_TIMEOUT = 3
    Worker.objects.create(name="slow", last_heartbeat=timezone.now(), version=0)  # online, never applies anything
    cert = order(cast)

    delay = issuance.advance(cert.pk)  # creates the order and publishes the tokens

    assert delay is not None  # it waits, without holding a Celery worker
    cert.refresh_from_db()
    assert cert.status == Certificate.Status.VALIDATING and cert.answered_at is None
    version = ConfigVersion.objects.get(number=cert.challenge_version)
    published = snapshot.decode(snapshot.decode_envelope(version.envelope).body)
    (challenge,) = published.acme_challenges
    assert challenge.hostname == "shop.example.com" and challenge.key_authorization.startswith(challenge.token + ".")
    assert cert.progress.startswith("Waiting for every worker to serve the challenge")

    cert = issuance.run(cert.pk, timeout=30)
    assert cert.status == Certificate.Status.FAILED
    assert cert.failure_reason.startswith(
        f"The challenge did not reach every worker within 3 s (v{version.number} applied on 0 of 1 workers; waiting for slow)."
    )
    assert cert.answered_at is None  # the challenge was never answered: no failed validation at the CA


def test_a_duplicate_task_does_not_run_a_step_twice(cast, pebble):
    cert = order(cast)
    Certificate.objects.filter(pk=cert.pk).update(locked_until=timezone.now() + dt.timedelta(minutes=1))
    assert issuance.advance(cert.pk) is None
    cert.refresh_from_db()
    assert cert.status == Certificate.Status.PENDING and cert.order_url == ""


def test_an_unreachable_ca_is_retried_later(cast, settings):
    settings.ACME_DIRECTORY = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens there
    cert = issuance.run(order(cast).pk, timeout=30)
    assert cert.status == Certificate.Status.FAILED
    assert cert.failure_reason.startswith(f"The CA at 127.0.0.1:{settings.ACME_DIRECTORY.split(':')[2].split('/')[0]} could not be reached")
    assert 10 <= (cert.next_attempt_at - timezone.now()).total_seconds() <= 16  # first transient retry: 15 s

    assert services.retry_due() == 0
    assert services.retry_due(now=cert.next_attempt_at) == 1
    cert.refresh_from_db()
    assert cert.status == Certificate.Status.PENDING and list(InFlightName.objects.values_list("name", flat=True)) == [
        "shop.example.com"
    ]


def test_an_account_the_ca_forgot_is_registered_again(cast, pebble):
    from certs import acme_client
    from certs.models import AcmeAccount

    account = acme_client.account_for(cast.org, pebble.directory_url)
    acme_client.connect(account)
    real_uri = AcmeAccount.objects.get().uri
    AcmeAccount.objects.update(uri=real_uri.rsplit("/", 1)[0] + "/forgotten")  # as after a CA reset

    cert = issuance.run(order(cast).pk, timeout=30)

    assert AcmeAccount.objects.get().uri == real_uri  # the same key finds its account again
    assert cert.failure_reason.startswith("No proxy worker is online")  # got past the order, to the fleet
