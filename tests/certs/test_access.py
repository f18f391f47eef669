"""Who may do what with certificates: every org-scoped service in certs.services is tried by
every actor. Strangers get 404 (even through their own organization), roles below the need get
403, and neither changes a row; everyone else succeeds and is named in the audit event."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from audit.models import AuditEvent
from certs import services
from certs.models import Certificate
from django.core.exceptions import PermissionDenied
from django.http import Http404
from edge import services as edge
from tenancy.models import Role

from tests.platform.actors import permitted, too_low

from .minica import MiniCA


@dataclass(frozen=True)
class Case:
    service: str
    action: str
    call: Callable[..., Any]
    done: Callable[[SimpleNamespace], bool]
    takes_object: bool = True
    needs: str = Role.EDITOR

    def __str__(self) -> str:
        return self.service


def _fresh(cert: Certificate) -> Certificate | None:
    return Certificate.objects.filter(pk=cert.pk).first()


CASES = [
    Case(
        "certificate_request", "certificate.issue",
        lambda a, org, w: services.certificate_request(actor=a, org=org, hostnames=["api.test"]),
        lambda w: Certificate.objects.filter(hostnames=["api.test"], status=Certificate.Status.ISSUED).exists(),
        takes_object=False,
    ),
    Case(
        "certificate_upload", "certificate.upload",
        lambda a, org, w: services.certificate_upload(actor=a, org=org, chain_pem=w.chain, key_pem=w.key),
        lambda w: Certificate.objects.filter(source=Certificate.Source.UPLOADED).exists(),
        takes_object=False,
    ),
    Case(
        "certificate_revoke", "certificate.revoke",
        lambda a, org, w: services.certificate_revoke(actor=a, org=org, certificate=w.cert),
        lambda w: _fresh(w.cert).status == Certificate.Status.REVOKED,
        needs=Role.ADMIN,
    ),
    Case(
        "certificate_delete", "certificate.delete",
        lambda a, org, w: services.certificate_delete(actor=a, org=org, certificate=w.cert),
        lambda w: _fresh(w.cert) is None,
    ),
]


@pytest.fixture
def world(cast) -> SimpleNamespace:
    names = ["app.test", "api.test", "shop.example.com"]
    edge.site_create(actor=cast.owner, org=cast.org, name="app", hostnames=names, tls_mode="internal")
    cert = services.certificate_request(actor=cast.owner, org=cast.org, hostnames=["app.test"])
    chain, key = MiniCA().bundle("shop.example.com")
    return SimpleNamespace(cert=cert, chain=chain, key=key)


def test_every_org_scoped_service_is_in_the_matrix():
    scoped = {
        name
        for name, function in inspect.getmembers(services, inspect.isfunction)
        if function.__module__ == services.__name__
        and not name.startswith("_")  # helpers called after require(), or by the system
        and {"actor", "org"} <= set(inspect.signature(function).parameters)
    }
    assert scoped == {case.service for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_outsider_gets_404(case, cast, world, db_state):
    before = db_state()
    with pytest.raises(Http404):
        case.call(cast.outsider, cast.org, world)
    assert db_state() == before


@pytest.mark.parametrize("case", [c for c in CASES if c.takes_object], ids=str)
def test_outsider_cannot_reach_our_certificates_through_their_own_org(case, cast, world, db_state):
    before = db_state()
    with pytest.raises(Http404):
        case.call(cast.outsider, cast.other_org, world)
    assert db_state() == before


@pytest.mark.parametrize(("case", "who"), too_low(CASES), ids=[f"{c}-{w}" for c, w in too_low(CASES)])
def test_a_role_too_low_gets_403(case, who, cast, world, actor_named, db_state):
    actor = actor_named(who)  # tokens are rows: make them before the snapshot
    before = db_state()
    with pytest.raises(PermissionDenied):
        case.call(actor, cast.org, world)
    assert db_state() == before


@pytest.mark.parametrize(("case", "who"), permitted(CASES), ids=[f"{c}-{w}" for c, w in permitted(CASES)])
def test_a_sufficient_role_succeeds_and_is_audited(case, who, cast, world, actor_named):
    actor = actor_named(who)
    case.call(actor, cast.org, world)
    assert case.done(world)
    event = AuditEvent.objects.filter(action=case.action).latest("seq")
    assert event.actor_name == actor.display
