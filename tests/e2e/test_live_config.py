"""A change made through the services is served by real proxy workers, through the broker."""

from __future__ import annotations

import json

import pytest
from edge import services as edge
from edge.models import Backend as BackendRow
from fleet.models import ConfigVersion, Worker
from tenancy.access import Actor
from tenancy.models import Organization

from ..proxyworker.conftest import Backend
from .conftest import wait_for

pytestmark = pytest.mark.e2e

HOST = "shop.example.com"


@pytest.fixture
def org(transactional_db):
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def origins():
    started = [Backend("origin-a").start(), Backend("origin-b").start()]
    yield started
    for b in started:
        b.stop()


def answered_by(node, host=HOST):
    try:
        status, body = node.get(host)
    except OSError:
        return None
    return json.loads(body)["backend"] if status == 200 else None


def test_a_site_created_through_the_services_is_served_and_a_backend_change_moves_traffic(org, origins, node_factory):
    a, b = origins
    nodes = [node_factory("node-1", proxy=True), node_factory("node-2", proxy=True)]
    wait_for(lambda: Worker.objects.count() == 2, what="both nodes to say hello")
    assert nodes[0].get(HOST)[0] != 200  # nothing is served for an unknown host

    site = edge.site_create(actor=Actor.system("test"), org=org, name="shop", hostnames=[HOST],
                            backends=[{"address": "127.0.0.1", "port": a.port}], hc_enabled=False)
    for node in nodes:
        assert wait_for(lambda n=node: answered_by(n), what=f"{node.name} to serve the site") == "origin-a"

    backend = BackendRow.objects.get(site=site)
    edge.backend_update(actor=Actor.system("test"), org=org, backend=backend, port=b.port)
    for node in nodes:
        wait_for(lambda n=node: answered_by(n) == "origin-b", what=f"{node.name} to move traffic to origin-b")
    latest = ConfigVersion.objects.order_by("-number").first().number
    wait_for(lambda: Worker.objects.filter(version=latest).count() == 2, what="both nodes to report the newest version")


def test_a_node_restarted_while_the_broker_is_down_serves_its_last_known_good(org, origins, node_factory, broker):
    a, _ = origins
    node = node_factory("node-1", proxy=True)
    wait_for(lambda: Worker.objects.filter(name="node-1").exists(), what="hello")
    edge.site_create(actor=Actor.system("test"), org=org, name="shop", hostnames=[HOST],
                     backends=[{"address": "127.0.0.1", "port": a.port}], hc_enabled=False)
    wait_for(lambda: answered_by(node) == "origin-a", what="the site to be served")

    broker.stop()
    node.stop_agent()
    node.stop_proxy()
    node.start_proxy()
    node.start_agent()  # cannot reach the broker: keeps retrying
    assert answered_by(node) == "origin-a"
    broker.start()
    wait_for(lambda: "connected" in node.log().split("Connected")[-1] or node.log().count("connected;") >= 2,
             timeout=30, what="the agent to reconnect")
    assert answered_by(node) == "origin-a"
