"""Traffic counting, samples, /metrics and access logs of a real worker process."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxyworker import snapshot as snap
from proxyworker import traffic
from tests.proxyworker.conftest import free_port, get, site, snapshot


def spool_files(worker) -> list[dict]:
    folder = Path(worker.snapshot_path).parent / traffic.SPOOL_FOLDER
    return [json.loads(p.read_bytes()) for p in sorted(folder.glob("*.json"))]


def latest_minutes(worker) -> dict[tuple[str, int], dict]:
    """Per (site, minute), the newest cumulative counts the spool holds (later files win)."""
    out: dict[tuple[str, int], dict] = {}
    for f in sorted(spool_files(worker), key=lambda f: (f["process"], f["seq"])):
        for m in f["minutes"]:
            out[(m["site"], m["minute"])] = m
    return out


def site_totals(worker, site_id: str) -> dict:
    total = {"requests": 0, "status": [0] * 5, "backends": {}, "blocked": {}, "latency": 0, "bytes_out": 0}
    for (s, _), m in latest_minutes(worker).items():
        if s != site_id:
            continue
        total["requests"] += m["requests"]
        total["status"] = [a + b for a, b in zip(total["status"], m["status"], strict=True)]
        total["latency"] += sum(m["latency"])
        total["bytes_out"] += m["bytes_out"]
        for b, (req, err) in m["backends"].items():
            t = total["backends"].setdefault(b, [0, 0])
            t[0] += req
            t[1] += err
        for reason, rule, n in m["blocked"]:
            total["blocked"][(reason, rule)] = total["blocked"].get((reason, rule), 0) + n
    return total


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_requests_are_counted_per_site_status_class_and_backend(backend_factory, worker_factory):
    ok, failing = backend_factory("ok"), backend_factory("failing", status=500)
    w = worker_factory(snapshot(
        site("counted.test", [ok], id="site-ok"),
        site("failing.test", [failing], id="site-fail", health=snap.HealthCheck(enabled=False, passive_failures=100)),
    ), ship_interval=0.2)
    for _ in range(7):
        assert get(w, "counted.test").status == 200
    assert get(w, "counted.test", "/missing-route-is-still-the-backend").status == 200
    for _ in range(3):
        get(w, "failing.test", method="POST", body=b"x" * 10)  # POST: not retried
    assert get(w, "nobody.test").status == 404

    wait_until(lambda: site_totals(w, "site-ok")["requests"] == 8 and site_totals(w, "site-fail")["requests"] == 3,
               what="the spool to hold every request")
    good, bad = site_totals(w, "site-ok"), site_totals(w, "site-fail")
    assert good["status"] == [0, 8, 0, 0, 0]
    assert good["backends"] == {"ok": [8, 0]}
    assert good["latency"] == 8  # every proxied request is in the latency histogram
    assert good["bytes_out"] > 0
    assert bad["status"] == [0, 0, 0, 0, 3]
    assert bad["backends"] == {"failing": [3, 3]}
    # the unknown host is nobody's traffic
    assert set(s for s, _ in latest_minutes(w)) == {"site-ok", "site-fail"}


def test_blocked_requests_carry_their_rule(backend_factory, worker_factory):
    a = backend_factory()
    rules = snap.Policies(ip_rules=snap.IpRules(deny=["127.0.0.2/32"]))
    w = worker_factory(snapshot(site("guarded.test", [a], id="guarded", policies=rules)), ship_interval=0.2)
    assert get(w, "guarded.test", source="127.0.0.2").status == 403
    assert get(w, "guarded.test", source="127.0.0.2").status == 403
    assert get(w, "guarded.test", source="127.0.0.3").status == 200
    totals = wait_until(lambda: (t := site_totals(w, "guarded")) and t["requests"] == 3 and t, what="counts")
    assert totals["blocked"] == {("ip", "deny"): 2}
    assert totals["status"] == [0, 1, 0, 2, 0]
    assert totals["backends"] == {a.name: [1, 0]}  # the refused ones never reached it
    blocked_samples = [s for f in spool_files(w) for s in f["samples"] if s["blocked"]]
    assert len(blocked_samples) == 2  # every blocked request is kept, whatever the sampling rate
    assert blocked_samples[0]["blocked"] == {"reason": "ip", "rule": "deny"}
    assert blocked_samples[0]["backend"] is None


def test_samples_mask_authorization_cookies_and_secret_query_values(backend_factory, worker_factory):
    a = backend_factory()
    w = worker_factory(snapshot(site("inspect.test", [a], id="inspect")), ship_interval=0.2, sample_every=1)
    get(w, "inspect.test", "/api/items?page=2&access_token=s3cr3t", headers={
        "Authorization": "Bearer s3cr3t", "Cookie": "session=s3cr3t", "X-Api-Key": "s3cr3t", "X-Trace": "visible"})
    sample = wait_until(lambda: [s for f in spool_files(w) for s in f["samples"]], what="a sample")[0]
    assert "s3cr3t" not in json.dumps(sample)
    headers = dict((k.lower(), v) for k, v in sample["request_headers"])
    assert headers["authorization"] == traffic.MASK
    assert headers["cookie"] == traffic.MASK
    assert headers["x-api-key"] == traffic.MASK
    assert headers["x-trace"] == "visible"
    assert sample["path"] == f"/api/items?page=2&access_token={traffic.MASK}"
    assert sample["backend"] == a.name and sample["status"] == 200
    assert set(sample["timing"]) == {"receive", "connect", "upstream_wait", "send", "total"}
    assert sample["timing"]["upstream_wait"] is not None


def test_metrics_endpoint_parses_with_the_prometheus_parser(backend_factory, worker_factory):
    a = backend_factory()
    admin = free_port()
    w = worker_factory(snapshot(site("scraped.test", [a], id="scraped")), admin_port=admin)
    for _ in range(4):
        get(w, "scraped.test")
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["site"], s.labels["status_class"]): s.value
                for s in families["portico_requests"].samples if s.name == "portico_requests_total"}
    assert requests[("scraped", "2xx")] == 4
    hist = [s for s in families["portico_upstream_latency_seconds"].samples if s.name.endswith("_count")]
    assert hist[0].value == 4
    up = {s.labels["backend"]: s.value for s in families["portico_backend_up"].samples}
    assert up == {a.name: 1.0}
    assert families["portico_snapshot_version"].samples[0].value == 1


def test_access_log_is_json_lines_with_anonymized_ips(backend_factory, worker_factory, tmp_path):
    a = backend_factory()
    log = tmp_path / "access.log"
    w = worker_factory(snapshot(site("logged.test", [a], id="logged")), access_log=str(log), anonymize_ip=True,
                       ship_interval=0.2)
    get(w, "logged.test", "/login?password=hunter2&next=/home", source="127.0.0.9")
    line = wait_until(lambda: log.exists() and log.read_text().strip(), what="a log line")
    entry = json.loads(line.splitlines()[0])
    assert entry["client_ip"] == "127.0.0.0"
    assert entry["site"] == "logged" and entry["status"] == 200 and entry["upstream"] == a.name
    assert entry["path"] == f"/login?password={traffic.MASK}&next=/home"
    assert entry["method"] == "GET" and entry["request_id"] and entry["duration_ms"] >= entry["upstream_ms"] >= 0


def test_percentile_interpolates_within_histogram_buckets():
    buckets = [0] * (len(traffic.LATENCY_BOUNDS_MS) + 1)
    buckets[1] = 50  # 5-10 ms
    buckets[4] = 50  # 50-100 ms
    assert traffic.percentile(buckets, 0.5) == 10.0
    assert traffic.percentile(buckets, 0.99) == 99.0
    assert traffic.percentile([0] * len(buckets), 0.5) is None
