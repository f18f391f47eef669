"""The cache as a node-wide service: concurrent misses make one origin request, the processes of a
node share entries, purges from the agent reach every process, the size stays bounded."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from proxyworker import snapshot as snap
from proxyworker.agent import Agent

from .conftest import get, site, snapshot

FLEET_SECRET = "cache-tests-fleet-secret-0123456789"


def cached_site(host, backends, id=None, **policy):
    return site(host, backends, id=id, policies=snap.Policies(cache=snap.CachePolicy(**policy)))


class RecordingAgent(Agent):
    """The node agent without a broker: what it would report is recorded."""

    def __init__(self, snapshot_path: str):
        self.sent: list[tuple[str, dict]] = []
        super().__init__(connection=None, control=None, name="node-1", snapshot_path=snapshot_path,
                         fleet_key=snap.FleetKey(FLEET_SECRET))

    def send(self, task: str, **kwargs) -> None:
        self.sent.append((task, kwargs))


def purge(agent: RecordingAgent, kind: str, value: str = "", site_id: str | None = None) -> None:
    n = len(agent.sent)
    body = {"kind": "purge", "id": f"p{n}", "organization": "org1", "site": site_id,
            "sites": [site_id] if site_id else ["c.test"], "purge_kind": kind, "value": value}
    assert agent.handle_purge(body)
    assert agent.sent[-1] == ("fleet.purged", {"name": "node-1", "purge_id": f"p{n}"})


def concurrent_gets(w, n: int, path: str):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: get(w, "c.test", path, timeout=20), range(n)))


def test_concurrent_misses_make_one_origin_request(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"}, delay=0.5)
    w = worker_factory(snapshot(cached_site("c.test", [origin])))
    replies = concurrent_gets(w, 100, "/hot")
    assert {r.status for r in replies} == {200}
    assert len({r.body for r in replies}) == 1
    assert origin.hits == 1
    assert sorted(r.headers["x-cache"] for r in replies).count("MISS") == 1


def test_processes_of_a_node_share_entries_and_coalesce(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"}, delay=0.5)
    w = worker_factory(snapshot(cached_site("c.test", [origin])), processes=2)
    replies = concurrent_gets(w, 100, "/shared")
    assert {r.status for r in replies} == {200}
    assert origin.hits == 1  # one origin request for the whole node
    origin.delay = 0
    for i in range(20):  # new connections land on both processes: every one is a hit
        assert get(w, "c.test", f"/warm{i % 2}").status == 200
    assert origin.hits == 3


def test_purges_by_url_prefix_tag_and_everything(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin], id="c.test", ignore_query_params=["utm_*"])))
    agent = RecordingAgent(w.snapshot_path)
    tags = {"/a?x=1": "page,a", "/b/1": "b", "/b/2": "b", "/c": "product-42", "/d": "other"}
    for path, tag in tags.items():
        origin.headers["Cache-Tag"] = tag
        assert get(w, "c.test", path).headers["x-cache"] == "MISS"
    assert "cache-tag" not in get(w, "c.test", "/d").headers  # tags are for purging, not for clients

    def states():
        return {p: get(w, "c.test", p).headers["x-cache"] for p in tags}

    purge(agent, "url", "https://c.test/a?x=1&utm_source=mail", "c.test")
    assert states() == {"/a?x=1": "MISS", "/b/1": "HIT", "/b/2": "HIT", "/c": "HIT", "/d": "HIT"}
    purge(agent, "prefix", "https://c.test/b/", "c.test")
    assert states() == {"/a?x=1": "HIT", "/b/1": "MISS", "/b/2": "MISS", "/c": "HIT", "/d": "HIT"}
    origin.headers["Cache-Tag"] = "other"  # what was stored again since keeps its tag... until refetched
    purge(agent, "tag", "product-42")
    assert states() == {"/a?x=1": "HIT", "/b/1": "HIT", "/b/2": "HIT", "/c": "MISS", "/d": "HIT"}
    purge(agent, "all")
    assert set(states().values()) == {"MISS"}
    done = sorted(os.listdir(Path(w.snapshot_path).parent / "purges" / "done"))
    assert len(done) == 4 and not [n for n in os.listdir(Path(w.snapshot_path).parent / "purges") if n.endswith(".json")]


def test_a_purge_holds_for_every_process(backend_factory, worker_factory):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"})
    w = worker_factory(snapshot(cached_site("c.test", [origin], id="c.test")), processes=2)
    agent = RecordingAgent(w.snapshot_path)
    for _ in range(10):  # both processes now hold the entry in memory
        get(w, "c.test", "/p")
    assert origin.hits == 1
    purge(agent, "url", "http://c.test/p", "c.test")
    for _ in range(10):
        assert get(w, "c.test", "/p").status == 200
    assert origin.hits == 2  # one refetch; no process served its old memory copy
    # A response already on its way from the origin when a purge runs is not stored after it.
    origin.delay = 1.0
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(get, w, "c.test", "/slow")
        time.sleep(0.4)
        purge(agent, "all")
        assert in_flight.result().headers["x-cache"] == "MISS"
    origin.delay = 0
    assert get(w, "c.test", "/slow").headers["x-cache"] == "MISS"


def test_cache_stays_within_its_byte_budget_evicting_least_recently_used(backend_factory, worker_factory, tmp_path):
    origin = backend_factory(headers={"Cache-Control": "max-age=60"}, body=b"x" * 20_000, content_type="text/plain")
    cache_dir = tmp_path / "small-cache"
    w = worker_factory(snapshot(cached_site("c.test", [origin])), cache_dir=str(cache_dir), cache_max_bytes=200_000)
    get(w, "c.test", "/keep")
    for i in range(10):  # 11 entries of 20 kB: over the budget
        get(w, "c.test", f"/fill{i}")
        if i == 4:
            time.sleep(1.1)  # access times are refreshed at most once a second per entry
            assert get(w, "c.test", "/keep").headers["x-cache"] == "HIT"  # now the most recently used
    time.sleep(0.5)
    total = sum(f.stat().st_size for f in cache_dir.rglob("*.e"))
    assert total <= 200_000 * 1.25
    hits_before = origin.hits
    assert get(w, "c.test", "/fill0").headers["x-cache"] == "MISS"  # the oldest was evicted
    assert origin.hits == hits_before + 1
    assert get(w, "c.test", "/keep").headers["x-cache"] == "HIT"


def test_a_purge_no_proxy_applied_is_not_reported_done(tmp_path, monkeypatch):
    monkeypatch.setattr("proxyworker.agent.APPLY_TIMEOUT", 0.3)
    path = tmp_path / "snapshot.json"
    path.write_bytes(snap.encode(snapshot(version=1)))
    agent = RecordingAgent(str(path))  # no proxy process watches this folder
    body = {"kind": "purge", "id": "p1", "site": None, "sites": [], "purge_kind": "all", "value": ""}
    assert agent.handle_purge(body) is False
    assert agent.sent == []
    assert len(list((tmp_path / "purges").glob("*.json"))) == 1  # still waiting for a proxy to apply it


def test_a_purge_only_touches_the_sites_it_names(backend_factory, worker_factory):
    ours, theirs = backend_factory(headers={"Cache-Control": "max-age=60"}), backend_factory(headers={"Cache-Control": "max-age=60"})
    w = worker_factory(snapshot(cached_site("ours.test", [ours], id="ours"), cached_site("theirs.test", [theirs], id="theirs")))
    agent = RecordingAgent(w.snapshot_path)
    for host in ("ours.test", "theirs.test"):
        assert get(w, host, "/page").headers["x-cache"] == "MISS"
    # an organization without sites purging "all" names no site: it must not empty anyone's cache
    body = {"kind": "purge", "id": "p-empty", "organization": "org-without-sites", "site": None, "sites": [],
            "purge_kind": "all", "value": ""}
    assert agent.handle_purge(body)
    assert get(w, "theirs.test", "/page").headers["x-cache"] == "HIT"
    purge(agent, "all", site_id="ours")
    assert get(w, "ours.test", "/page").headers["x-cache"] == "MISS"
    assert get(w, "theirs.test", "/page").headers["x-cache"] == "HIT"
