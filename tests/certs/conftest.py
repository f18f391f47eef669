"""Certificates against a real ACME server: pebble, with pebble-challtestsrv as its DNS, so every
test name resolves to 127.0.0.1 and pebble really fetches HTTP-01 tokens from real workers.

Reusable pieces:

- ``pebble_factory(http_port=..., nonce_reject=...)``: a started ``Pebble`` (see pebble.py).
- ``acme_fleet_factory(nodes=2, nonce_reject=None)``: pebble + a private broker + a real Celery
  worker of the control plane + real worker nodes (proxy + agent), with the control plane's ACME
  settings pointed at pebble. Pebble validates on one port; a round-robin TCP front
  (``ChallengeFront``) spreads its connections over every node's HTTP port, like DNS with one A
  record per worker, so any node may be asked.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

# The distribution e2e fixtures (private broker, Celery worker, worker nodes) and the
# owner/editor/viewer/outsider cast, shared rather than copied.
from tests.e2e.conftest import broker, control_celery, node_factory, platform_env  # noqa: F401
from tests.e2e.processes import wait_for
from tests.platform.conftest import _fast_password_hashing, actor_named, cast, db_state  # noqa: F401

from .challenge_front import ChallengeFront
from .pebble import Pebble

# --- pebble -----------------------------------------------------------------------------------------


@pytest.fixture
def pebble_factory(tmp_path) -> Iterator[Callable[..., Pebble]]:
    started: list[Pebble] = []

    def make(*, http_port: int, nonce_reject: int | None = None, env: dict | None = None) -> Pebble:
        p = Pebble(tmp_path / f"pebble{len(started)}", http_port=http_port, nonce_reject=nonce_reject, env=env)
        started.append(p)
        return p.start()

    yield make
    for p in started:
        p.stop()


def point_at(pebble: Pebble, django_settings) -> dict[str, str]:
    """Make the control plane (this process, via pytest-django's ``settings``) order from
    ``pebble``. Returns the same as environment variables, for subprocesses."""
    django_settings.ACME_DIRECTORY = pebble.directory_url
    django_settings.ACME_CA_BUNDLE = str(pebble.listener_ca)
    django_settings.ACME_EMAIL = "certs@portico.example"
    return {
        "PORTICO_ACME_DIRECTORY": pebble.directory_url,
        "PORTICO_ACME_CA_BUNDLE": str(pebble.listener_ca),
        "PORTICO_ACME_EMAIL": "certs@portico.example",
    }


@pytest.fixture
def challenge_front() -> Iterator[ChallengeFront]:
    front = ChallengeFront()
    yield front
    front.close()


# --- the whole fleet -------------------------------------------------------------------------------


@dataclass
class AcmeFleet:
    pebble: Pebble
    front: ChallengeFront
    nodes: list = field(default_factory=list)

    def trust(self) -> ssl.SSLContext:
        """A TLS client that trusts only this pebble run's issuing root."""
        return ssl.create_default_context(cafile=str(self.pebble.root_path))

    def handshake(self, node, hostname: str) -> dict:
        """Connect to ``node``'s HTTPS port with SNI ``hostname``, verifying against pebble's
        root; returns the verified peer certificate."""
        with socket.create_connection(("127.0.0.1", node.https_port), timeout=5) as raw:
            with self.trust().wrap_socket(raw, server_hostname=hostname) as tls:
                return tls.getpeercert()

    def served_pem(self, node, hostname: str) -> str:
        """The leaf a node presents for ``hostname`` (unverified: to compare serials)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", node.https_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))


@pytest.fixture
def acme_fleet_factory(pebble_factory, challenge_front, platform_env, settings, request) -> Callable[..., AcmeFleet]:  # noqa: F811
    """``acme_fleet_factory(nodes=2, nonce_reject=None)``: start pebble first, then the Celery
    worker and the nodes (which read pebble's settings from the environment)."""

    def make(*, nodes: int = 2, nonce_reject: int | None = None) -> AcmeFleet:
        pebble = pebble_factory(http_port=challenge_front.port, nonce_reject=nonce_reject)
        platform_env.update(point_at(pebble, settings), PORTICO_ACME_ROLLOUT_TIMEOUT="20")
        make_node = request.getfixturevalue("node_factory")  # starts the Celery worker now, with pebble's settings
        fleet = AcmeFleet(pebble=pebble, front=challenge_front)
        for i in range(nodes):
            node = make_node(f"edge-{i + 1}", proxy=True)
            challenge_front.add(node.name, node.http_port)
            fleet.nodes.append(node)
        from fleet.models import Worker

        names = [n.name for n in fleet.nodes]
        wait_for(lambda: Worker.objects.filter(name__in=names).count() == nodes, timeout=20, what="the agents' hello")
        return fleet

    return make
