"""The certificates page: status per hostname, issuance followed step by step, upload with errors
next to the field, requests, deletion, and the internal CA's root."""

from __future__ import annotations

from certs import internal_ca
from certs.models import Certificate
from django.urls import reverse
from django.utils import timezone

URL = reverse("frontend:certificates", kwargs={"org_slug": "acme"})
PROGRESS = reverse("frontend:certificate_progress", kwargs={"org_slug": "acme"})


def test_every_hostname_of_mine_with_its_state(cast):
    body = cast.client("viewer").get(URL).content.decode()
    assert "shop.acme.test" in body and "secret.globex.test" not in body


def test_an_editor_uploads_a_certificate(cast):
    issued = internal_ca.issue(["shop.acme.test"])
    response = cast.client("editor").post(URL, {"action": "upload", "chain_pem": issued.chain_pem, "key_pem": issued.key_pem})
    assert response.status_code == 302
    cert = Certificate.objects.get(organization=cast.org, source=Certificate.Source.UPLOADED)
    assert cert.hostnames == ["shop.acme.test"]
    body = cast.client("viewer").get(URL).content.decode()
    assert cert.not_after.strftime("%Y-%m-%d") in body


def test_a_broken_upload_is_explained_next_to_the_field(cast):
    response = cast.client("editor").post(URL, {"action": "upload", "chain_pem": "not a certificate", "key_pem": "nor a key"})
    assert 'id="id_chain_pem_error"' in response.content.decode() or 'id="id_key_pem_error"' in response.content.decode()
    assert not Certificate.objects.exists()


def test_viewers_cannot_upload_and_outsiders_get_404(cast):
    issued = internal_ca.issue(["shop.acme.test"])
    data = {"action": "upload", "chain_pem": issued.chain_pem, "key_pem": issued.key_pem}
    assert cast.client("viewer").post(URL, data).status_code == 403
    assert cast.client("outsider").post(URL, data).status_code == 404
    assert not Certificate.objects.exists()


def test_requesting_a_certificate_for_an_internal_name_issues_it(cast):
    cast.client("editor").post(URL, {"action": "request", "hostname": "shop.acme.test"})
    assert Certificate.objects.get(organization=cast.org).status == Certificate.Status.ISSUED


def test_deleting_a_certificate(cast):
    cast.client("editor").post(URL, {"action": "request", "hostname": "shop.acme.test"})
    cert = Certificate.objects.get(organization=cast.org)
    cast.client("editor").post(URL, {"action": "delete", "certificate": cert.pk})
    assert not Certificate.objects.filter(pk=cert.pk).exists()


def test_issuance_progress_step_by_step_while_it_runs(cast):
    cert = Certificate.objects.create(
        organization=cast.org, hostnames=["shop.acme.test"], source=Certificate.Source.ACME, status=Certificate.Status.VALIDATING,
        order_url="https://ca.example/order/1", challenges_published_at=timezone.now(), progress="Waiting for the CA to fetch the token",
    )
    body = cast.client("viewer").get(PROGRESS).content.decode()
    assert 'hx-trigger="every 2s"' in body  # polled while under way
    assert '<li class="done">Order placed' in body and '<li class="done">Challenge tokens sent' in body
    assert '<li class="current">Certificate authority validating' in body
    assert "Waiting for the CA to fetch the token" in body
    cert.status, cert.answered_at = Certificate.Status.ISSUED, timezone.now()
    cert.save()
    body = cast.client("viewer").get(PROGRESS).content.decode()
    assert "hx-trigger" not in body and "shop.acme.test" not in body  # done: the polling stops


def test_the_internal_ca_root_downloads(cast):
    url = reverse("frontend:internal_ca_root", kwargs={"org_slug": "acme"})
    response = cast.client("viewer").get(url)
    assert response.content.startswith(b"-----BEGIN CERTIFICATE-----")
    assert "attachment" in response["Content-Disposition"]
    assert cast.client("outsider").get(url).status_code == 404
