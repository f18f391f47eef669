"""API gateway routes through the API: rewrites and aggregation parts are validated with errors that
name the field, and compile into the snapshot the worker serves."""

from __future__ import annotations

from fleet.compiler import compile_snapshot
from fleet.publisher import fleet_key

from proxyworker import snapshot

from .conftest import client_for, url


def _compiled_routes(site_id: str) -> dict[str, snapshot.Route]:
    site = next(s for s in compile_snapshot(version=1, fleet_key=fleet_key()).sites if s.id == site_id)
    return {r.path_prefix: r for r in site.routes}


def test_a_rewrite_route_compiles_for_the_worker(cast, world):
    client = client_for(cast.acme.write_token)
    routes = url("acme", f"sites/{world.site.pk}/routes/")
    created = client.post(routes, {"path_prefix": "/v1/", "pool": "default", "rewrite_prefix": "/internal/v2/"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["rewrite_prefix"] == "/internal/v2/" and created.json()["kind"] == "proxy"
    assert _compiled_routes(str(world.site.pk))["/v1/"].rewrite_prefix == "/internal/v2/"

    bad = client.post(routes, {"path_prefix": "/v3/", "rewrite_prefix": "internal"}, format="json")
    assert bad.status_code == 400 and "rewrite_prefix" in bad.json()
    both = client.post(routes, {"path_prefix": "/v4/", "rewrite_prefix": "/x/", "strip_prefix": True}, format="json")
    assert both.status_code == 400 and "not both" in both.json()["rewrite_prefix"][0]


def test_an_aggregate_route_is_validated_and_compiled(cast, world):
    client = client_for(cast.acme.write_token)
    routes = url("acme", f"sites/{world.site.pk}/routes/")
    parts = [{"key": "user", "path": "/users/me", "timeout": 2}, {"key": "orders", "path": "/orders", "pool": "orders"}]
    created = client.post(routes, {"path_prefix": "/dash", "kind": "aggregate", "aggregate": parts}, format="json")
    assert created.status_code == 201, created.json()
    compiled = compile_snapshot(version=1, fleet_key=fleet_key())
    site = next(s for s in compiled.sites if s.id == str(world.site.pk))
    route = next(r for r in site.routes if r.path_prefix == "/dash")
    assert [(p.key, p.path, p.timeout, p.pool) for p in route.aggregate] == [
        ("user", "/users/me", 2.0, None), ("orders", "/orders", 5.0, "orders"),
    ]
    assert "orders" in {p.name for p in site.pools}  # a pool without backends yet still compiles (503 per part)

    for body, says in (
        ({"kind": "aggregate", "aggregate": []}, "list"),
        ({"kind": "aggregate", "aggregate": [{"key": "a", "path": "/a"}, {"key": "a", "path": "/b"}]}, "used twice"),
        ({"kind": "aggregate", "aggregate": [{"key": "a", "path": "b"}]}, "must start with /"),
        ({"kind": "aggregate", "aggregate": [{"key": "a", "path": "/a", "timeout": 600}]}, "timeout"),
        ({"kind": "proxy", "aggregate": [{"key": "a", "path": "/a"}]}, "kind to aggregate"),
    ):
        response = client.post(routes, {"path_prefix": "/x", **body}, format="json")
        assert response.status_code == 400, body
        assert says in response.json()["aggregate"][0], response.json()
