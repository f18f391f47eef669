"""Config distribution with a real broker, a real Celery worker and real agent processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest
from edge import services as edge
from fleet.distribution import send_to_worker
from fleet.models import ConfigVersion, Rollout, Worker
from fleet.publisher import fleet_key
from fleet.selectors import rollout_status
from tenancy.access import Actor
from tenancy.models import Organization

from proxyworker import snapshot

from .conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def org(transactional_db):
    return Organization.objects.create(name="Acme", slug="acme")


def latest_version() -> int:
    v = ConfigVersion.objects.order_by("-number").first()
    return v.number if v else 0


def registered(*names: str) -> bool:
    return Worker.objects.filter(name__in=names).count() == len(names)


def create_site(org, name="shop", port=9000):
    return edge.site_create(
        actor=Actor.system("test"), org=org, name=name, hostnames=[f"{name}.example.com"],
        backends=[{"address": "127.0.0.1", "port": port}],
    )


def test_a_committed_change_reaches_every_worker(org, node_factory):
    a, b = node_factory("node-a"), node_factory("node-b")
    wait_for(lambda: registered("node-a", "node-b"), what="both agents to say hello")

    create_site(org)

    version = wait_for(latest_version, what="a publish")
    wait_for(lambda: a.served_version() == version and b.served_version() == version, what="both nodes to apply")
    served = snapshot.load_file(str(a.snapshot_path), fleet_key())
    assert [s.name for s in served.sites] == ["shop"]
    wait_for(lambda: rollout_status(version).complete, what="both reports")
    assert str(rollout_status(version)) == f"v{version} applied on 2 of 2 workers"


def test_a_worker_with_another_fleet_key_rejects_and_the_rollout_says_why(org, node_factory):
    node_factory("good")
    bad = node_factory("bad", fleet_key="another-fleet-secret-that-does-not-match")
    wait_for(lambda: registered("good", "bad"), what="hello")

    create_site(org)
    version = wait_for(latest_version, what="a publish")

    def settled():
        s = rollout_status(version)
        return s if s.applied == 1 and s.rejected else None

    status = wait_for(settled, what="one applied, one rejected")
    assert status.rejected[0]["worker"] == "bad"
    assert "signature does not match" in status.rejected[0]["reason"]
    assert bad.served_version() == 0


def test_tampered_and_replayed_snapshots_are_rejected(org, node_factory):
    node = node_factory("node-a")
    wait_for(lambda: registered("node-a"), what="hello")
    create_site(org)
    v1 = wait_for(latest_version, what="v1")
    wait_for(lambda: node.served_version() == v1, what="v1 applied")

    # tampered: the body says another backend port, the signature is the original one
    env = snapshot.decode_envelope(ConfigVersion.objects.get(number=v1).envelope)
    forged = snapshot.Envelope(version=v1 + 1, sha256=env.sha256, signature=env.signature,
                               body=env.body.replace(f'"version":{v1}', f'"version":{v1 + 1}'))
    send_to_worker("node-a", {"kind": "snapshot", "version": v1 + 1, "envelope": snapshot.encode_envelope(forged).decode()})
    rejected = wait_for(lambda: Rollout.objects.filter(version=v1 + 1, outcome="rejected").first(), what="rejection")
    assert "signature" in rejected.reason
    assert node.served_version() == v1

    # replayed: a correctly signed older version is ignored
    create_site(org, name="blog", port=9001)
    v2 = wait_for(lambda: latest_version() if latest_version() > v1 else 0, what="v2")
    wait_for(lambda: node.served_version() == v2, what="v2 applied")
    send_to_worker("node-a", {"kind": "snapshot", "version": v1, "envelope": ConfigVersion.objects.get(number=v1).envelope})
    wait_for(lambda: f"ignoring v{v1}" in node.log(), what="the replay to be ignored")
    assert node.served_version() == v2


def test_broker_down_then_back_the_worker_catches_up(org, node_factory, broker):
    node = node_factory("node-a")
    wait_for(lambda: registered("node-a"), what="hello")
    create_site(org)
    v1 = wait_for(latest_version, what="v1")
    wait_for(lambda: node.served_version() == v1, what="v1 applied")

    broker.stop()
    # The control plane keeps accepting changes while the broker is down: the change commits,
    # its publish cannot be enqueued, and the worker keeps serving v1.
    from fleet.publisher import publish

    create_site(org, name="blog", port=9001)
    publish()  # what the Celery publish task does once it can run
    v2 = latest_version()
    assert v2 > v1
    assert node.served_version() == v1

    broker.start()
    # the agent reconnects, says hello with v1, and the control plane sends it v2
    wait_for(lambda: node.served_version() == v2, timeout=30, what="catch-up after the broker returns")


def test_a_purge_reaches_the_node(org, node_factory):
    node = node_factory("node-a")
    wait_for(lambda: registered("node-a"), what="hello")
    send_to_worker("node-a", {"kind": "purge", "id": "p-1", "purge_kind": "all", "value": ""})
    purges = node.folder / "purges"
    files = wait_for(lambda: list(purges.glob("*.json")) if purges.exists() else [], what="the purge file")
    assert json.loads(files[0].read_text())["id"] == "p-1"


@contextlib.contextmanager
def node_on_tmpfs(org, node_factory, disk, size: str):
    """A node whose snapshot folder is a tmpfs of ``size``, serving a first version: (node, v1)."""
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        node = node_factory("node-a", folder=disk)
        wait_for(lambda: registered("node-a"), what="hello")
        create_site(org)
        v1 = wait_for(latest_version, what="v1")
        wait_for(lambda: node.served_version() == v1, what="v1 applied")
        yield node, v1
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_full_disk_is_reported_and_the_node_keeps_its_last_good_snapshot(org, node_factory, tmp_path):
    disk = tmp_path / "small-disk"
    with node_on_tmpfs(org, node_factory, disk, "12k") as (node, v1):
        for i in range(20):  # a snapshot larger than the disk
            create_site(org, name=f"site{i}", port=9100 + i)
        rejected = wait_for(lambda: Rollout.objects.filter(worker__name="node-a", outcome="rejected").first(), timeout=30,
                            what="the node to report it cannot write")
        assert "cannot write the last-known-good snapshot" in rejected.reason
        assert "No space left" in rejected.reason
        # the last snapshot that fitted is still on disk, whole, and is what the node serves
        assert v1 <= node.served_version() < rejected.version
        assert not list(disk.glob("*.part"))  # no partial file left holding the space


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs and turns it read-only")
def test_a_read_only_disk_is_reported_and_the_snapshot_is_written_once_it_is_writable(org, node_factory, tmp_path):
    disk = tmp_path / "disk"
    with node_on_tmpfs(org, node_factory, disk, "16m") as (node, v1):
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        create_site(org, name="blog", port=9001)
        v2 = wait_for(lambda: latest_version() if latest_version() > v1 else 0, what="v2")
        rejected = wait_for(lambda: Rollout.objects.filter(worker__name="node-a", version=v2, outcome="rejected").first(),
                            timeout=30, what="the node to report it cannot write")
        assert rejected.reason == "cannot write the last-known-good snapshot: Read-only file system"
        assert node.served_version() == v1

        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        # no new change and no reconnect: the agent writes the refused snapshot again by itself
        wait_for(lambda: node.served_version() == v2, timeout=15, what="v2 written once the disk is writable")
        wait_for(lambda: Rollout.objects.filter(worker__name="node-a", version=v2, outcome="applied").exists(),
                 timeout=15, what="v2 reported applied")
