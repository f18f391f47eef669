"""Every change to what the proxy serves. Each function checks the actor's role, validates with
errors that name the field, writes in one transaction with its audit event, and asks for a
config publish once the transaction commits."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
from typing import Any

import msgspec
from audit.services import record
from certs.services import ensure_certificates_on_commit
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict
from fleet.publisher import publish_on_commit
from tenancy.access import Actor, ensure_in_org, require
from tenancy.models import Organization, Role

from proxyworker import snapshot

from .models import POLICY_SCHEMA, Backend, Hostname, Policy, Route, Site

_SITE_FIELDS = (
    "name",
    "state",
    "tls_mode",
    "tls_min_version",
    "force_https",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
    "balancing",
    "sticky_cookie",
    "hc_enabled",
    "hc_path",
    "hc_interval",
    "hc_timeout",
    "hc_expected_status",
    "hc_rise",
    "hc_fall",
    "max_body_bytes",
    "require_backend_tls",
)
_BACKEND_FIELDS = ("pool", "address", "port", "scheme", "weight", "state", "tls_verify", "ca_pem", "sni")
_POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")


def _snapshot_of(obj, fields) -> dict[str, Any]:
    return model_to_dict(obj, fields=fields)


def _refuse_unknown(given, allowed) -> None:
    """A field the service does not take is a 400 naming it, not a silent no-op."""
    unknown = set(given) - set(allowed)
    if unknown:
        raise ValidationError({f: "Unknown field." for f in unknown})


# --- validation ---------------------------------------------------------------------------------


def _check_site(site: Site) -> None:
    errors: dict[str, str] = {}
    if not site.name.strip():
        errors["name"] = "A name is required."
    for field in ("state", "tls_mode", "balancing"):
        choices = dict(Site._meta.get_field(field).choices)
        if getattr(site, field) not in choices:
            errors[field] = f"Unknown value {getattr(site, field)!r}; use one of {', '.join(choices)}."
    if site.tls_min_version not in ("1.2", "1.3"):
        errors["tls_min_version"] = "Use 1.2 or 1.3."
    if site.sticky_cookie and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", site.sticky_cookie):
        errors["sticky_cookie"] = "A cookie name of letters, digits, - and _ (at most 64)."
    if not site.hc_path.startswith("/"):
        errors["hc_path"] = "The health-check path must start with /."
    if not 0.1 <= site.hc_interval <= 3600:
        errors["hc_interval"] = "Between 0.1 and 3600 seconds."
    if not 0.05 <= site.hc_timeout <= 60:
        errors["hc_timeout"] = "Between 0.05 and 60 seconds."
    elif site.hc_timeout > site.hc_interval:
        errors["hc_timeout"] = "The timeout must not exceed the interval."
    if not 1 <= site.hc_rise <= 100:
        errors["hc_rise"] = "Between 1 and 100."
    if not 1 <= site.hc_fall <= 100:
        errors["hc_fall"] = "Between 1 and 100."
    try:
        parse_expected_status(site.hc_expected_status)
    except ValueError as exc:
        errors["hc_expected_status"] = str(exc)
    if site.hsts_preload and site.hsts_max_age < 31536000:
        errors["hsts_preload"] = "HSTS preload needs a max-age of at least one year (31536000)."
    if errors:
        raise ValidationError(errors)


def parse_expected_status(text: str) -> list[int]:
    """'200,204' or '200-299' or '' (meaning 200-399 at the worker) → explicit codes."""
    codes: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"{part!r} is not a status code or range like 200-299.") from None
        if not (100 <= first <= last <= 599):
            raise ValueError(f"{part!r} is outside 100-599.")
        codes.extend(range(first, last + 1))
    return codes


def _check_backend(backend: Backend) -> None:
    errors: dict[str, str] = {}
    address = backend.address.strip()
    if not address:
        errors["address"] = "An address is required."
    elif "://" in address or "/" in address:
        errors["address"] = f"{address!r} is not a host: give a hostname or IP address, without scheme or path."
    else:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
            backend.address = address.strip("[]")
            refused = _refused_network(ip)
            if refused:
                errors["address"] = (f"{ip} is in {refused}, which backends may not use (cloud metadata and "
                                     "link-local services); a platform admin can change PORTICO_BACKEND_DENY_NETWORKS.")
        except ValueError:
            if ":" in address:
                errors["address"] = f"{address!r} is not a host: put the port in the port field."
            else:
                try:
                    backend.address = snapshot.normalize_hostname(address)
                    if backend.address.startswith("*."):
                        errors["address"] = "A backend address cannot be a wildcard."
                    elif backend.address in settings.BACKEND_DENY_HOSTNAMES:
                        errors["address"] = f"{backend.address} is a cloud metadata service, which backends may not use."
                except ValueError as exc:
                    errors["address"] = str(exc)
    if not 1 <= int(backend.port) <= 65535:
        errors["port"] = "A port between 1 and 65535."
    if backend.scheme not in ("http", "https"):
        errors["scheme"] = "Use http or https."
    if not 1 <= int(backend.weight) <= 1000:
        errors["weight"] = "A weight between 1 and 1000."
    if backend.state not in Backend.State.values:
        errors["state"] = f"Use one of {', '.join(Backend.State.values)}."
    if not _POOL_NAME.match(backend.pool):
        errors["pool"] = "A pool name of lower-case letters, digits, - and _."
    if backend.ca_pem and "BEGIN CERTIFICATE" not in backend.ca_pem:
        errors["ca_pem"] = "Paste the CA certificate in PEM form (-----BEGIN CERTIFICATE-----)."
    if errors:
        raise ValidationError(errors)


def _refused_network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """SSRF guard: the network in PORTICO_BACKEND_DENY_NETWORKS that ``ip`` falls in, if any.

    A proxy that lets tenants name any origin would otherwise fetch cloud metadata (169.254.169.254)
    or link-local services on the worker's own network for them.
    """
    for network in settings.BACKEND_DENY_NETWORKS:
        if ip.version == network.version and ip in network:
            return str(network)
    return None


def _wildcard_parent(name: str) -> str:
    return name[2:] if name.startswith("*.") else name


def hostname_conflict(name: str, org: Organization) -> str | None:
    """Why ``name`` cannot be used by ``org``, or None. Names are global: they route traffic.

    Besides exact duplicates, a wildcard and a name under it must belong to one tenant, or one
    tenant could capture another's subdomains.
    """
    existing = Hostname.objects.filter(name=name).select_related("site").first()
    if existing is not None:
        if existing.organization_id == org.pk:
            return f"{name} is already used by your site {existing.site.name!r}."
        return f"{name} is already in use by another organization."
    if name.startswith("*."):
        parent = _wildcard_parent(name)
        clash = Hostname.objects.filter(name__endswith="." + parent).exclude(organization=org)
        # only names exactly one label under the wildcard are covered by it
        for other in clash:
            if other.name.count(".") == name.count(".") and not other.name.startswith("*."):
                return f"{name} would cover {other.name}, which another organization uses."
    else:
        parent = name.split(".", 1)[1] if "." in name else ""
        if parent and Hostname.objects.filter(name="*." + parent).exclude(organization=org).exists():
            return f"{name} is covered by *.{parent}, which another organization uses."
    return None


def _normalize_hostnames(names: list[str], org: Organization, field: str = "hostnames") -> list[str]:
    out: list[str] = []
    for raw in names:
        try:
            name = snapshot.normalize_hostname(raw)
        except ValueError as exc:
            raise ValidationError({field: str(exc)}) from None
        if name in out:
            raise ValidationError({field: f"{name} is listed twice."})
        conflict = hostname_conflict(name, org)
        if conflict:
            raise ValidationError({field: conflict})
        out.append(name)
    return out


# --- sites --------------------------------------------------------------------------------------


@transaction.atomic
def site_create(
    *,
    actor: Actor,
    org: Organization,
    name: str,
    hostnames: list[str],
    backends: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Site:
    """Create a site with its hostnames and, optionally, its first backends."""
    require(actor, org, Role.EDITOR)
    _refuse_unknown(fields, _SITE_FIELDS)
    if not hostnames:
        raise ValidationError({"hostnames": "A site needs at least one hostname."})
    site = Site(organization=org, name=name.strip(), **fields)
    _check_site(site)
    names = _normalize_hostnames(hostnames, org)
    site.save()
    try:
        with transaction.atomic():
            Hostname.objects.bulk_create([Hostname(organization=org, site=site, name=n) for n in names])
    except IntegrityError:
        raise ValidationError({"hostnames": "One of these hostnames was just taken by another site."}) from None
    created = [_backend_build(site, spec) for spec in backends or []]
    Backend.objects.bulk_create(created)
    record(
        org=org,
        actor=actor,
        action="site.create",
        target=site,
        after={**_snapshot_of(site, _SITE_FIELDS), "hostnames": names, "backends": [str(b) for b in created]},
    )
    publish_on_commit(f"site {site.name} created")
    ensure_certificates_on_commit(site=site, actor=actor)
    return site


@transaction.atomic
def site_update(*, actor: Actor, org: Organization, site: Site, **fields: Any) -> Site:
    require(actor, org, Role.EDITOR)
    ensure_in_org(site, org)
    _refuse_unknown(fields, _SITE_FIELDS)
    site = Site.objects.select_for_update().get(pk=site.pk)
    before = _snapshot_of(site, _SITE_FIELDS)
    for key, value in fields.items():
        setattr(site, key, value)
    _check_site(site)
    if site.require_backend_tls and not before["require_backend_tls"]:
        plain = list(Backend.objects.filter(site=site, scheme="http").order_by("created_at"))
        if plain:
            raise ValidationError({"require_backend_tls": _plain_backends_message(plain, "site")})
    site.save()
    after = _snapshot_of(site, _SITE_FIELDS)
    if before != after:
        record(org=org, actor=actor, action="site.update", target=site, before=before, after=after)
        publish_on_commit(f"site {site.name} updated")
        if before["tls_mode"] != after["tls_mode"]:
            ensure_certificates_on_commit(site=site, actor=actor)
    return site


def site_pause(*, actor: Actor, org: Organization, site: Site) -> Site:
    return site_update(actor=actor, org=org, site=site, state=Site.State.PAUSED)


def site_resume(*, actor: Actor, org: Organization, site: Site) -> Site:
    return site_update(actor=actor, org=org, site=site, state=Site.State.ACTIVE)


@transaction.atomic
def organization_require_backend_tls(*, actor: Actor, org: Organization, required: bool) -> Organization:
    """Require (or stop requiring) TLS to every backend of every site of ``org``."""
    require(actor, org, Role.ADMIN)
    org = Organization.objects.select_for_update().get(pk=org.pk)
    before = org.require_backend_tls
    if required == before:
        return org
    if required:
        # The organization row is locked: a backend added meanwhile re-checks after this commits.
        plain = list(Backend.objects.for_org(org).filter(scheme="http").select_related("site").order_by("created_at"))
        if plain:
            raise ValidationError({"require_backend_tls": _plain_backends_message(plain, "organization")})
    org.require_backend_tls = required
    org.save(update_fields=["require_backend_tls"])
    record(org=org, actor=actor, action="organization.require_backend_tls", target=org,
           before={"require_backend_tls": before}, after={"require_backend_tls": required})
    return org


@transaction.atomic
def site_delete(*, actor: Actor, org: Organization, site: Site) -> None:
    require(actor, org, Role.EDITOR)
    ensure_in_org(site, org)
    record(
        org=org,
        actor=actor,
        action="site.delete",
        target=site,
        before={**_snapshot_of(site, _SITE_FIELDS), "hostnames": list(site.hostnames.values_list("name", flat=True))},
    )
    site.delete()
    publish_on_commit(f"site {site.name} deleted")


# --- hostnames ----------------------------------------------------------------------------------


@transaction.atomic
def hostname_add(*, actor: Actor, org: Organization, site: Site, name: str) -> Hostname:
    require(actor, org, Role.EDITOR)
    ensure_in_org(site, org)
    (normalized,) = _normalize_hostnames([name], org, field="name")
    try:
        with transaction.atomic():
            hostname = Hostname.objects.create(organization=org, site=site, name=normalized)
    except IntegrityError:
        raise ValidationError({"name": f"{normalized} was just taken by another site."}) from None
    record(org=org, actor=actor, action="hostname.add", target=hostname, after={"site": site.name, "name": normalized})
    publish_on_commit(f"hostname {normalized} added")
    ensure_certificates_on_commit(site=site, actor=actor)
    return hostname


@transaction.atomic
def hostname_remove(*, actor: Actor, org: Organization, hostname: Hostname) -> None:
    require(actor, org, Role.EDITOR)
    ensure_in_org(hostname, org)
    # Lock the site before counting: two removals at once would each see two names and leave the
    # site with none, and a site without a hostname fails the whole platform's snapshot.
    Site.objects.select_for_update().only("pk").get(pk=hostname.site_id)
    if Hostname.objects.filter(site_id=hostname.site_id).count() <= 1:
        raise ValidationError({"name": "A site needs at least one hostname; add another before removing this one."})
    record(org=org, actor=actor, action="hostname.remove", target=hostname, before={"name": hostname.name})
    hostname.delete()
    publish_on_commit(f"hostname {hostname.name} removed")


# --- backends -----------------------------------------------------------------------------------


def _backend_build(site: Site, spec: dict[str, Any]) -> Backend:
    _refuse_unknown(spec, _BACKEND_FIELDS)
    backend = Backend(organization_id=site.organization_id, site=site, **spec)
    _check_backend(backend)
    _check_backend_tls(backend, site)
    return backend


def backend_tls_required_by(site: Site, *, lock: bool = False) -> str | None:
    """Who requires TLS to this site's backends: the site, its organization, or nobody.

    With ``lock``, both rows are read locked: turning the setting on locks them too, so a plain
    backend added at the same moment either sees the setting or is seen by it.
    """
    orgs, sites = Organization.objects.all(), Site.objects.all()
    if lock:
        orgs, sites = orgs.select_for_update(), sites.select_for_update()
    if sites.filter(pk=site.pk).values_list("require_backend_tls", flat=True).first() or site.require_backend_tls:
        return "this site"
    if orgs.filter(pk=site.organization_id).values_list("require_backend_tls", flat=True).first():
        return "the organization"
    return None


def _check_backend_tls(backend: Backend, site: Site) -> None:
    if backend.scheme != "http":
        return
    required_by = backend_tls_required_by(site, lock=True)
    if required_by:
        raise ValidationError(
            {"scheme": f"{required_by.capitalize()} requires TLS to backends: backend http://{backend.address}:{backend.port} "
                       "must use https (or turn the setting off first)."}
        )


def _plain_backends_message(backends, where: str) -> str:
    names = ", ".join(f"http://{b.address}:{b.port}" + (f" ({b.site.name})" if where == "organization" else "") for b in backends[:5])
    more = f" and {len(backends) - 5} more" if len(backends) > 5 else ""
    return (f"TLS to backends cannot be required while {'this site' if where == 'site' else 'the organization'} "
            f"has plain-HTTP backends: {names}{more}. Switch them to https first.")


@transaction.atomic
def backend_create(*, actor: Actor, org: Organization, site: Site, **spec: Any) -> Backend:
    require(actor, org, Role.EDITOR)
    ensure_in_org(site, org)
    backend = _backend_build(site, spec)
    backend.save()
    record(org=org, actor=actor, action="backend.create", target=backend, after=_snapshot_of(backend, _BACKEND_FIELDS))
    publish_on_commit(f"backend {backend} added to {site.name}")
    return backend


@transaction.atomic
def backend_update(*, actor: Actor, org: Organization, backend: Backend, **fields: Any) -> Backend:
    require(actor, org, Role.EDITOR)
    ensure_in_org(backend, org)
    _refuse_unknown(fields, _BACKEND_FIELDS)
    backend = Backend.objects.select_for_update().get(pk=backend.pk)
    before = _snapshot_of(backend, _BACKEND_FIELDS)
    for key, value in fields.items():
        setattr(backend, key, value)
    _check_backend(backend)
    _check_backend_tls(backend, backend.site)
    backend.save()
    after = _snapshot_of(backend, _BACKEND_FIELDS)
    if before != after:
        record(org=org, actor=actor, action="backend.update", target=backend, before=before, after=after)
        publish_on_commit(f"backend {backend} updated")
    return backend


@transaction.atomic
def backend_delete(*, actor: Actor, org: Organization, backend: Backend) -> None:
    require(actor, org, Role.EDITOR)
    ensure_in_org(backend, org)
    record(org=org, actor=actor, action="backend.delete", target=backend, before=_snapshot_of(backend, _BACKEND_FIELDS))
    backend.delete()
    publish_on_commit(f"backend {backend} removed")


# --- routes -------------------------------------------------------------------------------------


_ROUTE_FIELDS = ("path_prefix", "pool", "strip_prefix", "rewrite_prefix", "kind", "aggregate")
MAX_AGGREGATE_PARTS = 16


def _check_route(route: Route) -> None:
    errors = {}
    if not route.path_prefix.startswith("/"):
        errors["path_prefix"] = "A path prefix must start with /."
    elif any(c in route.path_prefix for c in "?# \t"):
        errors["path_prefix"] = "A path prefix has no query, fragment or spaces."
    if not _POOL_NAME.match(route.pool):
        errors["pool"] = "A pool name of lower-case letters, digits, - and _."
    route.rewrite_prefix = (route.rewrite_prefix or "").strip()
    if route.rewrite_prefix:
        if not route.rewrite_prefix.startswith("/") or any(c in route.rewrite_prefix for c in "?# \t"):
            errors["rewrite_prefix"] = "A rewrite starts with / and has no query, fragment or spaces, e.g. /internal/v2/."
        elif route.strip_prefix:
            errors["rewrite_prefix"] = "Strip the prefix or replace it, not both (stripping is replacing it with /)."
    if route.kind not in Route.Kind.values:
        errors["kind"] = f"Use one of {', '.join(Route.Kind.values)}."
    elif route.kind == Route.Kind.AGGREGATE:
        try:
            route.aggregate = _check_aggregate(route.aggregate)
        except ValueError as exc:
            errors["aggregate"] = str(exc)
    elif route.aggregate:
        errors["aggregate"] = "Only an aggregate route has parts; set kind to aggregate."
    if errors:
        raise ValidationError(errors)


def _check_aggregate(parts: Any) -> list[dict[str, Any]]:
    """The parts of an aggregation route, normalized; ValueError naming the part that is wrong."""
    if not isinstance(parts, list) or not parts:
        raise ValueError('Give the parts as a list: [{"key": "user", "path": "/users/me", "timeout": 2}].')
    if len(parts) > MAX_AGGREGATE_PARTS:
        raise ValueError(f"At most {MAX_AGGREGATE_PARTS} parts.")
    out, keys = [], set()
    for i, part in enumerate(parts):
        where = f"part {i + 1}"
        if not isinstance(part, dict) or set(part) - {"key", "path", "timeout", "pool"}:
            raise ValueError(f"{where}: an object with key, path and optionally timeout (seconds) and pool.")
        key, path = str(part.get("key", "")), str(part.get("path", ""))
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", key):
            raise ValueError(f"{where}: key {key!r} must be 1-64 letters, digits, - or _.")
        if key in keys:
            raise ValueError(f"{where}: key {key!r} is used twice.")
        keys.add(key)
        if not path.startswith("/") or any(c in path for c in "# \t\r\n"):
            raise ValueError(f"{where}: path {path!r} must start with / and have no spaces or fragment.")
        try:
            timeout = float(part.get("timeout", 5.0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: timeout must be a number of seconds.") from None
        if not 0.05 <= timeout <= 60:
            raise ValueError(f"{where}: timeout must be between 0.05 and 60 seconds.")
        item: dict[str, Any] = {"key": key, "path": path, "timeout": timeout}
        if part.get("pool"):
            if not _POOL_NAME.match(str(part["pool"])):
                raise ValueError(f"{where}: pool {part['pool']!r} is not a pool name.")
            item["pool"] = str(part["pool"])
        out.append(item)
    return out


@transaction.atomic
def route_create(
    *,
    actor: Actor,
    org: Organization,
    site: Site,
    path_prefix: str,
    pool: str = "default",
    strip_prefix: bool = False,
    rewrite_prefix: str = "",
    kind: str = Route.Kind.PROXY,
    aggregate: list[dict[str, Any]] | None = None,
) -> Route:
    require(actor, org, Role.EDITOR)
    ensure_in_org(site, org)
    route = Route(organization=org, site=site, path_prefix=path_prefix, pool=pool, strip_prefix=strip_prefix,
                  rewrite_prefix=rewrite_prefix, kind=kind, aggregate=aggregate or [])
    _check_route(route)
    if Route.objects.filter(site=site, path_prefix=path_prefix).exists():
        raise ValidationError({"path_prefix": f"This site already routes {path_prefix}."})
    route.save()
    record(
        org=org, actor=actor, action="route.create", target=route,
        after={"site": site.name, **_snapshot_of(route, _ROUTE_FIELDS)},
    )
    publish_on_commit(f"route {path_prefix} added to {site.name}")
    return route


@transaction.atomic
def route_update(*, actor: Actor, org: Organization, route: Route, **fields: Any) -> Route:
    require(actor, org, Role.EDITOR)
    ensure_in_org(route, org)
    allowed = _ROUTE_FIELDS
    _refuse_unknown(fields, allowed)
    before = _snapshot_of(route, allowed)
    for key, value in fields.items():
        setattr(route, key, value)
    _check_route(route)
    if Route.objects.filter(site_id=route.site_id, path_prefix=route.path_prefix).exclude(pk=route.pk).exists():
        raise ValidationError({"path_prefix": f"This site already routes {route.path_prefix}."})
    route.save()
    record(org=org, actor=actor, action="route.update", target=route, before=before, after=_snapshot_of(route, allowed))
    publish_on_commit(f"route {route.path_prefix} updated")
    return route


@transaction.atomic
def route_delete(*, actor: Actor, org: Organization, route: Route) -> None:
    require(actor, org, Role.EDITOR)
    ensure_in_org(route, org)
    record(org=org, actor=actor, action="route.delete", target=route, before={"path_prefix": route.path_prefix})
    route.delete()
    publish_on_commit(f"route {route.path_prefix} removed")


# --- policies -----------------------------------------------------------------------------------

_PBKDF2_ITERATIONS = 100_000


def hash_basic_auth_password(password: str) -> str:
    """The form the worker checks: pbkdf2_sha256$<iterations>$<salt>$<b64 hash>."""
    salt = secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), _PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${_PBKDF2_ITERATIONS}${salt}${base64.b64encode(digest).decode()}"


# A hash sent back as it was read (editing a policy keeps passwords nobody retyped). Each request
# with credentials costs the worker one PBKDF2 run: a tenant must not choose a billion iterations.
_PBKDF2_HASH = re.compile(r"pbkdf2_sha256\$([0-9]{1,10})\$[^$]{1,64}\$[A-Za-z0-9+/]{43}=")


def _stored_password(user: str, password: Any) -> str:
    if not (isinstance(password, str) and password.startswith("pbkdf2_sha256$")):
        return hash_basic_auth_password(str(password))
    match = _PBKDF2_HASH.fullmatch(password)
    if match is None or not 1 <= int(match[1]) <= _PBKDF2_ITERATIONS:
        raise ValidationError(
            {
                "settings": f"users.{user}: a stored hash must be pbkdf2_sha256$<iterations, at most "
                f"{_PBKDF2_ITERATIONS}>$<salt>$<base64 SHA-256>; send the password instead."
            }
        )
    return password


def validate_policy_settings(kind: str, settings: Any) -> Any:
    """Decode ``settings`` into the snapshot type for ``kind``, as the worker will, and check what
    the worker would reject. Returns the normalized JSON-able settings. Raises ValidationError
    naming the settings path that is wrong."""
    if kind not in POLICY_SCHEMA:
        raise ValidationError({"kind": f"Unknown policy kind {kind!r}; use one of {', '.join(POLICY_SCHEMA)}."})
    if kind == Policy.Kind.BASIC_AUTH and isinstance(settings, dict):
        # People send passwords; only hashes are stored.
        users = settings.get("users") or {}
        if not isinstance(users, dict) or not users:
            raise ValidationError({"settings": "users: give at least one username and password."})
        settings = {
            **settings,
            "users": {u: _stored_password(str(u), p) for u, p in users.items()},
        }
    try:
        value = msgspec.convert(settings, POLICY_SCHEMA[kind])
    except msgspec.ValidationError as exc:
        raise ValidationError({"settings": str(exc).replace("$.", "").replace("`$`", "settings")}) from None
    probe = snapshot.Policies()
    if kind == Policy.Kind.RATE_LIMIT:
        if value.requests <= 0:
            raise ValidationError({"settings": "requests: a rate of 0 would block everything; use IP rules for that."})
        probe.rate_limits = [value]
    elif kind == Policy.Kind.HEADERS:
        probe.headers = value
    elif kind == Policy.Kind.BASIC_AUTH:
        probe.basic_auth = [value]
    else:
        setattr(probe, kind, value)
    try:
        snapshot._validate_policies(probe, "policy")
    except snapshot.SnapshotError as exc:
        raise ValidationError({"settings": str(exc).removeprefix("policy: ")}) from None
    return msgspec.to_builtins(value)


@transaction.atomic
def policy_create(
    *,
    actor: Actor,
    org: Organization,
    kind: str,
    name: str,
    settings: Any,
    site: Site | None = None,
    enabled: bool = True,
) -> Policy:
    """A policy on ``site``, or an organization default when ``site`` is None."""
    require(actor, org, Role.EDITOR)
    if site is not None:
        ensure_in_org(site, org)
    if not name.strip():
        raise ValidationError({"name": "A name is required."})
    normalized = validate_policy_settings(kind, settings)
    if enabled:
        _refuse_second_singular(org=org, site=site, kind=kind)
    policy = Policy.objects.create(
        organization=org, site=site, kind=kind, name=name.strip(), settings=normalized, enabled=enabled
    )
    record(
        org=org, actor=actor, action="policy.create", target=policy,
        after={"kind": kind, "name": policy.name, "site": site.name if site else None, "settings": normalized, "enabled": enabled},
    )
    publish_on_commit(f"policy {policy.name} created")
    return policy


# A site (or an organization's defaults) has at most one enabled policy of these kinds: two cache
# policies could only be resolved by an arbitrary rule. Rate limits, header rules and basic auth add up.
SINGULAR_POLICY_KINDS = (Policy.Kind.CACHE, Policy.Kind.COMPRESSION, Policy.Kind.IP_RULES, Policy.Kind.WAF)


def _refuse_second_singular(*, org: Organization, site: Site | None, kind: str, exclude: Any = None) -> None:
    if kind not in SINGULAR_POLICY_KINDS:
        return
    others = Policy.objects.for_org(org).filter(site=site, kind=kind, enabled=True).exclude(pk=exclude)
    other = others.first()
    if other is not None:
        where = f"site {site.name!r}" if site else "the organization's defaults"
        raise ValidationError(
            {"kind": f"{where} already has an enabled {Policy.Kind(kind).label.lower()} policy ({other.name!r}); "
                     "edit that one, or disable it first."}
        )


@transaction.atomic
def policy_update(*, actor: Actor, org: Organization, policy: Policy, **fields: Any) -> Policy:
    require(actor, org, Role.EDITOR)
    ensure_in_org(policy, org)
    _refuse_unknown(fields, ("name", "settings", "enabled"))
    before = {"name": policy.name, "settings": policy.settings, "enabled": policy.enabled}
    if "settings" in fields:
        fields["settings"] = validate_policy_settings(policy.kind, fields["settings"])
    if "name" in fields and not str(fields["name"]).strip():
        raise ValidationError({"name": "A name is required."})
    if fields.get("enabled") and not policy.enabled:
        _refuse_second_singular(org=org, site=policy.site, kind=policy.kind, exclude=policy.pk)
    for key, value in fields.items():
        setattr(policy, key, value)
    policy.save()
    after = {"name": policy.name, "settings": policy.settings, "enabled": policy.enabled}
    if before != after:
        record(org=org, actor=actor, action="policy.update", target=policy, before=before, after=after)
        publish_on_commit(f"policy {policy.name} updated")
    return policy


@transaction.atomic
def policy_delete(*, actor: Actor, org: Organization, policy: Policy) -> None:
    require(actor, org, Role.EDITOR)
    ensure_in_org(policy, org)
    record(org=org, actor=actor, action="policy.delete", target=policy, before={"kind": policy.kind, "name": policy.name})
    policy.delete()
    publish_on_commit(f"policy {policy.name} removed")
