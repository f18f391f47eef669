"""The OpenAPI schema documents every endpoint, field, error and auth scheme; the docs page works
without the internet."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from .test_access_walk import METHODS


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _operations(schema):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_it_is_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Portico API"


def test_it_documents_both_auth_schemes(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "pt_<lookup>_<secret>",
        "description": schemes["tokenAuth"]["description"],
    }
    assert schemes["cookieAuth"]["in"] == "cookie"
    for path, method, op in _operations(schema):
        assert {"tokenAuth": []} in op["security"], (method, path)


def test_every_operation_documents_its_errors(schema):
    for path, method, op in _operations(schema):
        codes = set(op["responses"])
        assert {"401", "403", "404", "429"} <= codes, (method, path, codes)
        assert "Retry-After" in op["responses"]["429"]["headers"], (method, path)
        if method in ("put", "patch", "delete"):
            assert "412" in codes, (method, path)
            assert "If-Match" in {p["name"] for p in op["parameters"]}, (method, path)
        if method in ("post", "put", "patch"):
            assert "400" in codes, (method, path)
        if method == "post":
            assert "422" in codes, (method, path)
            assert "Idempotency-Key" in {p["name"] for p in op["parameters"]}, (method, path)


def test_accepted_operations_are_documented_as_202(schema):
    for path in ("/api/v1/orgs/{org_slug}/purges/", "/api/v1/orgs/{org_slug}/certificates/"):
        responses = schema["paths"][path]["post"]["responses"]
        assert "202" in responses and "201" not in responses


def test_detail_answers_document_their_etag(schema):
    op = schema["paths"]["/api/v1/orgs/{org_slug}/sites/{id}/"]["get"]
    assert "ETag" in op["responses"]["200"]["headers"]
    assert "304" in op["responses"]


def test_no_secret_field_is_in_any_answer(schema):
    for name, component in schema["components"]["schemas"].items():
        if name.endswith("Request"):
            continue  # what clients send (an uploaded key goes in, never out)
        props = set(component.get("properties", {}))
        assert not props & {"token_hash", "key_encrypted", "key_pem", "password"}, name
    created = schema["components"]["schemas"]["ApiTokenCreated"]["properties"]
    assert "token" in created  # shown once, on creation only
    assert "token" not in schema["components"]["schemas"]["ApiToken"]["properties"]


def test_policy_settings_are_documented_per_kind(schema):
    schemas = schema["components"]["schemas"]
    assert schemas["PolicyRateLimit"]["properties"]["requests"]["minimum"] == 1
    assert "allow" in schemas["PolicyIpRules"]["properties"]


def test_the_docs_page_loads_nothing_from_elsewhere(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.startswith("/static/drf_spectacular_sidecar/swagger-ui-dist/") for a in assets), assets
    assert not [a for a in assets if "://" in a], assets
    assert "<style>" not in html and "<script>" not in html  # the Content-Security-Policy refuses inline code
