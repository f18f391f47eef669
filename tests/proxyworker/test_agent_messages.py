"""Snapshot messages between the publisher and the agents: compressed on the way, checked on arrival."""

from __future__ import annotations

import base64
import zlib

import pytest

from proxyworker import agent, snapshot


def _envelope() -> str:
    snap = snapshot.Snapshot(version=4)
    return snapshot.encode_envelope(snapshot.sign(snap, snapshot.FleetKey("fleet-secret-for-message-tests-0123"))).decode()


def test_a_snapshot_message_carries_the_envelope_compressed():
    text = _envelope() + " " * 100_000  # room for compression to show
    message = agent.snapshot_message(4, text)
    assert message["kind"] == "snapshot" and message["version"] == 4 and "envelope" not in message
    assert len(message["envelope_zlib"]) < len(text) / 10
    assert agent.envelope_of(message) == text


def test_a_plain_envelope_from_an_older_publisher_is_still_read():
    text = _envelope()
    assert agent.envelope_of({"kind": "snapshot", "version": 4, "envelope": text}) == text


@pytest.mark.parametrize("packed", ["not base64 at all!", base64.b64encode(b"not zlib").decode()])
def test_an_unreadable_compressed_envelope_is_refused(packed):
    with pytest.raises(snapshot.SnapshotError, match="unreadable compressed envelope"):
        agent.envelope_of({"kind": "snapshot", "version": 4, "envelope_zlib": packed})


def test_an_envelope_inflating_past_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(agent, "MAX_ENVELOPE_BYTES", 1000)
    bomb = base64.b64encode(zlib.compress(b"x" * 100_000)).decode()
    with pytest.raises(snapshot.SnapshotError, match="larger than 1000 bytes"):
        agent.envelope_of({"kind": "snapshot", "version": 4, "envelope_zlib": bomb})
