"""Platform policies reach a real worker: a staff rule blocks requests on a tenant's site that has
no rule of its own, through the compiler, with nothing new in the worker."""

from __future__ import annotations

import urllib.parse

from edge import services as edge
from edge.platform_policies import platform_policy_set
from fleet.compiler import compile_snapshot
from fleet.publisher import fleet_key
from tenancy.access import Actor
from tenancy.models import Organization, User

from ..proxyworker.conftest import backend_factory, get, worker_factory  # noqa: F401  fixtures


def test_a_platform_blocklist_and_managed_waf_block_requests_on_a_site_without_rules(db, backend_factory, worker_factory):  # noqa: F811
    origin = backend_factory()
    org = Organization.objects.create(name="Acme", slug="acme")
    site = edge.site_create(actor=Actor.system("test"), org=org, name="shop", hostnames=["shop.acme.test"],
                            backends=[{"address": "127.0.0.1", "port": origin.port}], tls_mode="off")
    # The tenant's own WAF policy turns SQL-injection checks off: the platform's rule overrides it.
    edge.policy_create(actor=Actor.system("test"), org=org, site=site, kind="waf", name="mine",
                       settings={"managed": {"sqli": "off"}})
    staff = Actor.for_user(User.objects.create_user(email="ops@portico.test", password="x", is_staff=True))
    attack = "/?" + urllib.parse.urlencode({"id": "1 UNION SELECT password FROM users"})

    worker = worker_factory(compile_snapshot(version=1, fleet_key=fleet_key()))
    assert get(worker, "shop.acme.test", "/", source="127.0.0.2").status == 200
    assert get(worker, "shop.acme.test", attack).status == 200

    platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": ["127.0.0.2/32"]})
    platform_policy_set(actor=staff, kind="managed_waf", settings={"groups": ["sqli"]})
    worker.swap(compile_snapshot(version=2, fleet_key=fleet_key()))
    hits = origin.hits
    assert get(worker, "shop.acme.test", "/", source="127.0.0.2").status == 403
    assert get(worker, "shop.acme.test", attack).status == 403
    assert origin.hits == hits  # neither reached the origin
    assert get(worker, "shop.acme.test", "/", source="127.0.0.3").status == 200

    platform_policy_set(actor=staff, kind="ip_blocklist", settings={"deny": ["127.0.0.2/32"]}, enabled=False)
    worker.swap(compile_snapshot(version=3, fleet_key=fleet_key()))
    assert get(worker, "shop.acme.test", "/", source="127.0.0.2").status == 200
