"""Property-based run of the whole API against its own OpenAPI schema (schemathesis, in process).

Each operation gets generated requests (valid and invalid bodies, parameters and headers) from
the organization's owner, aimed at real objects so that requests get past the lookups. No answer
may be a 5xx, and every answer must match the schema: documented status code, content type,
headers and body.

Bounded for CI: PORTICO_FUZZ_EXAMPLES examples per operation (default 12, about two minutes on
two cores), derandomized so that a CI run is reproducible; PORTICO_FUZZ_RANDOM=1 explores new
inputs on each run. Deselect locally with ``-m "not fuzz"``.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tenancy.models import ApiToken

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("PORTICO_FUZZ_EXAMPLES", "12"))
CSRF = "PorticoFuzzCsrfToken0123456789ab"  # Django wants 32 letters and digits

# Requests carry the owner's session (below), not made-up credentials that would stop them at
# the door; and no made-up extra parameters, which an HTTP server rightly ignores.
# The coverage phase walks the schema's boundaries (required only, each optional field, each
# enum value, min and max); kept to valid requests there so the run fits a few minutes.
# Hypothesis's fuzzing then sends EXAMPLES valid and invalid requests per operation.
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"allow-extra-parameters": False, "with-security-parameters": False},
        "phases": {"coverage": {"generation": {"mode": "positive"}, "unexpected-methods": []}},
    }
)
# No 5xx, and every answer as documented. Not run: schemathesis's negative_data_rejection (it
# flags optional headers sent empty, which HTTP lets a server ignore) and ignored_auth (it
# garbles credentials it generated; ours are passed explicitly). Authorization is walked by
# test_access_walk and test_auth instead.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True), config=CONFIG)


@pytest.fixture
def app():
    """Django's WSGI handler inside the test's transaction: the handler would otherwise close the
    test's connection at the end of each request, as a server does (Django's test client does the same)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def owner_cookies(cast) -> dict[str, str]:
    """The owner's session, with a CSRF cookie whose value the requests also send as header."""
    client = Client()
    client.force_login(cast.acme.users["owner"])
    return {"sessionid": client.cookies["sessionid"].value, "csrftoken": CSRF}


def real_ids(path: str, world, fleet, cast) -> dict[str, str]:
    """Path parameters that name acme's objects, so that requests reach the code behind lookups."""
    worker, version = fleet
    by_collection = {
        "orgs": cast.acme.slug,
        "members": world.member.pk,
        "invitations": world.invitation.pk,
        "tokens": ApiToken.objects.filter(organization=cast.acme.org).first().pk,
        "sites": world.site.pk,
        "hostnames": world.hostname.pk,
        "routes": world.route.pk,
        "backends": world.backend.pk,
        "policies": world.policy.pk,
        "certificates": world.certificate.pk,
        "audit-events": 1,
        "purges": world.purge.pk,
        "alerts": world.alert.pk,
        "requests": world.request_sample.pk,
        "platform-policies": "min_tls",
        "workers": worker.pk,
        "versions": version.number,
    }
    segments = path.strip("/").split("/")
    out = {"org_slug": cast.acme.slug, "site_pk": str(world.site.pk)}
    for i, seg in enumerate(segments):
        # An endpoint without a sample here keeps its generated ids (test_access_walk insists on one).
        if seg.startswith("{") and seg[1:-1] not in out and segments[i - 1] in by_collection:
            out[seg[1:-1]] = str(by_collection[segments[i - 1]])
    return out


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("PORTICO_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_never_fails_on_the_server_and_keeps_to_its_schema(case, app, cast, world, fleet, owner_cookies):
    if not (case.meta and case.meta.is_negative_at(ParameterLocation.PATH)):
        # Keep deliberately invalid path parameters; replace valid ones with real objects.
        case.path_parameters = {**(case.path_parameters or {}), **real_ids(case.path, world, fleet, cast)}
    case.call_and_validate(app=app, cookies=owner_cookies, headers={"X-CSRFToken": CSRF}, checks=CHECKS)
