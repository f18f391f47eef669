"""Every operation in the OpenAPI schema, called by people and tokens who must not succeed.

The list of operations comes from the generated schema, so a new endpoint is walked without
anyone editing this file; an endpoint whose objects this file cannot find fails loudly instead of
being skipped.
"""

from __future__ import annotations

import re

import pytest
from drf_spectacular.generators import SchemaGenerator
from tenancy.models import ApiToken

from .conftest import World, build_world, client_for

METHODS = ("get", "post", "put", "patch", "delete")


def schema_operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(path, method) for path, item in schema["paths"].items() for method in METHODS if method in item]


def test_the_walk_covers_the_api():
    ops = schema_operations()
    paths = {p for p, _ in ops}
    # A sanity floor: if schema generation silently dropped views, the walks below would pass vacuously.
    assert len(ops) >= 60, ops
    for expected in (
        "/api/v1/orgs/{org_slug}/sites/{site_pk}/backends/{id}/",
        "/api/v1/orgs/{org_slug}/audit-events/export/",
        "/api/v1/orgs/{org_slug}/purges/",
        "/api/v1/orgs/{org_slug}/certificates/upload/",
        "/api/v1/orgs/{org_slug}/fleet/versions/{number}/diff/",
    ):
        assert expected in paths


def _a_finding(cast_org) -> int:
    from advisor.models import Finding
    from advisor.services import checkup_run
    from tenancy.access import Actor

    checkup_run(actor=Actor.system("test"), org=cast_org.org)
    return Finding.objects.filter(organization=cast_org.org).values_list("pk", flat=True).first()


def _sample_ids(world: World, cast_org, fleet) -> dict[str, object]:
    """The id to put in a URL after each collection segment."""
    worker, version = fleet
    token = ApiToken.objects.filter(organization=cast_org.org).first()
    event = world.site.organization.audit_events.order_by("-seq").first()
    return {
        "orgs": cast_org.slug,
        "members": world.member.pk,
        "invitations": world.invitation.pk,
        "tokens": token.pk,
        "sites": world.site.pk,
        "hostnames": world.hostname.pk,
        "routes": world.route.pk,
        "backends": world.backend.pk,
        "policies": world.policy.pk,
        "certificates": world.certificate.pk,
        "audit-events": event.seq,
        "purges": world.purge.pk,
        "alerts": world.alert.pk,
        "requests": world.request_sample.pk,
        "platform-policies": "min_tls",
        "findings": _a_finding(cast_org),
        "workers": worker.pk,
        "versions": version.number,
    }


def fill(path: str, *, slug: str, world: World, ids: dict[str, object]) -> str:
    """The URL of ``path`` with real values: the organization, the world's site, and the object
    named by the segment before each remaining parameter."""
    segments = path.strip("/").split("/")
    out = []
    for i, seg in enumerate(segments):
        if seg == "{org_slug}":
            out.append(slug)
        elif seg == "{site_pk}":
            out.append(str(world.site.pk))
        elif seg.startswith("{"):
            collection = segments[i - 1]
            if collection not in ids:
                raise AssertionError(f"{path}: the walk has no sample object for {collection!r}; add one to _sample_ids")
            out.append(str(ids[collection]))
        else:
            out.append(seg)
    return "/" + "/".join(out) + "/"


def _call(client, method: str, url: str):
    if method in ("get", "delete"):
        return getattr(client, method)(url)
    return getattr(client, method)(url, {}, format="json")


@pytest.fixture
def fleet_two_versions(fleet):
    from fleet.publisher import publish

    worker, _ = fleet
    return worker, publish(force=True)  # a second version, so that diffs have something to compare


def _walk(client, *, slug, world, ids, expect) -> list[str]:
    problems = []
    for path, method in schema_operations():
        if "{org_slug}" not in path:
            continue
        url = fill(path, slug=slug, world=world, ids=ids)
        response = _call(client, method, url)
        wanted = expect(path, method)
        if response.status_code not in wanted:
            problems.append(f"{method.upper()} {url}: {response.status_code} (wanted {wanted}) {getattr(response, 'data', '')}")
    return problems


def test_outsiders_get_404_everywhere_and_change_nothing(cast, world, fleet_two_versions, db_state):
    ids = _sample_ids(world, cast.acme, fleet_two_versions)
    before = db_state()
    for client in (
        client_for(cast.globex.write_token),
        client_for(user=cast.globex.users["owner"]),
    ):
        problems = _walk(client, slug="acme", world=world, ids=ids, expect=lambda p, m: {404})
        assert not problems, "\n".join(problems)
    assert db_state() == before


@pytest.mark.parametrize("who", ["read_token", "viewer"])
def test_read_only_callers_get_403_on_every_write_and_change_nothing(cast, world, fleet_two_versions, db_state, who):
    ids = _sample_ids(world, cast.acme, fleet_two_versions)
    client = client_for(cast.acme.read_token) if who == "read_token" else client_for(user=cast.acme.users["viewer"])
    admin_only = re.compile(r"/(tokens|invitations)/")

    def expect(path, method):
        if method == "get":
            return {403} if admin_only.search(path) else {200}
        return {403}

    before = db_state()
    problems = _walk(client, slug="acme", world=world, ids=ids, expect=expect)
    assert not problems, "\n".join(problems)
    assert db_state() == before


def test_another_organizations_objects_are_404_whatever_the_method(cast, world, fleet_two_versions, db_state):
    """acme's owner and write token, aiming at globex's objects through acme's URLs."""
    theirs = build_world(cast.globex)
    ids = _sample_ids(theirs, cast.globex, fleet_two_versions)
    ids.pop("orgs")
    before = db_state()
    for client in (client_for(cast.acme.write_token), client_for(user=cast.acme.users["owner"])):
        problems = []
        for path, method in schema_operations():
            if "{org_slug}" not in path or not re.search(r"\{(site_pk|id)\}", path) or "/fleet/" in path:
                # Only URLs that name another organization's object: audit events are numbered
                # per organization (seq), workers and versions are the platform's.
                continue
            url = fill(path, slug="acme", world=theirs, ids=ids)
            response = _call(client, method, url)
            if response.status_code != 404:
                problems.append(f"{method.upper()} {url}: {response.status_code} {getattr(response, 'data', '')}")
        assert not problems, "\n".join(problems)
    assert db_state() == before


def test_the_organization_list_shows_only_your_own(cast, world):
    for client, slugs in (
        (client_for(cast.globex.write_token), ["globex"]),
        (client_for(user=cast.globex.users["owner"]), ["globex"]),
        (client_for(cast.acme.read_token), ["acme"]),
    ):
        response = client.get("/api/v1/orgs/")
        assert response.status_code == 200
        assert [o["slug"] for o in response.json()["results"]] == slugs
