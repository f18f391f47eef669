"""Database → snapshot. A pure read: no writes, no network, deterministic for a given state.

A handful of queries for the whole platform (not one per site), so compiling 10,000 sites stays
cheap. Paused sites and disabled backends are left out; private keys are re-encrypted from the
database's data keys to the fleet key.

A publish usually changes one site of thousands, so each site's compiled form is kept with the rows
it came from (``_SiteMemo``): a site whose rows are equal to last time is reused as it was, not
built and validated again. The rows are always read; only the work on unchanged rows is saved.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any, NamedTuple

import msgspec
from certs.models import Certificate
from django.utils import timezone
from edge import platform_policies
from edge.models import POLICY_SCHEMA, Backend, Hostname, Policy, Route, Site
from edge.services import parse_expected_status

from proxyworker import snapshot

log = logging.getLogger(__name__)

# Kinds where a site's own policy replaces the organization default; the others add up.
_SINGULAR = {Policy.Kind.CACHE, Policy.Kind.COMPRESSION, Policy.Kind.IP_RULES, Policy.Kind.WAF}


def compile_snapshot(
    *,
    version: int,
    fleet_key: snapshot.FleetKey,
    acme_challenges: list[snapshot.AcmeChallenge] | None = None,
    skipped: list[dict[str, str]] | None = None,
) -> snapshot.Snapshot:
    """The snapshot of every active site. A site that cannot be compiled or fails validation (it
    should never pass the services, but a database edited by hand or a contract change can make
    one) is left out and named in ``skipped``, so one tenant's bad row never stops the fleet."""
    # Five flat queries read as tuples and grouped here: ORM instances and prefetch_related cost
    # ~1 ms per site, which made 10,000 sites a 7 s compile.
    sites = list(Site.objects.filter(state=Site.State.ACTIVE).order_by("id").values(*_SITE_COLUMNS))
    active = {row["id"] for row in sites}
    hostnames: dict[Any, list[str]] = defaultdict(list)
    for site_id, name in Hostname.objects.order_by("name").values_list("site_id", "name"):
        hostnames[site_id].append(name)
    routes: dict[Any, list[snapshot.Route]] = defaultdict(list)
    broken_routes: dict[Any, str] = {}
    for site_id, prefix, pool, strip, rewrite, kind, parts in Route.objects.order_by("-path_prefix").values_list(
        "site_id", "path_prefix", "pool", "strip_prefix", "rewrite_prefix", "kind", "aggregate"
    ):
        try:
            aggregate = msgspec.convert(parts, list[snapshot.AggregatePart]) if kind == Route.Kind.AGGREGATE else []
        except msgspec.ValidationError as exc:  # a row the services would have refused: leave its site out
            broken_routes[site_id] = f"route {prefix!r}: aggregate parts: {exc}"
            continue
        routes[site_id].append(snapshot.Route(path_prefix=prefix, pool=pool, strip_prefix=strip,
                                              rewrite_prefix=rewrite or None, aggregate=aggregate))
    backends: dict[Any, list[tuple[str, snapshot.Backend]]] = defaultdict(list)
    for row in (
        Backend.objects.exclude(state=Backend.State.DISABLED).order_by("created_at", "id").values_list(*_BACKEND_COLUMNS)
    ):
        site_id, pool, bid, address, port, scheme, weight, state, tls_verify, ca_pem, sni = row
        backends[site_id].append(
            (pool, snapshot.Backend(id=str(bid), address=address, port=port, scheme=scheme, weight=weight, state=state,
                                    tls_verify=tls_verify, ca_pem=ca_pem or None, sni=sni or None))
        )
    own_policies: dict[Any, list[PolicyRow]] = defaultdict(list)
    org_defaults: dict[Any, list[PolicyRow]] = defaultdict(list)
    for org_id, site_id, kind, settings in Policy.objects.filter(enabled=True).order_by("kind", "name", "id").values_list(
        "organization_id", "site_id", "kind", "settings"
    ):
        if site_id is None:
            org_defaults[org_id].append(PolicyRow(kind, settings))
        elif site_id in active:
            own_policies[site_id].append(PolicyRow(kind, settings))

    platform_rules = platform_policies.load()  # staff's rules, merged on top of every tenant's own

    compiled = []
    memo = _memo.begin()
    for row in sites:
        sid = row["id"]
        inputs = (tuple(row.values()), hostnames[sid], routes[sid], backends[sid], own_policies[sid],
                  org_defaults[row["organization_id"]], platform_rules, broken_routes.get(sid))
        site = memo.get(sid, inputs)
        if site is None:
            try:
                site = _site(row, hostnames[sid], routes[sid], backends[sid],
                             effective_policies(own_policies[sid], org_defaults[row["organization_id"]]))
                if sid in broken_routes:
                    raise snapshot.SnapshotError(broken_routes[sid])
                platform_policies.apply(site, platform_rules)
                snapshot.validate_site(site)
            except (snapshot.SnapshotError, msgspec.ValidationError, ValueError) as exc:
                log.error("site %s (%s) left out of the snapshot: %s", row["name"], sid, exc)
                if skipped is not None:
                    skipped.append({"site": str(sid), "name": row["name"], "reason": str(exc)})
                continue
        memo.put(sid, inputs, site)
        compiled.append(site)
    _memo.commit(memo)
    served = {name: s.organization for s in compiled for name in s.hostnames}
    certificates = _certificates(served, fleet_key)
    snap = snapshot.Snapshot(
        version=version,
        generated_at=timezone.now().timestamp(),
        sites=compiled,
        certificates=certificates,
        acme_challenges=sorted(acme_challenges or [], key=lambda c: (c.hostname, c.token)),
    )
    snapshot.validate(snap, sites_checked=True)  # each site passed validate_site above (or when it was memoized)
    return snap


class PolicyRow(NamedTuple):
    kind: str
    settings: Any


class _SiteMemo:
    """The sites of the last compile in this process, each with the rows it was built from.

    A compile reads through ``begin()`` and publishes its own sites with ``commit()``; sites that
    were not compiled this time (deleted, paused, left out) fall out. The reused ``snapshot.Site``
    objects are shared between snapshots, which is safe because nothing changes a snapshot after
    it is compiled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[Any, tuple[tuple, snapshot.Site]] = {}

    def begin(self) -> _MemoRun:
        with self._lock:
            return _MemoRun(self._sites)

    def commit(self, run: _MemoRun) -> None:
        with self._lock:
            self._sites = run.fresh

    def clear(self) -> None:
        with self._lock:
            self._sites = {}


class _MemoRun:
    def __init__(self, previous: dict) -> None:
        self.previous = previous
        self.fresh: dict[Any, tuple[tuple, snapshot.Site]] = {}

    def get(self, site_id, inputs: tuple) -> snapshot.Site | None:
        hit = self.previous.get(site_id)
        return hit[1] if hit is not None and hit[0] == inputs else None

    def put(self, site_id, inputs: tuple, site: snapshot.Site) -> None:
        self.fresh[site_id] = (inputs, site)


_memo = _SiteMemo()


_SITE_COLUMNS = (
    "id", "organization_id", "name", "tls_mode", "tls_min_version", "force_https", "hsts_max_age", "hsts_include_subdomains",
    "hsts_preload", "balancing", "sticky_cookie", "hc_enabled", "hc_path", "hc_interval", "hc_timeout", "hc_expected_status",
    "hc_rise", "hc_fall", "max_body_bytes",
)
_BACKEND_COLUMNS = ("site_id", "pool", "id", "address", "port", "scheme", "weight", "state", "tls_verify", "ca_pem", "sni")


def _site(
    site: dict[str, Any],
    hostnames: list[str],
    routes: list[snapshot.Route],
    backends: list[tuple[str, snapshot.Backend]],
    policies: snapshot.Policies,
) -> snapshot.Site:
    pools: dict[str, list[snapshot.Backend]] = defaultdict(list)
    for pool, backend in backends:
        pools[pool].append(backend)
    routes = list(routes)
    if not any(r.path_prefix == "/" for r in routes):
        routes.append(snapshot.Route(path_prefix="/", pool="default"))
    # A route to a pool with no backend still compiles: the worker answers 503 for it.
    for route in routes:
        pools.setdefault(route.pool, [])
        for part in route.aggregate:
            if part.pool:
                pools.setdefault(part.pool, [])
    tls = site["tls_mode"] != Site.TlsMode.OFF
    return snapshot.Site(
        id=str(site["id"]),
        organization=str(site["organization_id"]),
        name=site["name"],
        hostnames=hostnames,
        pools=[snapshot.Pool(name=name, backends=members) for name, members in sorted(pools.items())],
        routes=routes,
        balancing=site["balancing"],
        sticky_cookie=site["sticky_cookie"] or None,
        health_check=snapshot.HealthCheck(
            enabled=site["hc_enabled"],
            path=site["hc_path"],
            interval=site["hc_interval"],
            timeout=site["hc_timeout"],
            expected_status=parse_expected_status(site["hc_expected_status"]),
            rise=site["hc_rise"],
            fall=site["hc_fall"],
        ),
        force_https=site["force_https"] and tls,
        hsts=snapshot.Hsts(
            max_age=site["hsts_max_age"],
            include_subdomains=site["hsts_include_subdomains"],
            preload=site["hsts_preload"],
        )
        if site["hsts_max_age"] and tls
        else None,
        tls_min_version=site["tls_min_version"],
        max_body_bytes=site["max_body_bytes"],
        policies=policies,
    )


def effective_policies(own: list[PolicyRow], defaults: list[PolicyRow]) -> snapshot.Policies:
    """A site's own policies on top of its organization's defaults."""
    out = snapshot.Policies()
    own_kinds = {p.kind for p in own}
    for policy in [*(d for d in defaults if not (d.kind in _SINGULAR and d.kind in own_kinds)), *own]:
        value = msgspec.convert(policy.settings, POLICY_SCHEMA[policy.kind])
        if policy.kind == Policy.Kind.RATE_LIMIT:
            out.rate_limits.append(value)
        elif policy.kind == Policy.Kind.HEADERS:
            out.headers.extend(value)
        elif policy.kind == Policy.Kind.BASIC_AUTH:
            out.basic_auth.append(value)
        else:
            setattr(out, policy.kind, value)
    return out


def _certificates(served: dict[str, str], fleet_key: snapshot.FleetKey) -> list[snapshot.Certificate]:
    """Issued, unexpired certificates covering at least one served hostname; newest wins per name.

    ``served`` maps each served hostname to the organization whose site serves it: a certificate
    is only ever served for its own organization's names (another tenant could upload one for
    any name). Each certificate lists only the names it wins, because the worker maps every
    listed name to its certificate and would otherwise let a later, older one win.
    """
    now = timezone.now()
    out, covered = [], set()
    for cert in Certificate.objects.filter(status=Certificate.Status.ISSUED).order_by("-not_after", "id"):
        if cert.not_after and cert.not_after <= now:
            continue
        org = str(cert.organization_id)
        names = [n for n in cert.hostnames if served.get(n) == org and n not in covered]
        if not names:
            continue
        covered.update(names)
        out.append(
            snapshot.Certificate(
                id=str(cert.id),
                hostnames=names,
                chain_pem=cert.chain_pem,
                key_enc=fleet_key.encrypt_key(str(cert.id), cert.private_key()),
            )
        )
    return out
