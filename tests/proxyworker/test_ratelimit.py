"""Rate limits: token buckets shared by every worker process, 429 with Retry-After and the
RateLimit-* headers, per path prefix, per IP or per header, block or log."""

from __future__ import annotations

import multiprocessing
import re
import time
from pathlib import Path

import pytest

from proxyworker import ratelimit
from proxyworker import snapshot as snap
from tests.proxyworker.conftest import get, site, snapshot


def limited(*limits: snap.RateLimit, **kw) -> snap.Policies:
    return snap.Policies(rate_limits=list(limits), **kw)


def _hammer(path: str, n: int, start, out) -> None:
    buckets = ratelimit.SharedBuckets(path)
    start.wait()
    out.put(sum(buckets.take(b"site\0lim\0ip:1", 20000.0, 1e-9, time.monotonic()).allowed for _ in range(n)))


def test_buckets_are_exact_across_os_processes(tmp_path):
    path = str(tmp_path / "buckets")
    ratelimit.create(path)
    ctx = multiprocessing.get_context("spawn")  # fork would copy the test-backend thread
    out, start = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(path, 10000, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()  # all at once, on both cores: without the lock, updates get lost
    allowed = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join()
    assert allowed == 20000  # 40000 attempts on a bucket of 20000


def test_bucket_refills_at_its_rate(tmp_path):
    buckets = ratelimit.SharedBuckets(str(tmp_path / "b"))
    now = 1000.0
    assert [buckets.take(b"k", 2, 1.0, now).allowed for _ in range(3)] == [True, True, False]
    refused = buckets.take(b"k", 2, 1.0, now + 0.5)
    assert not refused.allowed and abs(refused.retry_after - 0.5) < 1e-6
    assert buckets.take(b"k", 2, 1.0, now + 1.0).allowed
    assert buckets.take(b"other", 2, 1.0, now + 1.0).remaining == 1  # keys are independent


def test_limit_holds_across_two_worker_processes(backend_factory, worker_factory):
    a = backend_factory()
    limit = snap.RateLimit(requests=10, burst=5, per_seconds=3600)
    # the kernel spreads new connections over both processes (with --cpu-affinity it would give
    # each the connections of its own core, and this client may stay on one)
    w = worker_factory(snapshot(site("rl2.test", [a], policies=limited(limit))), processes=2)
    statuses = [get(w, "rl2.test").status for _ in range(40)]  # a new connection each: both processes serve
    assert statuses.count(200) == 15 and statuses.count(429) == 25
    assert statuses[:15] == [200] * 15
    assert a.hits == 15
    refusing = set(re.findall(r"\[worker (\d+)\] proxyworker.ratelimit: event=ratelimit action=block",
                              Path(w.log_path).read_text()))
    assert len(refusing) == 2  # both processes refused, from the one shared bucket


def test_429_and_ratelimit_headers(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("rlh.test", [a], policies=limited(snap.RateLimit(requests=2, per_seconds=60)))))
    first, second, third = (get(w, "rlh.test") for _ in range(3))
    assert (first.status, second.status, third.status) == (200, 200, 429)
    assert first.headers["ratelimit-limit"] == "2" and first.headers["ratelimit-remaining"] == "1"
    assert first.headers["ratelimit-policy"] == "2;w=60"
    assert 29 <= int(first.headers["ratelimit-reset"]) <= 30  # one token spent, 30 s to refill it
    assert second.headers["ratelimit-remaining"] == "0"
    assert third.headers["ratelimit-remaining"] == "0"
    assert 28 <= int(third.headers["retry-after"]) <= 30
    assert 58 <= int(third.headers["ratelimit-reset"]) <= 60
    assert b"Too Many Requests" in third.body and third.headers["x-request-id"]
    assert a.hits == 2


def test_burst_then_steady_rate(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("rlr.test", [a], policies=limited(snap.RateLimit(requests=4, per_seconds=1)))))
    assert [get(w, "rlr.test").status for _ in range(5)].count(200) == 4
    time.sleep(0.6)  # 2.4 tokens refilled
    assert [get(w, "rlr.test").status for _ in range(3)][:2] == [200, 200]


def test_limits_apply_per_path_prefix_and_per_key(backend_factory, worker_factory):
    a = backend_factory()
    api = snap.RateLimit(name="api", requests=2, per_seconds=3600, path_prefix="/api", key="header", header="X-Api-Key")
    w = worker_factory(snapshot(site("rlk.test", [a], policies=limited(api))))
    key = {"X-Api-Key": "alpha"}
    assert [get(w, "rlk.test", "/api/x", headers=key).status for _ in range(3)] == [200, 200, 429]
    # another key has its own bucket, even from the same address
    assert get(w, "rlk.test", "/api/x", headers={"X-Api-Key": "beta"}).status == 200
    # no key: the client's address is the key
    assert [get(w, "rlk.test", "/api/x").status for _ in range(3)] == [200, 200, 429]
    # outside the prefix: no limit and no headers
    outside = get(w, "rlk.test", "/other", headers=key)
    assert outside.status == 200 and "ratelimit-limit" not in outside.headers
    # per IP by default: another address, another bucket
    w.swap(snapshot(site("rlk.test", [a], policies=limited(snap.RateLimit(requests=1, per_seconds=3600))), version=2))
    assert [get(w, "rlk.test", source="127.0.0.31").status for _ in range(2)] == [200, 429]
    assert get(w, "rlk.test", source="127.0.0.32").status == 200


def test_log_only_limit_lets_traffic_through_and_records_it(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("rll.test", [a], policies=limited(
        snap.RateLimit(name="watch", requests=1, per_seconds=3600, action="log")))))
    assert [get(w, "rll.test").status for _ in range(3)] == [200, 200, 200]
    assert a.hits == 3
    assert Path(w.log_path).read_text().count("event=ratelimit action=log rule=watch") == 2


@pytest.fixture
def private_redis(tmp_path):
    from tests.e2e.processes import PrivateRedis

    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


def test_redis_makes_the_limit_hold_across_nodes_and_its_outage_falls_back_to_each_node(
        backend_factory, worker_factory, private_redis):
    a = backend_factory()
    snapshot_obj = snapshot(site("rlx.test", [a], policies=limited(snap.RateLimit(requests=6, per_seconds=3600))))
    nodes = [worker_factory(snapshot_obj, ratelimit_redis=private_redis.url) for _ in range(2)]  # two nodes
    statuses = [get(nodes[i % 2], "rlx.test").status for i in range(12)]
    assert statuses.count(200) == 6 and statuses[:6] == [200] * 6  # one limit for both nodes
    private_redis.stop()
    # Redis gone: each node limits on its own (its local buckets are fresh: 6 each), no errors
    after = [get(nodes[i % 2], "rlx.test").status for i in range(16)]
    assert after.count(200) == 12 and set(after) == {200, 429}
    assert "unavailable" in Path(nodes[0].log_path).read_text()
