"""IP allow and deny lists: evaluated first, IPv4 and IPv6, CIDR edges (/0, /32, /128)."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import get, site, snapshot


def full_log(worker) -> str:
    return Path(worker.log_path).read_text(errors="replace")


def rules(**kw) -> snap.Policies:
    return snap.Policies(ip_rules=snap.IpRules(**kw))


def get6(worker, host: str, path: str = "/") -> int:
    conn = http.client.HTTPConnection("::1", worker.http_port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_denied_address_gets_403_page_and_never_reaches_backend(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("deny.test", [a], policies=rules(deny=["127.0.0.2/32", "127.0.1.0/24"]))))
    refused = get(w, "deny.test", source="127.0.0.2")
    assert refused.status == 403
    assert b"Portico" in refused.body and refused.headers["x-request-id"] in refused.body.decode()
    assert get(w, "deny.test", source="127.0.1.200").status == 403
    assert get(w, "deny.test", source="127.0.0.3").status == 200  # /32 is one address
    assert get(w, "deny.test", source="127.0.2.1").status == 200  # just outside the /24
    assert a.hits == 2
    assert "event=ip action=block rule=deny status=403 site=deny.test ip=127.0.0.2" in full_log(w)


def test_allow_list_admits_only_its_networks(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("allow.test", [a], policies=rules(allow=["127.0.0.8/29"]))))
    assert [get(w, "allow.test", source=f"127.0.0.{n}").status for n in (7, 8, 15, 16)] == [403, 200, 200, 403]


def test_deny_wins_over_allow_and_slash_zero_covers_everything(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(
        site("both.test", [a], policies=rules(allow=["0.0.0.0/0"], deny=["127.0.0.66"])),
        site("none.test", [a], policies=rules(deny=["0.0.0.0/0"])),
        site("open.test", [a]),
    ))
    assert get(w, "both.test", source="127.0.0.65").status == 200
    assert get(w, "both.test", source="127.0.0.66").status == 403
    assert get(w, "none.test", source="127.9.9.9").status == 403
    assert get(w, "open.test", source="127.9.9.9").status == 200  # rules are per site


@pytest.fixture
def dual_stack_worker(backend_factory, worker_factory):
    a = backend_factory()
    sites = [
        site("v6deny.test", [a], policies=rules(deny=["::1/128"])),
        site("v6allow.test", [a], policies=rules(allow=["::/0"])),  # every IPv6 client, no IPv4 one
        site("v6net.test", [a], policies=rules(deny=["::/127"])),  # ::0 and ::1
        site("v4only.test", [a], policies=rules(deny=["0.0.0.0/0"])),  # IPv4 /0 says nothing of IPv6
    ]
    return worker_factory(snapshot(*sites), listen_host="")


def test_ipv6_rules(dual_stack_worker):
    w = dual_stack_worker
    assert get6(w, "v6deny.test") == 403
    assert get(w, "v6deny.test").status == 200
    assert get6(w, "v6allow.test") == 200
    assert get(w, "v6allow.test").status == 403
    assert get6(w, "v6net.test") == 403
    assert get6(w, "v4only.test") == 200
    assert get(w, "v4only.test").status == 403


def test_new_rules_apply_without_restart(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("swap.test", [a])))
    assert get(w, "swap.test", source="127.0.0.44").status == 200
    w.swap(snapshot(site("swap.test", [a], policies=rules(deny=["127.0.0.44"])), version=2))
    assert get(w, "swap.test", source="127.0.0.44").status == 403


def test_cidr_set_edges():
    from proxyworker.cidr import CidrMap, CidrSet

    nets = CidrSet(["192.0.2.0/24", "2001:db8::/32", "::ffff:198.51.100.0/120", "203.0.113.7"])
    assert "192.0.2.255" in nets and "192.0.3.0" not in nets
    assert "::ffff:192.0.2.1" in nets  # an IPv4-mapped client is its IPv4 address
    assert "198.51.100.9" in nets  # a mapped network is its IPv4 network
    assert "2001:db8:ffff::1" in nets and "2001:db9::1" not in nets
    assert "203.0.113.7" in nets and "203.0.113.8" not in nets
    assert "fe80::1%eth0" not in nets and "not-an-ip" not in nets
    assert "::1" not in CidrSet(["0.0.0.0/0"]) and "10.0.0.1" not in CidrSet(["::/0"])
    assert sorted(CidrMap([("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("11.0.0.0/8", 3)]).lookup("10.1.2.3")) == [1, 2]
