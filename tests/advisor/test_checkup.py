"""Each finding appears after a real configuration change and clears after the fix."""

from __future__ import annotations

import datetime as dt

import pytest
from advisor.models import Finding
from advisor.services import checkup_run, finding_acknowledge
from audit.models import AuditEvent
from certs.models import Certificate
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone
from edge import services as edge
from edge.models import Policy
from tenancy import services as tenancy
from tenancy.access import Actor
from tenancy.models import ApiToken, Membership, Role

from tests.certs.minica import MiniCA

SYSTEM = Actor.system("test")


def open_rules(org) -> set[str]:
    checkup_run(actor=SYSTEM, org=org)
    return set(Finding.objects.for_org(org).filter(resolved_at__isnull=True).values_list("rule", flat=True))


@pytest.fixture
def site(cast):
    return edge.site_create(actor=cast.editor, org=cast.org, name="shop", hostnames=["shop.acme.test"],
                            backends=[{"address": "10.0.0.5", "port": 8080}], tls_mode="off")


def test_plain_http_site_is_found_and_cleared_by_turning_tls_on(cast, site):
    assert "tls-off" in open_rules(cast.org)
    edge.site_update(actor=cast.editor, org=cast.org, site=site, tls_mode="acme")
    rules = open_rules(cast.org)
    assert "tls-off" not in rules
    assert {"https-not-forced", "hsts-missing"} <= rules
    edge.site_update(actor=cast.editor, org=cast.org, site=site, force_https=True, hsts_max_age=31536000)
    assert not {"tls-off", "https-not-forced", "hsts-missing"} & open_rules(cast.org)
    assert Finding.objects.get(rule="tls-off").resolved_at is not None


def test_public_plain_http_backend_and_unverified_tls_are_found_and_cleared(cast, site):
    backend = edge.backend_create(actor=cast.editor, org=cast.org, site=site, address="93.184.216.34", port=80)
    assert "backend-plain-http" in open_rules(cast.org)  # 10.0.0.5 (private) alone would not be
    assert Finding.objects.filter(rule="backend-plain-http").count() == 1
    edge.backend_update(actor=cast.editor, org=cast.org, backend=backend, scheme="https", port=443, tls_verify=False)
    rules = open_rules(cast.org)
    assert "backend-plain-http" not in rules and "backend-tls-unverified" in rules
    edge.backend_update(actor=cast.editor, org=cast.org, backend=backend, tls_verify=True)
    assert "backend-tls-unverified" not in open_rules(cast.org)


def test_waf_off_then_log_only_for_long_then_blocking(cast, site):
    assert "waf-off" in open_rules(cast.org)
    waf = edge.policy_create(actor=cast.editor, org=cast.org, site=site, kind="waf", name="waf",
                             settings={"managed": {"sqli": "log", "xss": "log"}})
    assert "waf-off" not in open_rules(cast.org)
    assert "waf-log-only" not in open_rules(cast.org)  # log-only is fine while trying rules out
    Policy.objects.filter(pk=waf.pk).update(updated_at=timezone.now() - dt.timedelta(days=20))
    assert "waf-log-only" in open_rules(cast.org)
    edge.policy_update(actor=cast.editor, org=cast.org, policy=waf, settings={"managed": {"sqli": "block", "xss": "block"}})
    assert not {"waf-off", "waf-log-only"} & open_rules(cast.org)


def test_a_login_route_without_rate_limit_is_found_until_one_covers_it(cast, site):
    assert "login-no-rate-limit" not in open_rules(cast.org)
    edge.route_create(actor=cast.editor, org=cast.org, site=site, path_prefix="/wp-login.php")
    assert "login-no-rate-limit" in open_rules(cast.org)
    edge.policy_create(actor=cast.editor, org=cast.org, site=site, kind="rate_limit", name="logins",
                       settings={"requests": 10, "per_seconds": 60, "path_prefix": "/wp-login"})
    assert "login-no-rate-limit" not in open_rules(cast.org)


def test_expiring_and_incomplete_certificates(cast, site):
    chain, key = MiniCA().bundle("shop.acme.test")
    leaf_only = chain.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    cert = Certificate(organization=cast.org, hostnames=["shop.acme.test"], source="uploaded", status="issued",
                       chain_pem=leaf_only, not_after=timezone.now() + dt.timedelta(days=5))
    cert.set_private_key(key)
    cert.save()
    assert {"certificate-expiring", "certificate-chain-incomplete"} <= open_rules(cast.org)
    Certificate.objects.filter(pk=cert.pk).update(chain_pem=chain, not_after=timezone.now() + dt.timedelta(days=80))
    assert not {"certificate-expiring", "certificate-chain-incomplete"} & open_rules(cast.org)


def test_an_expired_certificate_alerts_once_and_acknowledging_is_audited(cast, site):
    cert = Certificate(organization=cast.org, hostnames=["shop.acme.test"], source="uploaded", status="issued",
                       not_after=timezone.now() - dt.timedelta(days=1))
    cert.save()
    for _ in range(3):
        checkup_run(actor=SYSTEM, org=cast.org)
    assert AuditEvent.objects.filter(organization=cast.org, action="advisor.alert").count() == 1
    finding = Finding.objects.get(rule="certificate-expired")
    with pytest.raises(PermissionDenied):
        finding_acknowledge(actor=cast.viewer, org=cast.org, finding=finding)
    with pytest.raises(Http404):
        finding_acknowledge(actor=cast.outsider, org=cast.other_org, finding=finding)
    finding_acknowledge(actor=cast.admin, org=cast.org, finding=finding)
    assert AuditEvent.objects.filter(organization=cast.org, action="advisor.acknowledge").count() == 1
    # resolved, then back: an acknowledged finding does not alert again
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() + dt.timedelta(days=60))
    checkup_run(actor=SYSTEM, org=cast.org)
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() - dt.timedelta(days=1))
    checkup_run(actor=SYSTEM, org=cast.org)
    assert AuditEvent.objects.filter(organization=cast.org, action="advisor.alert").count() == 1


def test_members_without_two_factor_and_a_single_owner(cast):
    from allauth.mfa.models import Authenticator

    rules = Finding.objects.for_org(cast.org)
    checkup_run(actor=SYSTEM, org=cast.org)
    subjects = set(rules.filter(rule="member-no-2fa", resolved_at__isnull=True).values_list("subject", flat=True))
    assert f"user:{cast.owner.user.pk}" in subjects and f"user:{cast.viewer.user.pk}" not in subjects
    assert rules.filter(rule="single-owner", resolved_at__isnull=True).exists()
    Authenticator.objects.create(user=cast.owner.user, type=Authenticator.Type.TOTP, data={})
    tenancy.membership_set_role(actor=cast.owner, org=cast.org,
                                membership=Membership.objects.get(organization=cast.org, user=cast.admin.user), role=Role.OWNER)
    checkup_run(actor=SYSTEM, org=cast.org)
    assert not rules.filter(rule="member-no-2fa", subject=f"user:{cast.owner.user.pk}", resolved_at__isnull=True).exists()
    assert not rules.filter(rule="single-owner", resolved_at__isnull=True).exists()


def test_tokens_that_never_expire_or_sit_unused(cast):
    token, _ = tenancy.token_create(actor=cast.admin, org=cast.org, name="ci")
    rules = open_rules(cast.org)
    assert "token-never-expires" in rules and "token-unused" not in rules
    ApiToken.objects.filter(pk=token.pk).update(created_at=timezone.now() - dt.timedelta(days=120))
    assert "token-unused" in open_rules(cast.org)
    tenancy.token_revoke(actor=cast.admin, org=cast.org, token=token)
    assert not {"token-never-expires", "token-unused"} & open_rules(cast.org)


def test_a_header_rule_putting_origin_headers_back_is_found_until_removed(cast, site):
    rules = [{"direction": "response", "op": "set", "name": "X-Powered-By", "value": "PHP/5.1"},
             {"direction": "response", "op": "set", "name": "X-Frame-Options", "value": "DENY"}]
    assert "origin-header-leak" not in open_rules(cast.org)
    policy = edge.policy_create(actor=cast.editor, org=cast.org, site=site, kind="headers", name="mine", settings=rules)
    assert "origin-header-leak" in open_rules(cast.org)
    finding = Finding.objects.get(rule="origin-header-leak")
    assert "X-Powered-By" in finding.title and "mine" in finding.fix
    edge.policy_update(actor=cast.editor, org=cast.org, policy=policy, settings=rules[1:])
    assert "origin-header-leak" not in open_rules(cast.org)
    # a request rule of that name leaks nothing to visitors
    edge.policy_update(actor=cast.editor, org=cast.org, policy=policy,
                       settings=[{"direction": "request", "op": "set", "name": "Server", "value": "x"}])
    assert "origin-header-leak" not in open_rules(cast.org)


def test_running_the_check_up_on_demand_needs_an_editor(cast, site):
    with pytest.raises(PermissionDenied):
        checkup_run(actor=cast.viewer, org=cast.org)
    with pytest.raises(Http404):
        checkup_run(actor=cast.outsider, org=cast.org)
    assert checkup_run(actor=cast.editor, org=cast.org).open > 0


def test_a_new_critical_finding_opens_one_alert_and_the_fix_resolves_it(cast, site, django_capture_on_commit_callbacks):
    from traffic.models import Alert

    cert = Certificate(organization=cast.org, hostnames=["shop.acme.test"], source="uploaded", status="issued",
                       not_after=timezone.now() - dt.timedelta(days=1))
    cert.save()
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            checkup_run(actor=SYSTEM, org=cast.org)
    alert = Alert.objects.get(organization=cast.org, kind=Alert.Kind.SECURITY_FINDING)
    assert alert.resolved_at is None and "expired" in alert.summary
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() + dt.timedelta(days=60))
    with django_capture_on_commit_callbacks(execute=True):
        checkup_run(actor=SYSTEM, org=cast.org)
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert Alert.objects.filter(organization=cast.org, kind=Alert.Kind.SECURITY_FINDING).count() == 1
