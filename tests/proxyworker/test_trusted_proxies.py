"""A worker behind the operator's load balancer (``--trusted-proxies``): client address and scheme
come from X-Forwarded-For / X-Forwarded-Proto for requests from the trusted peers, and only for
those. Here 127.0.0.2 plays the load balancer; 127.0.0.1 is a client that sends the same headers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from proxyworker import snapshot as snap
from proxyworker.cidr import CidrSet
from proxyworker.forwarded import forwarded_client
from tests.proxyworker.conftest import REPO, get, site, snapshot

LB = "127.0.0.2"


def test_the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy():
    trusted = CidrSet(["10.0.0.0/8", "127.0.0.2/32"])
    assert forwarded_client("198.51.100.7", LB, trusted) == "198.51.100.7"
    # left of the first untrusted entry is what the client wrote: ignored
    assert forwarded_client("6.6.6.6, 198.51.100.7, 10.1.2.3", LB, trusted) == "198.51.100.7"
    assert forwarded_client("10.9.9.9, 10.1.2.3", LB, trusted) == "10.9.9.9"  # all trusted: the leftmost
    assert forwarded_client("198.51.100.7:5123", LB, trusted) == "198.51.100.7"
    assert forwarded_client("[2001:db8::7]:443, 10.1.2.3", LB, trusted) == "2001:db8::7"
    assert forwarded_client("2001:db8::7", LB, trusted) == "2001:db8::7"
    # garbage ends the walk: the last address before it counts
    assert forwarded_client("198.51.100.7, unknown", LB, trusted) == LB
    assert forwarded_client("evil, 10.1.2.3", LB, trusted) == "10.1.2.3"
    assert forwarded_client("", LB, trusted) == LB


@pytest.fixture
def behind_lb(backend_factory, worker_factory):
    a = backend_factory()
    policies = snap.Policies(ip_rules=snap.IpRules(deny=["198.51.100.7/32"]),
                             rate_limits=[snap.RateLimit(requests=2, per_seconds=3600)])
    sites = [site("lb.test", [a], policies=policies),
             site("secure-lb.test", [a], force_https=True, hsts=snap.Hsts(max_age=600))]
    return a, worker_factory(snapshot(*sites), trusted_proxies=f"10.0.0.0/8,{LB}")


def test_ip_rules_and_rate_limits_see_the_forwarded_client_of_a_trusted_peer(behind_lb):
    a, w = behind_lb
    xff = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
    assert get(w, "lb.test", headers=xff, source=LB).status == 403  # the real client is denied
    # The same header from an untrusted peer proves nothing: the TCP peer is the client.
    assert get(w, "lb.test", headers=xff, source="127.0.0.1").status == 200
    ok = get(w, "lb.test", headers={"X-Forwarded-For": "198.51.100.8"}, source=LB)
    assert ok.status == 200
    # The origin sees the whole chain: the load balancer's entry, then the address it came from.
    assert ok.json()["headers"]["x-forwarded-for"] == f"198.51.100.8, {LB}"
    # Each client behind the load balancer has its own bucket (2 requests), not one for all of them.
    for client in ("203.0.113.1", "203.0.113.2"):
        statuses = [get(w, "lb.test", headers={"X-Forwarded-For": client}, source=LB).status for _ in range(3)]
        assert statuses == [200, 200, 429], (client, statuses)
    assert a.hits == 1 + 1 + 4


def test_https_terminated_in_front_is_not_redirected_again(behind_lb):
    _, w = behind_lb
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"}
    ok = get(w, "secure-lb.test", headers=https, source=LB)
    assert ok.status == 200
    assert ok.json()["headers"]["x-forwarded-proto"] == "https"
    assert ok.headers["strict-transport-security"] == "max-age=600"
    assert get(w, "secure-lb.test", headers={"X-Forwarded-Proto": "http"}, source=LB).status == 301
    # An untrusted peer cannot claim HTTPS.
    spoofed = get(w, "secure-lb.test", headers=https, source="127.0.0.1")
    assert spoofed.status == 301 and "strict-transport-security" not in spoofed.headers


def test_the_connection_cap_per_address_does_not_apply_to_a_trusted_peer(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("cap.test", [a])), max_conns_per_ip=2, trusted_proxies=LB)
    time.sleep(0.3)  # the start-up probe connections are gone
    held = [socket.create_connection(("127.0.0.1", w.http_port), source_address=(LB, 0)) for _ in range(4)]
    try:
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: cap.test\r\n\r\n")
            s.settimeout(10)
            assert s.recv(12) == b"HTTP/1.1 200"
    finally:
        for s in held:
            s.close()


def test_a_bad_network_is_refused_at_start():
    out = subprocess.run([sys.executable, "-m", "proxyworker", "--snapshot", "/nonexistent", "--trusted-proxies",
                          "10.0.0.0/8,not-a-network"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--trusted-proxies" in out.stderr and "'not-a-network'" in out.stderr
