"""Active and passive health checks, failover, retries, draining, and the all-down page."""

from __future__ import annotations

import threading
import time
from collections import Counter

from proxyworker import snapshot as snap
from tests.proxyworker.conftest import backend_spec, get, site, snapshot

FAST_CHECKS = snap.HealthCheck(path="/health", interval=0.2, timeout=1, rise=2, fall=2)


def wait_until(predicate, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_active_health_check_ejects_a_failing_backend_and_brings_it_back(backend_factory, worker_factory):
    good, flaky = backend_factory("good"), backend_factory("flaky")
    w = worker_factory(snapshot(site("hc.test", [good, flaky], health=FAST_CHECKS)))
    assert Counter(get(w, "hc.test").backend for _ in range(4)) == {"good": 2, "flaky": 2}
    flaky.health_status = 503
    wait_until(lambda: flaky.health_hits >= 3)
    time.sleep(0.5)
    assert {get(w, "hc.test").backend for _ in range(6)} == {"good"}
    flaky.health_status = 200
    before = flaky.health_hits
    wait_until(lambda: flaky.health_hits >= before + 3)
    assert "flaky" in {get(w, "hc.test").backend for _ in range(6)}


def test_expected_status_decides_health(backend_factory, worker_factory):
    a, b = backend_factory("ea"), backend_factory("eb")
    hc = snap.HealthCheck(path="/health", interval=0.2, timeout=1, rise=1, fall=1, expected_status=[204])
    w = worker_factory(snapshot(site("exp.test", [a, b], health=hc)))
    b.health_status = 204
    wait_until(lambda: a.health_hits >= 2 and b.health_hits >= 2)
    time.sleep(0.3)
    assert {get(w, "exp.test").backend for _ in range(4)} == {"eb"}  # 200 is not what was asked for


def test_refused_connection_fails_over_to_another_backend(backend_factory, worker_factory):
    alive, dead = backend_factory("alive"), backend_factory("dead")
    dead.stop()
    w = worker_factory(snapshot(site("fo.test", [alive, dead])))  # no active checks: only failover
    replies = [get(w, "fo.test") for _ in range(10)]
    assert all(r.status == 200 and r.backend == "alive" for r in replies)


def test_passive_checks_eject_a_backend_answering_5xx(backend_factory, worker_factory):
    ok, broken = backend_factory("ok"), backend_factory("broken", status=500)
    hc = snap.HealthCheck(enabled=False, passive_failures=2, eject_seconds=30)
    w = worker_factory(snapshot(site("pas.test", [ok, broken], health=hc)))
    statuses = [get(w, "pas.test").status for _ in range(8)]
    assert statuses.count(500) == 2  # two strikes, then out
    assert broken.hits == 2


def test_idempotent_request_is_retried_on_another_backend_after_503(backend_factory, worker_factory):
    ok, sick = backend_factory("ok", ), backend_factory("sick", status=503)
    hc = snap.HealthCheck(enabled=False, passive_failures=100)
    w = worker_factory(snapshot(site("retry.test", [ok, sick], health=hc)))
    replies = [get(w, "retry.test") for _ in range(6)]
    assert all(r.status == 200 and r.backend == "ok" for r in replies)
    assert sick.hits == 3  # it was tried, and each time the retry answered
    assert all("server" not in r.headers for r in replies)  # the retried answer is cleaned too
    post = get(w, "retry.test", method="POST", body=b"x")
    post2 = get(w, "retry.test", method="POST", body=b"x")
    assert sorted([post.status, post2.status]) == [200, 503]  # never retried: not idempotent


def test_upstream_timeout_retries_idempotent_requests_and_gives_504_otherwise(backend_factory, worker_factory):
    ok, hung = backend_factory("ok"), backend_factory("hung", delay=5)
    hc = snap.HealthCheck(enabled=False, passive_failures=100)
    w = worker_factory(snapshot(site("slow.test", [ok, hung], health=hc)), upstream_timeout=0.5)
    started = time.monotonic()
    replies = [get(w, "slow.test") for _ in range(2)]
    assert [r.backend for r in replies] == ["ok", "ok"]
    assert time.monotonic() - started < 3
    posts = [get(w, "slow.test", method="POST", body=b"x") for _ in range(2)]
    assert sorted(r.status for r in posts) == [200, 504]


def test_draining_backend_gets_no_new_requests(backend_factory, worker_factory):
    a, b = backend_factory("stay"), backend_factory("drain")
    w = worker_factory(snapshot(site("dr.test", [a, b])))
    w.swap(snapshot(site("dr.test", [a, backend_spec(b, state="draining")]), version=2))
    assert {get(w, "dr.test").backend for _ in range(6)} == {"stay"}


def test_all_backends_down_gives_a_clear_503_page(backend_factory, worker_factory):
    a, b = backend_factory(), backend_factory()
    w = worker_factory(snapshot(site("down.test", [a, b], health=FAST_CHECKS)))
    a.health_status = b.health_status = 500
    wait_until(lambda: a.health_hits >= 3 and b.health_hits >= 3)
    time.sleep(0.4)
    r = get(w, "down.test")
    assert r.status == 503
    assert b"No healthy origin server" in r.body
    assert a.hits == b.hits == 0


def test_killing_a_backend_under_load_gives_zero_client_errors(backend_factory, worker_factory):
    bs = [backend_factory(f"k{i}") for i in range(3)]
    w = worker_factory(snapshot(site("kill.test", bs, health=FAST_CHECKS)))
    errors: list[str] = []
    done = threading.Event()
    counts = Counter()

    def load() -> None:
        while not done.is_set():
            try:
                r = get(w, "kill.test", timeout=5)
                counts[r.backend] += 1
                if r.status != 200:
                    errors.append(f"status {r.status}")
            except Exception as exc:  # noqa: BLE001 - any client-visible failure counts
                errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    bs[1].stop()
    killed_at = sum(counts.values())
    time.sleep(2.0)
    done.set()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(counts.values()) - killed_at > 50  # the load really continued
    assert counts["k0"] > 0 and counts["k2"] > 0
