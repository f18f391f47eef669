"""The certificate services without a CA on the network: the contract other code relies on,
the internal CA, automatic requests, renewal, expiry warnings, revocation and deletion."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from audit.models import AuditEvent
from certs import selectors, services
from certs.models import Certificate, InFlightName, PendingChallenge
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone
from edge import services as edge
from fleet.compiler import compile_snapshot
from fleet.publisher import fleet_key

from .minica import MiniCA

ACME_URL = "https://acme.invalid/directory"


@pytest.fixture
def acme_on(settings):
    settings.ACME_DIRECTORY = ACME_URL


def site(cast, *names, tls_mode="acme", actor=None):
    return edge.site_create(actor=actor or cast.editor, org=cast.org, name=names[0], hostnames=list(names), tls_mode=tls_mode)


def verifies(cert: Certificate, hostname: str) -> bool:
    """Does a strict RFC 5280 client that trusts only the internal root accept it for ``hostname``?"""
    chain = x509.load_pem_x509_certificates(cert.chain_pem.encode())
    root = x509.load_pem_x509_certificate(selectors.internal_ca_root_pem().encode())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(hostname))
    verifier.verify(chain[0], chain[1:])
    return True


# --- certificate_request ---------------------------------------------------------------------------


def test_internal_names_are_issued_at_once_by_the_internal_ca(cast):
    site(cast, "app.localhost", "shop.test", "db.internal")

    cert = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["app.localhost", "Shop.Test", "db.internal"])

    assert (cert.status, cert.source) == (Certificate.Status.ISSUED, Certificate.Source.INTERNAL)
    assert cert.hostnames == ["app.localhost", "shop.test", "db.internal"]
    for name in cert.hostnames:
        assert verifies(cert, name)
    assert cert.renew_after < cert.not_after
    event = AuditEvent.objects.get(action="certificate.issue")
    assert event.changes["hostnames"] == [None, ["app.localhost", "shop.test", "db.internal"]]


def test_sites_set_to_the_internal_ca_get_internal_certificates_for_any_name(cast):
    site(cast, "wiki.corp.example", tls_mode="internal")
    cert = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["wiki.corp.example"])
    assert cert.source == Certificate.Source.INTERNAL and verifies(cert, "wiki.corp.example")


def test_the_internal_ca_is_created_once_and_its_root_is_downloadable(cast, client):
    root = selectors.internal_ca_root_pem()
    assert root == selectors.internal_ca_root_pem()
    assert x509.load_pem_x509_certificate(root.encode()).extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    response = client.get("/certs/internal-ca.pem")
    assert response.status_code == 200 and response.content.decode() == root
    assert "attachment" in response["Content-Disposition"]


def test_public_names_start_an_acme_order_once_the_request_commits(cast, acme_on, django_capture_on_commit_callbacks):
    site(cast, "shop.example.com")
    with django_capture_on_commit_callbacks() as callbacks:
        cert = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["shop.example.com"])
    assert (cert.status, cert.source, cert.directory_url) == (Certificate.Status.PENDING, Certificate.Source.ACME, ACME_URL)
    assert list(InFlightName.objects.values_list("name", flat=True)) == ["shop.example.com"]
    assert len(callbacks) == 1  # the issuance task is enqueued only after commit
    assert AuditEvent.objects.filter(action="certificate.request", actor_name="editor@acme.test").count() == 1


def test_a_second_order_for_a_name_is_refused_while_one_is_in_flight(cast, acme_on):
    site(cast, "shop.example.com", "www.example.com")
    services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["shop.example.com"])
    with pytest.raises(ValidationError) as info:
        services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["www.example.com", "shop.example.com"])
    assert info.value.message_dict == {
        "hostnames": ["A certificate order for shop.example.com is already in progress; wait for it to finish."]
    }
    assert Certificate.objects.count() == 1


def test_only_the_organizations_own_hostnames_can_be_requested(cast, acme_on):
    site(cast, "shop.example.com")
    edge.site_create(actor=cast.outsider, org=cast.other_org, name="Theirs", hostnames=["theirs.example.net"])
    for name in ("theirs.example.net", "nobody.example.net"):
        with pytest.raises(ValidationError) as info:
            services.certificate_request(actor=cast.editor, org=cast.org, hostnames=[name])
        # the same answer whether another organization has the name or nobody does
        assert info.value.message_dict == {"hostnames": [f"{name} is not a hostname of any of your sites; add it to a site first."]}


@pytest.mark.parametrize(
    ("names", "says"),
    [
        (["*.example.com"], "wildcard names need a DNS-01 challenge"),
        (["shop.example.com", "app.test"], "app.test can only get an internal-CA certificate"),
        ([], "Give at least one hostname."),
        (["bad_name.example.com"], "is not a valid hostname"),
    ],
)
def test_requests_that_cannot_be_ordered(cast, acme_on, names, says):
    site(cast, "shop.example.com", "*.example.com", "app.test")
    with pytest.raises(ValidationError) as info:
        services.certificate_request(actor=cast.editor, org=cast.org, hostnames=names)
    assert says in info.value.message_dict["hostnames"][0]


def test_without_an_acme_ca_configured_public_names_are_refused_with_the_setting_to_change(cast, settings):
    settings.ACME_DIRECTORY = ""
    site(cast, "shop.example.com")
    with pytest.raises(ValidationError) as info:
        services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["shop.example.com"])
    assert "PORTICO_ACME_DIRECTORY" in info.value.message_dict["hostnames"][0]


@pytest.mark.parametrize(("who", "error"), [("viewer", PermissionDenied), ("outsider", Http404)])
def test_viewers_cannot_request_and_strangers_get_404(cast, who, error):
    site(cast, "app.test")
    with pytest.raises(error):
        services.certificate_request(actor=getattr(cast, who), org=cast.org, hostnames=["app.test"])
    assert not Certificate.objects.exists()


# --- automatic HTTPS ------------------------------------------------------------------------------


def test_a_new_internal_site_gets_its_certificate_when_it_commits(cast, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        site(cast, "demo.localhost", "api.demo.localhost", tls_mode="internal")
    certs = Certificate.objects.filter(status=Certificate.Status.ISSUED).order_by("hostnames")
    assert [c.hostnames for c in certs] == [["api.demo.localhost"], ["demo.localhost"]]  # one per name


def test_adding_a_hostname_requests_only_what_is_missing(cast, acme_on, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        shop = site(cast, "shop.example.com")
    with django_capture_on_commit_callbacks(execute=True):
        edge.hostname_add(actor=cast.editor, org=cast.org, site=shop, name="www.example.com")
        edge.hostname_add(actor=cast.editor, org=cast.org, site=shop, name="*.example.com")  # needs DNS-01: skipped
    pending = Certificate.objects.filter(status=Certificate.Status.PENDING).order_by("created_at")
    assert [c.hostnames for c in pending] == [["shop.example.com"], ["www.example.com"]]
    assert services.ensure_certificates(site=shop) == []  # idempotent
    tls = selectors.hostname_tls(cast.org)
    assert tls["*.example.com"]["state"] == "needs_upload"
    assert tls["shop.example.com"]["state"] == "pending"


def test_sites_without_automatic_https_get_nothing(cast, acme_on, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        site(cast, "plain.example.com", tls_mode="off")
        site(cast, "custom.example.com", tls_mode="custom")
    assert not Certificate.objects.exists()


def test_switching_a_site_to_automatic_https_requests_its_certificates(cast, django_capture_on_commit_callbacks):
    shop = site(cast, "shop.test", tls_mode="off")
    with django_capture_on_commit_callbacks(execute=True):
        edge.site_update(actor=cast.editor, org=cast.org, site=shop, tls_mode="internal")
    assert Certificate.objects.get().hostnames == ["shop.test"]


# --- renewal, expiry, revocation, deletion ------------------------------------------------------


def test_renewal_reissues_internal_certificates_a_third_before_expiry(cast):
    site(cast, "app.test")
    old = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["app.test"])
    assert services.renew_due() == []
    (new,) = services.renew_due(now=old.renew_after + dt.timedelta(minutes=1))
    old.refresh_from_db()
    assert (old.status, new.status, new.replaces_id) == (Certificate.Status.REPLACED, Certificate.Status.ISSUED, old.pk)
    assert services.renew_due() == []  # the old one is no longer served; the new one is not due
    assert Certificate.objects.filter(status=Certificate.Status.ISSUED).count() == 1


def test_renewal_of_an_acme_certificate_starts_one_order_while_the_old_one_is_served(cast, acme_on):
    site(cast, "shop.example.com")
    now = timezone.now()
    old = Certificate.objects.create(
        organization=cast.org, hostnames=["shop.example.com"], source=Certificate.Source.ACME, status=Certificate.Status.ISSUED,
        not_before=now - dt.timedelta(days=60), not_after=now + dt.timedelta(days=30), renew_after=now - dt.timedelta(hours=1),
    )
    (new,) = services.renew_due()
    assert (new.status, new.replaces_id) == (Certificate.Status.PENDING, old.pk)
    old.refresh_from_db()
    assert old.status == Certificate.Status.ISSUED
    assert services.renew_due() == []  # never two orders for one name
    Certificate.objects.filter(pk=new.pk).update(status=Certificate.Status.FAILED, next_attempt_at=now + dt.timedelta(hours=1))
    InFlightName.objects.all().delete()
    assert services.renew_due() == []  # a failed renewal retries on its own schedule


def test_expiry_is_warned_in_the_audit_log_once_per_threshold(cast):
    ca = MiniCA()
    site(cast, "shop.example.com", tls_mode="custom")
    now = dt.datetime.now(dt.UTC)
    chain, key = ca.bundle("shop.example.com", not_after=now + dt.timedelta(days=20))
    cert = services.certificate_upload(actor=cast.editor, org=cast.org, chain_pem=chain, key_pem=key)

    assert services.warn_expiring() == 0
    assert services.warn_expiring(now=now + dt.timedelta(days=10)) == 1
    assert services.warn_expiring(now=now + dt.timedelta(days=10, hours=1)) == 0
    assert services.warn_expiring(now=now + dt.timedelta(days=19, hours=12)) == 1
    assert services.warn_expiring(now=now + dt.timedelta(days=21)) == 1
    events = AuditEvent.objects.filter(target_id=str(cert.pk), action__startswith="certificate.expir").order_by("seq")
    assert [(e.action, e.changes["days_left"]) for e in events] == [
        ("certificate.expiring", 9),
        ("certificate.expiring", 0),
        ("certificate.expired", 0),
    ]
    assert events[0].changes["renewal"] == "upload a new certificate"
    assert list(selectors.expiring(cast.org)) == []  # 20 days left: not within 14
    assert [c.pk for c in selectors.expiring(cast.org, within=dt.timedelta(days=21))] == [cert.pk]


def test_revoking_an_internal_certificate_stops_serving_it_and_gets_a_new_one(cast, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        site(cast, "app.test", tls_mode="internal")
    cert = Certificate.objects.get()
    with pytest.raises(PermissionDenied):  # irreversible: admins only
        services.certificate_revoke(actor=cast.editor, org=cast.org, certificate=cert)
    with django_capture_on_commit_callbacks(execute=True):
        revoked = services.certificate_revoke(actor=cast.admin, org=cast.org, certificate=cert)
    assert revoked.status == Certificate.Status.REVOKED and revoked.revoked_at
    (fresh,) = Certificate.objects.filter(status=Certificate.Status.ISSUED)
    assert fresh.hostnames == ["app.test"] and fresh.pk != cert.pk
    assert AuditEvent.objects.filter(action="certificate.revoke", actor_name="admin@acme.test").exists()


def test_an_uploaded_certificate_cannot_be_revoked_here(cast):
    site(cast, "shop.example.com", tls_mode="custom")
    chain, key = MiniCA().bundle("shop.example.com")
    cert = services.certificate_upload(actor=cast.editor, org=cast.org, chain_pem=chain, key_pem=key)
    with pytest.raises(ValidationError) as info:
        services.certificate_revoke(actor=cast.admin, org=cast.org, certificate=cert)
    assert "revoke it with its CA" in info.value.message_dict["certificate"][0]


def test_another_organizations_certificate_is_404(cast):
    site(cast, "app.test")
    cert = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["app.test"])
    with pytest.raises(Http404):
        services.certificate_delete(actor=cast.outsider, org=cast.other_org, certificate=cert)
    with pytest.raises(Http404):
        services.certificate_revoke(actor=cast.outsider, org=cast.other_org, certificate=cert)
    assert Certificate.objects.filter(pk=cert.pk, status=Certificate.Status.ISSUED).exists()


def test_deleting_an_order_in_flight_frees_its_names_and_withdraws_its_tokens(cast, acme_on):
    site(cast, "shop.example.com")
    cert = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["shop.example.com"])
    PendingChallenge.objects.create(
        certificate=cert, hostname="shop.example.com", token="tok", key_authorization="tok.thumb", challenge_url="u", authorization_url="a"
    )
    assert [c.token for c in selectors.pending_challenges()] == ["tok"]

    services.certificate_delete(actor=cast.editor, org=cast.org, certificate=cert)

    assert selectors.pending_challenges() == [] and not InFlightName.objects.exists()
    assert AuditEvent.objects.filter(action="certificate.delete").exists()
    services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["shop.example.com"])  # no longer busy


# --- what the fleet gets -----------------------------------------------------------------------------


def test_issued_certificates_reach_the_snapshot_with_keys_encrypted_for_the_fleet(cast, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        site(cast, "app.test", tls_mode="internal")
    cert = Certificate.objects.get()
    snap = compile_snapshot(version=1, fleet_key=fleet_key())
    (served,) = snap.certificates
    assert served.id == str(cert.pk) and served.key_pem is None
    assert fleet_key().decrypt_key(served.id, served.key_enc) == cert.private_key()

    with django_capture_on_commit_callbacks(execute=False):
        services.certificate_revoke(actor=cast.owner, org=cast.org, certificate=cert)
    assert compile_snapshot(version=2, fleet_key=fleet_key()).certificates == []


def test_no_private_key_is_stored_or_shown_in_clear(cast, acme_on):
    site(cast, "app.test", "shop.example.com", tls_mode="acme")
    internal = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["app.test"])
    chain, key = MiniCA().bundle("shop.example.com")
    services.certificate_upload(actor=cast.editor, org=cast.org, chain_pem=chain, key_pem=key)
    from certs import acme_client

    acme_client.account_for(cast.org, ACME_URL)

    from django.apps import apps

    rows = json.dumps([list(m.objects.values()) for m in apps.get_app_config("certs").get_models()], default=str)
    audit = json.dumps(list(AuditEvent.objects.values("changes", "target_repr")), default=str)
    shown = json.dumps([selectors.certificate_view(c) for c in Certificate.objects.all()], default=str)
    for text in (rows, audit, shown):
        assert "PRIVATE KEY" not in text
        assert key.splitlines()[1] not in text and internal.private_key().splitlines()[1] not in text


def test_a_failed_name_is_not_reordered_by_the_sweep_until_someone_asks(cast, acme_on, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        site(cast, "shop.example.com")
    cert = Certificate.objects.get()
    Certificate.objects.filter(pk=cert.pk).update(status=Certificate.Status.FAILED, failure_reason="The CA refuses to issue.")
    InFlightName.objects.all().delete()
    assert services.ensure_all() == 0
    again = services.certificate_request(actor=cast.editor, org=cast.org, hostnames=["shop.example.com"])
    cert.refresh_from_db()
    assert (cert.status, again.status) == (Certificate.Status.REPLACED, Certificate.Status.PENDING)


def test_acme_accounts_are_per_platform_or_per_organization(cast, settings):
    from certs import acme_client

    platform = acme_client.account_for(cast.org, ACME_URL)
    assert platform.organization is None and acme_client.account_for(cast.other_org, ACME_URL) == platform
    settings.ACME_ACCOUNT_PER_ORG = True
    mine, theirs = acme_client.account_for(cast.org, ACME_URL), acme_client.account_for(cast.other_org, ACME_URL)
    assert (mine.organization, theirs.organization) == (cast.org, cast.other_org)
    assert "PRIVATE KEY" not in mine.key_encrypted and mine.private_key().startswith("-----BEGIN PRIVATE KEY-----")
