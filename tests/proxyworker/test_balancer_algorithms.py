"""The balancing algorithms as pure functions: distributions, weights, consistency, ejection."""

from __future__ import annotations

from collections import Counter

from proxyworker.balancer import BackendState, PassivePolicy, Pool


def backends(*weights: int) -> list[BackendState]:
    return [BackendState(("s", "p", f"b{i}"), f"b{i}", "127.0.0.1", 9000 + i, weight=w) for i, w in enumerate(weights)]


def picks(pool: Pool, n: int, ip: str = "10.0.0.1") -> Counter:
    return Counter(pool.pick_backend(ip, 0.0).id for _ in range(n))


def test_round_robin_takes_turns():
    pool = Pool("p", backends(1, 1, 1), "round_robin")
    assert [pool.pick_backend("ip", 0).id for _ in range(6)] == ["b0", "b1", "b2", "b0", "b1", "b2"]


def test_smooth_weighted_round_robin_interleaves_like_nginx():
    pool = Pool("p", backends(5, 1, 1), "weighted_round_robin")
    seq = [pool.pick_backend("ip", 0).id for _ in range(7)]
    assert seq == ["b0", "b0", "b1", "b0", "b2", "b0", "b0"]
    assert picks(pool, 700) == {"b0": 500, "b1": 100, "b2": 100}


def test_least_connections_prefers_the_idlest_backend():
    bs = backends(1, 1, 1)
    pool = Pool("p", bs, "least_connections")
    bs[0].active, bs[1].active, bs[2].active = 5, 1, 3
    assert pool.pick_backend("ip", 0) is bs[1]
    bs[1].active = 9
    assert pool.pick_backend("ip", 0) is bs[2]


def test_least_connections_shares_ties_in_turn():
    assert picks(Pool("p", backends(1, 1), "least_connections"), 10) == {"b0": 5, "b1": 5}


def test_weighted_least_connections_divides_by_weight_and_honours_weights_at_rest():
    bs = backends(3, 1)
    pool = Pool("p", bs, "weighted_least_connections")
    assert picks(pool, 400) == {"b0": 300, "b1": 100}
    bs[0].active, bs[1].active = 3, 2  # 1.0 vs 2.0 per unit of weight
    assert pool.pick_backend("ip", 0) is bs[0]
    bs[0].active = 9  # 3.0 vs 2.0
    assert pool.pick_backend("ip", 0) is bs[1]


def test_weighted_response_time_favours_the_faster_backend():
    bs = backends(1, 1)
    pool = Pool("p", bs, "weighted_response_time")
    bs[0].ewma, bs[1].ewma = 0.010, 0.040
    c = picks(pool, 500)
    assert c["b0"] == 400 and c["b1"] == 100  # shares 1/10ms : 1/40ms = 4 : 1


def test_weighted_response_time_tries_backends_without_samples():
    bs = backends(1, 1)
    bs[0].ewma = 0.01
    c = picks(Pool("p", bs, "weighted_response_time"), 100)
    assert c["b1"] == 50


def test_ewma_follows_latency():
    b = backends(1)[0]
    for _ in range(30):
        b.record_latency(0.1)
    assert abs(b.ewma - 0.1) < 1e-6
    b.record_latency(0.2)
    assert 0.1 < b.ewma < 0.2


def test_resource_based_shares_by_spare_capacity():
    bs = backends(1, 1)
    bs[0].load, bs[1].load = 0.25, 0.75
    c = picks(Pool("p", bs, "resource_based"), 400)
    assert c == {"b0": 300, "b1": 100}


def test_ip_hash_keeps_a_client_on_one_backend():
    pool = Pool("p", backends(1, 1, 1), "ip_hash")
    for i in range(20):
        ip = f"10.1.0.{i}"
        assert len(picks(pool, 5, ip)) == 1


def test_ip_hash_spreads_clients_and_adding_a_backend_moves_few():
    ips = [f"10.{i // 250}.{i % 250}.7" for i in range(2000)]
    before = Pool("p", backends(1, 1, 1, 1), "ip_hash")
    after = Pool("p", backends(1, 1, 1, 1, 1), "ip_hash")
    first = {ip: before.pick_backend(ip, 0).id for ip in ips}
    second = {ip: after.pick_backend(ip, 0).id for ip in ips}
    shares = Counter(first.values())
    assert all(350 < n < 650 for n in shares.values()), shares
    moved = [ip for ip in ips if first[ip] != second[ip]]
    assert len(moved) < 2000 * 0.3  # ideal: 1/5
    assert all(second[ip] == "b4" for ip in moved)  # only to the new backend


def test_ip_hash_moves_only_the_clients_of_an_unavailable_backend():
    bs = backends(1, 1, 1)
    pool = Pool("p", bs, "ip_hash")
    ips = [f"10.2.0.{i}" for i in range(200)]
    first = {ip: pool.pick_backend(ip, 0) for ip in ips}
    bs[1].healthy = False
    for ip in ips:
        if first[ip] is not bs[1]:
            assert pool.pick_backend(ip, 0) is first[ip]
        else:
            assert pool.pick_backend(ip, 0) is not bs[1]


def test_unavailable_and_draining_backends_get_no_requests():
    bs = backends(1, 1, 1, 1)
    bs[0].healthy = False
    bs[1].draining = True
    bs[2].ejected_until = 100.0
    assert picks(Pool("p", bs, "round_robin"), 10) == {"b3": 10}
    bs[3].healthy = False
    assert Pool("p", bs, "round_robin").pick_backend("ip", 0) is None


def test_passive_ejection_after_consecutive_failures_with_doubling_backoff():
    b = backends(1)[0]
    policy = PassivePolicy(failures=3, eject_seconds=10, eject_max_seconds=25)
    assert not b.record_failure(0, policy)
    assert not b.record_failure(0, policy)
    assert b.record_failure(0, policy)
    assert not b.available(5) and b.available(10)
    assert b.record_failure(10, policy)  # on probation: one failure is enough
    assert b.ejected_until == 30
    assert b.record_failure(30, policy)
    assert b.ejected_until == 55  # capped at eject_max_seconds
    b.record_success()
    assert not b.record_failure(60, policy)  # a success forgives everything


def test_a_success_between_failures_resets_the_count():
    b = backends(1)[0]
    policy = PassivePolicy(failures=2)
    b.record_failure(0, policy)
    b.record_success()
    assert not b.record_failure(0, policy)


def test_active_checks_use_rise_and_fall():
    b = backends(1)[0]
    assert not b.record_check(False, rise=2, fall=2)
    assert b.record_check(False, rise=2, fall=2) and not b.healthy
    assert not b.record_check(True, rise=2, fall=2)
    assert b.record_check(True, rise=2, fall=2) and b.healthy
