"""Every balancing algorithm through a real worker, against real backends."""

from __future__ import annotations

import threading
import time
from collections import Counter

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import backend_spec, get, site, snapshot


def spread(w, host: str, n: int, **kw) -> Counter:
    return Counter(get(w, host, **kw).backend for _ in range(n))


def test_every_algorithm_distributes_and_honours_weights(backend_factory, worker_factory):
    b1, b2, b3 = backend_factory("one"), backend_factory("two"), backend_factory("three")
    weighted = [backend_spec(b1, weight=3), backend_spec(b2, weight=2), backend_spec(b3, weight=1)]
    sites = [
        site("rr.test", [b1, b2, b3], balancing="round_robin"),
        site("wrr.test", weighted, balancing="weighted_round_robin"),
        site("lc.test", [b1, b2, b3], balancing="least_connections"),
        site("wlc.test", weighted, balancing="weighted_least_connections"),
    ]
    w = worker_factory(snapshot(*sites))
    assert spread(w, "rr.test", 30) == {"one": 10, "two": 10, "three": 10}
    assert spread(w, "wrr.test", 60) == {"one": 30, "two": 20, "three": 10}
    c = spread(w, "lc.test", 30)  # sequential: no one busy, turns are shared
    assert all(8 <= c[n] <= 12 for n in ("one", "two", "three")), c
    c = spread(w, "wlc.test", 60)
    assert 25 <= c["one"] <= 35 and 15 <= c["two"] <= 25 and 5 <= c["three"] <= 15, c


def test_least_connections_avoids_the_busy_backend(backend_factory, worker_factory):
    slow, fast = backend_factory("slow", delay=1.5), backend_factory("fast")
    w = worker_factory(snapshot(site("lcbusy.test", [slow, fast], balancing="least_connections")))
    # Occupy the slow backend with one long request (ties alternate, so at most two tries).
    holders = []
    for _ in range(3):
        t = threading.Thread(target=get, args=(w, "lcbusy.test"))
        t.start()
        holders.append(t)
        time.sleep(0.3)
        if slow.hits:
            break
    assert slow.hits == 1
    assert spread(w, "lcbusy.test", 6) == {"fast": 6}
    for t in holders:
        t.join()


def test_weighted_response_time_sends_more_to_the_faster_backend(backend_factory, worker_factory):
    quick, sluggish = backend_factory("quick"), backend_factory("sluggish", delay=0.06)
    w = worker_factory(snapshot(site("wrt.test", [quick, sluggish], balancing="weighted_response_time")))
    c = spread(w, "wrt.test", 40)
    assert c["quick"] >= 3 * c["sluggish"] > 0, c


def test_resource_based_follows_the_load_backends_report(backend_factory, worker_factory):
    idle, busy = backend_factory("idle", load=0.2), backend_factory("busy", load=80)  # 80 means 80 %
    hc = snap.HealthCheck(path="/health", interval=0.2, timeout=1)
    w = worker_factory(snapshot(site("rb.test", [idle, busy], balancing="resource_based", health=hc)))
    deadline = time.monotonic() + 5
    while (idle.health_hits < 2 or busy.health_hits < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    c = spread(w, "rb.test", 50)
    assert c["idle"] == 40 and c["busy"] == 10, c  # spare capacity 0.8 : 0.2


def test_ip_hash_is_stable_and_adding_a_backend_moves_few_clients(backend_factory, worker_factory):
    bs = [backend_factory(f"h{i}") for i in range(3)]
    w = worker_factory(snapshot(site("iph.test", bs, balancing="ip_hash")))
    clients = [f"127.0.{i}.{j}" for i in range(1, 5) for j in range(2, 12)]  # 40 loopback sources
    first = {ip: get(w, "iph.test", source=ip).backend for ip in clients}
    assert all(get(w, "iph.test", source=ip).backend == first[ip] for ip in clients[:10])
    assert len(set(first.values())) == 3
    new = backend_factory("h3")
    w.swap(snapshot(site("iph.test", [*bs, new], balancing="ip_hash"), version=2))
    second = {ip: get(w, "iph.test", source=ip).backend for ip in clients}
    moved = [ip for ip in clients if first[ip] != second[ip]]
    assert 0 < len(moved) <= len(clients) * 0.45, moved
    assert {second[ip] for ip in moved} == {"h3"}


def test_sticky_cookie_keeps_a_client_on_its_backend(backend_factory, worker_factory):
    a, b = backend_factory("sa"), backend_factory("sb")
    w = worker_factory(snapshot(site("sticky.test", [a, b], sticky_cookie="portico_lb")))
    r = get(w, "sticky.test")
    cookie = r.headers["set-cookie"].split(";")[0]
    assert cookie.startswith("portico_lb=") and r.backend not in cookie  # opaque: no backend name
    assert {get(w, "sticky.test", headers={"Cookie": cookie}).backend for _ in range(6)} == {r.backend}
    assert "set-cookie" not in get(w, "sticky.test", headers={"Cookie": cookie}).headers
