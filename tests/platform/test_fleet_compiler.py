"""fleet/compiler.py: the database becomes one snapshot every worker can serve.

One realistic platform — two organizations, several sites, pools, routes, draining and disabled
backends, organization defaults and site policies, certificates — compiled and checked against
the contract in proxyworker/snapshot.py.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import msgspec
import pytest
from certs.models import Certificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.utils import timezone
from edge import services as edge
from edge.models import Backend, Site
from fleet.compiler import compile_snapshot
from fleet.publisher import content_hash, fleet_key

from proxyworker import snapshot


def _self_signed(*names: str) -> tuple[str, str]:
    """(chain_pem, key_pem) for a throwaway certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _certificate(org, names: list[str], *, status=Certificate.Status.ISSUED, days_left: int = 60) -> tuple[Certificate, str]:
    chain_pem, key_pem = _self_signed(*names)
    cert = Certificate(
        organization=org,
        hostnames=names,
        source=Certificate.Source.UPLOADED,
        status=status,
        chain_pem=chain_pem,
        not_before=timezone.now() - dt.timedelta(days=1),
        not_after=timezone.now() + dt.timedelta(days=days_left),
    )
    cert.set_private_key(key_pem)
    cert.save()
    return cert, key_pem


@pytest.fixture
def two_tenants(cast) -> SimpleNamespace:
    """Two tenants' worth of configuration, made through the services as people would."""
    acme, globex, editor = cast.org, cast.other_org, cast.editor
    # Acme's defaults: every Acme site caches for a minute, has an org-wide rate limit and a header.
    edge.policy_create(actor=editor, org=acme, kind="cache", name="default cache", settings={"default_ttl": 60})
    edge.policy_create(actor=editor, org=acme, kind="rate_limit", name="org limit", settings={"name": "org", "requests": 100})
    edge.policy_create(
        actor=editor,
        org=acme,
        kind="headers",
        name="frame",
        settings=[{"direction": "response", "op": "set", "name": "X-Frame-Options", "value": "DENY"}],
    )

    shop = edge.site_create(
        actor=editor,
        org=acme,
        name="Shop",
        hostnames=["shop.acme.test", "www.acme.test"],
        balancing=Site.Balancing.WEIGHTED_ROUND_ROBIN,
        sticky_cookie="srv",
        force_https=True,
        hsts_max_age=31536000,
        hc_path="/healthz",
        hc_expected_status="200,204",
        backends=[
            {"address": "10.0.0.1", "port": 8080, "weight": 3},
            {"address": "10.0.0.2", "port": 8080, "state": Backend.State.DRAINING},
            {"address": "10.0.0.3", "port": 8080, "state": Backend.State.DISABLED},
            {"pool": "api", "address": "api.internal.test", "port": 8443, "scheme": "https", "sni": "api.internal.test"},
        ],
    )
    edge.route_create(actor=editor, org=acme, site=shop, path_prefix="/api", pool="api", strip_prefix=True)
    edge.policy_create(actor=editor, org=acme, site=shop, kind="cache", name="shop cache", settings={"default_ttl": 300})
    edge.policy_create(
        actor=editor,
        org=acme,
        site=shop,
        kind="rate_limit",
        name="api limit",
        settings={"name": "api", "requests": 10, "path_prefix": "/api"},
    )
    edge.policy_create(
        actor=editor, org=acme, site=shop, kind="waf", name="off for now", settings={"managed": {"sqli": "block"}}, enabled=False
    )

    docs = edge.site_create(
        actor=editor, org=acme, name="Docs", hostnames=["docs.acme.test"], tls_mode=Site.TlsMode.OFF, force_https=True, hsts_max_age=600
    )
    blog = edge.site_create(actor=editor, org=acme, name="Blog", hostnames=["blog.acme.test"], backends=[{"address": "10.0.0.9"}])
    edge.site_pause(actor=editor, org=acme, site=blog)

    portal = edge.site_create(
        actor=cast.outsider,
        org=globex,
        name="Portal",
        hostnames=["globex.test", "*.globex.test"],
        balancing=Site.Balancing.LEAST_CONNECTIONS,
        backends=[{"address": "2001:db8::10", "port": 80}],
    )
    edge.policy_create(actor=cast.outsider, org=globex, site=portal, kind="ip_rules", name="deny", settings={"deny": ["203.0.113.0/24"]})
    edge.policy_create(actor=cast.outsider, org=globex, site=portal, kind="waf", name="waf", settings={"managed": {"sqli": "block"}})

    shop_cert, shop_key = _certificate(acme, ["shop.acme.test", "www.acme.test"])
    _certificate(acme, ["shop.acme.test"], days_left=-1)  # expired
    _certificate(acme, ["docs.acme.test"], status=Certificate.Status.PENDING)
    _certificate(acme, ["blog.acme.test"])  # its site is paused
    return SimpleNamespace(shop=shop, docs=docs, blog=blog, portal=portal, shop_cert=shop_cert, shop_key=shop_key)


def _compile(version: int = 1) -> snapshot.Snapshot:
    return compile_snapshot(version=version, fleet_key=fleet_key())


def _by_name(snap: snapshot.Snapshot) -> dict[str, snapshot.Site]:
    return {s.name: s for s in snap.sites}


def test_snapshot_satisfies_the_contract_and_round_trips(two_tenants):
    snap = _compile(7)
    snapshot.validate(snap)
    body = snapshot.encode(snap)
    assert snapshot.decode(body) == snap
    assert snap.version == 7 and snap.schema == snapshot.SCHEMA


def test_a_signed_snapshot_verifies_with_the_fleet_key(two_tenants):
    snap = _compile(3)
    envelope = snapshot.decode_envelope(snapshot.encode_envelope(snapshot.sign(snap, fleet_key())))
    assert snapshot.verify(envelope, fleet_key()) == snap
    with pytest.raises(snapshot.SnapshotError, match="signature"):
        snapshot.verify(envelope, snapshot.FleetKey("another-fleet-secret-0123456789"))


def test_active_sites_of_every_tenant_are_compiled_and_paused_ones_left_out(cast, two_tenants):
    sites = _by_name(_compile())
    assert set(sites) == {"Shop", "Docs", "Portal"}
    assert sites["Shop"].organization == str(cast.org.pk)
    assert sites["Portal"].organization == str(cast.other_org.pk)
    assert sites["Shop"].hostnames == ["shop.acme.test", "www.acme.test"]
    assert sites["Portal"].hostnames == ["*.globex.test", "globex.test"]


def test_pools_routes_and_backends(two_tenants):
    shop = _by_name(_compile())["Shop"]
    pools = {p.name: p for p in shop.pools}
    assert list(pools) == ["api", "default"]
    default = [(b.address, b.weight, b.state) for b in pools["default"].backends]
    assert default == [("10.0.0.1", 3, "enabled"), ("10.0.0.2", 1, "draining")]  # the disabled one is left out
    (api,) = pools["api"].backends
    assert (api.address, api.port, api.scheme, api.sni) == ("api.internal.test", 8443, "https", "api.internal.test")
    assert shop.routes == [
        snapshot.Route(path_prefix="/api", pool="api", strip_prefix=True),
        snapshot.Route(path_prefix="/", pool="default"),
    ]
    assert (shop.balancing, shop.sticky_cookie) == ("weighted_round_robin", "srv")


def test_health_check_and_https_settings(two_tenants):
    sites = _by_name(_compile())
    shop, docs = sites["Shop"], sites["Docs"]
    assert (shop.health_check.path, shop.health_check.expected_status) == ("/healthz", [200, 204])
    assert shop.force_https and shop.hsts == snapshot.Hsts(max_age=31536000)
    # A plain-HTTP site can neither redirect to HTTPS nor send HSTS.
    assert not docs.force_https and docs.hsts is None


def test_a_site_without_backends_still_compiles_with_an_empty_pool(two_tenants):
    docs = _by_name(_compile())["Docs"]
    assert docs.pools == [snapshot.Pool(name="default", backends=[])]
    assert docs.routes == [snapshot.Route(path_prefix="/", pool="default")]


def test_site_cache_policy_replaces_the_org_default_and_rate_limits_add_up(two_tenants):
    sites = _by_name(_compile())
    shop, docs = sites["Shop"].policies, sites["Docs"].policies
    assert shop.cache.default_ttl == 300
    assert docs.cache.default_ttl == 60
    assert sorted((r.name, r.requests) for r in shop.rate_limits) == [("api", 10), ("org", 100)]
    assert [(r.name, r.requests) for r in docs.rate_limits] == [("org", 100)]
    assert [h.name for h in shop.headers] == [h.name for h in docs.headers] == ["X-Frame-Options"]
    assert shop.waf is None  # disabled policies are left out


def test_one_tenants_defaults_never_reach_another_tenant(two_tenants):
    portal = _by_name(_compile())["Portal"].policies
    assert portal.cache is None and portal.rate_limits == [] and portal.headers == []
    assert portal.ip_rules.deny == ["203.0.113.0/24"]
    assert portal.waf.managed == {"sqli": "block"}


def test_an_issued_certificate_is_included_with_its_key_encrypted_for_the_fleet(two_tenants):
    snap = _compile()
    (cert,) = snap.certificates
    assert cert.id == str(two_tenants.shop_cert.id)
    assert cert.hostnames == ["shop.acme.test", "www.acme.test"]
    assert cert.key_pem is None
    assert fleet_key().decrypt_key(cert.id, cert.key_enc) == two_tenants.shop_key
    assert "BEGIN CERTIFICATE" in cert.chain_pem
    assert b"PRIVATE KEY" not in snapshot.encode(snap)


def test_another_tenants_certificate_is_never_served_for_our_hostname(cast, two_tenants):
    """Globex uploads a newer certificate naming Acme's hostnames: it serves only Globex's own."""
    intruder, _ = _certificate(cast.other_org, ["shop.acme.test", "docs.acme.test", "globex.test"], days_left=80)
    listed = {c.id: c.hostnames for c in _compile().certificates}
    assert listed == {
        str(intruder.id): ["globex.test"],
        str(two_tenants.shop_cert.id): ["shop.acme.test", "www.acme.test"],
    }


def test_the_newest_certificate_wins_each_name_and_lists_only_the_names_it_wins(cast, two_tenants):
    renewal, _ = _certificate(cast.org, ["shop.acme.test"], days_left=89)
    snap = _compile()
    assert [(c.id, c.hostnames) for c in snap.certificates] == [
        (str(renewal.id), ["shop.acme.test"]),
        (str(two_tenants.shop_cert.id), ["www.acme.test"]),
    ]


def test_compiling_twice_gives_the_same_content(two_tenants):
    first, second = _compile(1), _compile(2)
    assert content_hash(first) == content_hash(second)
    assert msgspec.structs.replace(first, version=0, generated_at=0) == msgspec.structs.replace(second, version=0, generated_at=0)


def test_a_change_changes_the_content_hash(cast, two_tenants):
    before = content_hash(_compile())
    edge.backend_update(actor=cast.editor, org=cast.org, backend=two_tenants.shop.backends.get(address="10.0.0.1"), weight=4)
    assert content_hash(_compile()) != before


def test_an_empty_platform_compiles(db):
    snap = _compile()
    assert (snap.sites, snap.certificates) == ([], [])
    snapshot.validate(snap)


def test_one_tenants_broken_site_is_left_out_and_the_others_still_compile(cast, two_tenants):
    from edge.models import Policy

    # A row the services would never write (a hand edit, or an older contract): a rate of "lots".
    shop = Site.objects.get(name="Shop")
    Policy.objects.create(organization=cast.org, site=shop, kind="rate_limit", name="bad", settings={"requests": "lots"})
    skipped: list[dict] = []
    snap = compile_snapshot(version=1, fleet_key=fleet_key(), skipped=skipped)
    assert {s.name for s in snap.sites} == {"Docs", "Portal"}
    assert skipped[0]["name"] == "Shop" and "requests" in skipped[0]["reason"]
    snapshot.validate(snap)


def test_a_publish_records_the_sites_it_left_out(cast, two_tenants):
    from edge.models import Policy
    from fleet.publisher import publish

    shop = Site.objects.get(name="Shop")
    Policy.objects.filter(site=shop).delete()
    Backend.objects.filter(site=shop).update(address="not a host")
    version = publish(force=True)
    assert [s["name"] for s in version.changes["skipped"]] == ["Shop"]
    assert "not a host" in version.changes["skipped"][0]["reason"]


def test_an_unchanged_site_is_reused_and_every_kind_of_change_is_seen(cast, two_tenants):
    """The compiler keeps each site's compiled form with the rows it came from: whatever row of a
    site changes, the next compile must show it, and only the untouched sites are reused."""
    from edge.models import Hostname, Policy, Route
    from edge.platform_policies import platform_policy_set
    from tenancy.access import Actor

    shop = two_tenants.shop
    first = _by_name(_compile(1))
    again = _by_name(_compile(2))
    assert again["Portal"] is first["Portal"] and again["Shop"] is first["Shop"]

    changes = [
        ("site row", lambda: Site.objects.filter(pk=shop.pk).update(hc_path="/ready"),
         lambda s: s.health_check.path == "/ready"),
        ("hostname", lambda: Hostname.objects.filter(name="www.acme.test").update(name="store.acme.test"),
         lambda s: "store.acme.test" in s.hostnames),
        ("backend", lambda: Backend.objects.filter(address="10.0.0.1").update(weight=7),
         lambda s: any(b.weight == 7 for p in s.pools for b in p.backends)),
        ("route", lambda: Route.objects.filter(site=shop, path_prefix="/api").update(path_prefix="/v2"),
         lambda s: any(r.path_prefix == "/v2" for r in s.routes)),
        ("own policy", lambda: Policy.objects.filter(site=shop, kind="cache").update(settings={"default_ttl": 5}),
         lambda s: s.policies.cache.default_ttl == 5),
        ("organization default", lambda: Policy.objects.filter(organization=cast.org, site=None, kind="rate_limit").update(
            settings={"name": "org", "requests": 7}), lambda s: any(r.requests == 7 for r in s.policies.rate_limits)),
        ("platform rule", lambda: platform_policy_set(actor=Actor.system("test"), kind="ip_blocklist",
                                                      settings={"deny": ["198.51.100.0/24"]}),
         lambda s: "198.51.100.0/24" in s.policies.ip_rules.deny),
    ]
    previous = again
    for n, (what, change, seen) in enumerate(changes, start=3):
        change()
        compiled = _by_name(_compile(n))
        assert seen(compiled["Shop"]), what
        assert compiled["Shop"] is not previous["Shop"], what
        if what != "platform rule":  # a platform rule is every site's input
            assert compiled["Portal"] is previous["Portal"], what
        previous = compiled
    assert _by_name(_compile(99))["Shop"] == _by_name(compile_snapshot(version=99, fleet_key=fleet_key()))["Shop"]
