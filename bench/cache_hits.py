"""Cache-hit throughput and compression (issue: caching and compression).

In one run, on this machine, with wrk against a 612-byte file and a 121 kB minified CSS file:
  nginx ``proxy_cache`` hits, stock ``mitmdump --mode reverse:...`` (every request proxied: it has
  no cache), and the Portico worker answering hits with the whole policy pipeline on (IP rules,
  rate limit, WAF managed groups, header rules, cache, compression), with 1 and N processes, for an
  identity hit and for gzip and brotli hits of the larger file (compressed once, then cached).
Then, in-process, compression ratio and throughput per coding at the policy's default levels and at
mitmproxy's fastest levels, over real text files (HTML, JS, CSS, JSON).

Each configuration runs --rounds times, alternating, and the median is reported: other processes
on a shared machine come and go.

Run: .venv/bin/python bench/cache_hits.py [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import wrk  # noqa: E402
from proxyworker import compression  # noqa: E402
from proxyworker import snapshot as snap  # noqa: E402
from tests.e2e.processes import PY, free_port, spawn, stop, wait_for  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000;
  proxy_cache_path {dir}/nginx-cache levels=1:2 keys_zone=bench:10m max_size=1g inactive=60m use_temp_path=off;
  server {{
    listen 127.0.0.1:{origin};
    root {dir}/www;
    add_header Cache-Control "public, max-age=3600";
  }}
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache bench; proxy_cache_lock on;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
"""

# The ceiling: a bare embedded Master (the addons any proxy needs) whose one addon answers every
# request from ``requestheaders`` with the same 612 bytes, as a cache hit at its very best would.
BARE_MASTER = """
import asyncio, sys
from mitmproxy import http, options
from mitmproxy.addons import errorcheck, next_layer, proxyserver
from mitmproxy.master import Master

BODY = b"x" * 612

class Answer:
    def requestheaders(self, flow):
        flow.response = http.Response.make(200, BODY, {"content-type": "text/html"})

async def main(port):
    opts = options.Options(mode=[f"reverse:http://127.0.0.1:9@127.0.0.1:{port}"])
    master = Master(opts)
    master.addons.add(proxyserver.Proxyserver(), next_layer.NextLayer(), errorcheck.ErrorCheck(), Answer())
    opts.update(connection_strategy="lazy")
    await master.run()

asyncio.run(main(int(sys.argv[1])))
"""

VENV_SITE = Path(sysconfig.get_paths()["purelib"])  # real text files that ship with the venv
CORPUS = {
    "html": VENV_SITE / "django/views/templates/technical_500.html",
    "js": VENV_SITE / "django/contrib/admin/static/admin/js/vendor/jquery/jquery.js",
    "css": VENV_SITE / "django/contrib/admin/static/admin/css/base.css",
    "minified css": VENV_SITE / "rest_framework/static/rest_framework/css/bootstrap.min.css",
}
MITMPROXY_FASTEST = {"gzip": 1, "br": 0, "zstd": 1}


def probe(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def all_policies() -> snap.Policies:
    """Every policy on, as a busy site would have them, none of them refusing the benchmark."""
    return snap.Policies(
        cache=snap.CachePolicy(),
        compression=snap.CompressionPolicy(),
        ip_rules=snap.IpRules(allow=["127.0.0.0/8", "10.0.0.0/8"], deny=["192.0.2.0/24"]),
        rate_limits=[snap.RateLimit(requests=10_000_000, per_seconds=1.0)],
        waf=snap.WafPolicy(
            managed={"sqli": "block", "xss": "block", "traversal": "block", "scanners": "block"},
            rules=[snap.WafRule(id="no-php", conditions=[snap.WafCondition(field="path", op="contains", value=".php")])],
        ),
        headers=[snap.HeaderRule(direction="response", op="set", name="X-Frame-Options", value="DENY")],
    )


def compression_table() -> dict:
    corpus = {name: path.read_bytes() for name, path in CORPUS.items() if path.exists()}
    corpus["json"] = snap.encode(snap.Snapshot(version=1, sites=[
        snap.Site(id=f"s{i}", organization="o1", name=f"site{i}", hostnames=[f"site{i}.example.com"],
                  pools=[snap.Pool(name="default", backends=[snap.Backend(id=f"b{i}", address="10.0.0.1", port=8000 + i)])])
        for i in range(300)
    ]))  # fmt: skip
    defaults = snap.CompressionPolicy()
    levels = {"gzip": defaults.gzip_level, "br": defaults.brotli_level, "zstd": defaults.zstd_level}
    table: dict = {"corpus_bytes": {k: len(v) for k, v in corpus.items()}, "codings": {}}
    for coding in compression.CODINGS:
        for label, level in (("policy default", levels[coding]), ("mitmproxy fastest", MITMPROXY_FASTEST[coding])):
            encode = compression.encoder(coding, level)
            original = compressed = 0
            spent = 0.0
            for data in corpus.values():
                rounds = 0
                started = time.perf_counter()
                while True:
                    out = encode(data)
                    rounds += 1
                    if time.perf_counter() - started > 0.3:
                        break
                spent += (time.perf_counter() - started) / rounds
                assert compression.decode(coding, out) == data
                original += len(data)
                compressed += len(out)
            table["codings"][f"{coding} level {level} ({label})"] = {
                "ratio": round(compressed / original, 4),
                "saved_percent": round(100 * (1 - compressed / original), 1),
                "encode_mb_per_s": round(original / spent / 1e6, 1),
            }
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cache_hits.json"))
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("needs wrk and nginx (apt-get install wrk nginx-light)")

    work = Path(tempfile.mkdtemp(prefix="portico-bench-cache-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    (work / "www").mkdir()
    (work / "www" / "index.html").write_bytes(b"x" * 612)  # the 612-byte file of DESIGN.md's measurements
    (work / "www" / "asset.css").write_bytes(CORPUS["minified css"].read_bytes())  # 121 kB, minified
    origin, nginx_cache, mitm_port = free_port(), free_port(), free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, origin=origin, proxy=nginx_cache))
    procs = {"nginx": spawn(["nginx", "-c", str(work / "nginx.conf")], env=os.environ.copy(), log=work / "nginx.log")}
    mitmdump = str(Path(PY).parent / "mitmdump")
    procs["mitmdump"] = spawn([mitmdump, "-q", "--mode", f"reverse:http://127.0.0.1:{origin}@127.0.0.1:{mitm_port}"],
                              env=os.environ.copy(), log=work / "mitmdump.log")  # fmt: skip
    bare_port = free_port()
    (work / "bare_master.py").write_text(BARE_MASTER)
    procs["bare"] = spawn([PY, str(work / "bare_master.py"), str(bare_port)], env=os.environ.copy(), log=work / "bare.log")
    site = snap.Site(
        id="bench", organization="o1", name="bench", hostnames=["bench.test"],
        pools=[snap.Pool(name="default", backends=[snap.Backend(id="nginx", address="127.0.0.1", port=origin)])],
        health_check=snap.HealthCheck(enabled=False), policies=all_policies(),
    )  # fmt: skip
    workers = {}
    for n in (1, args.processes):
        folder = work / f"node{n}"  # each node its own snapshot folder, so its own cache
        folder.mkdir()
        (folder / "snapshot.json").write_bytes(snap.encode(snap.Snapshot(version=1, sites=[site])))
        port = free_port()
        procs[f"worker{n}"] = spawn([PY, "-m", "proxyworker", "--snapshot", str(folder / "snapshot.json"),
                                     "--http-port", str(port), "--https-port", str(free_port()), "--processes", str(n),
                                     "--listen-host", "127.0.0.1"],
                                    env=os.environ.copy(), log=work / f"worker{n}.log")  # fmt: skip
        workers[n] = port

    def up(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    for port in (origin, nginx_cache, mitm_port, bare_port, *workers.values()):
        wait_for(lambda p=port: up(p), timeout=30, what=f"port {port}")
    time.sleep(1)

    host = {"Host": "bench.test"}
    gzip_host = {"Host": "bench.test", "Accept-Encoding": "gzip, deflate"}
    br_host = {"Host": "bench.test", "Accept-Encoding": "gzip, deflate, br"}
    targets = {
        "nginx proxy_cache hit": (nginx_cache, "/index.html", {}),
        "stock mitmdump reverse (proxied, no cache)": (mitm_port, "/index.html", {}),
        "bare mitmproxy Master answering in requestheaders (ceiling)": (bare_port, "/index.html", {}),
        "portico worker, 1 process, hit": (workers[1], "/index.html", host),
        f"portico worker, {args.processes} processes, hit": (workers[args.processes], "/index.html", host),
        "nginx proxy_cache hit, 121 kB CSS (identity)": (nginx_cache, "/asset.css", {}),
        "portico worker, 1 process, hit, 121 kB CSS as gzip": (workers[1], "/asset.css", gzip_host),
        "portico worker, 1 process, hit, 121 kB CSS as br": (workers[1], "/asset.css", br_host),
    }
    checks = {}
    for name, (port, path, headers) in targets.items():  # fill the caches and check they answer hits
        for _ in range(3):
            status, resp_headers, body = probe(port, path, headers)
        checks[name] = {"status": status, "x-cache": resp_headers.get("x-cache"), "content-encoding":
                        resp_headers.get("content-encoding"), "bytes": len(body)}  # fmt: skip
    for name, check in checks.items():
        if "mitmdump" not in name and "bare" not in name and check["x-cache"] != "HIT":
            raise SystemExit(f"{name}: not a cache hit: {check}")

    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        for port, path, headers in targets.values():  # warm-up
            wrk(f"http://127.0.0.1:{port}{path}", threads=1, conns=32, duration=2, headers=headers)
        for _ in range(args.rounds):
            for name, (port, path, headers) in targets.items():
                runs[name].append(wrk(f"http://127.0.0.1:{port}{path}", threads=1, conns=32, duration=args.duration,
                                      headers=headers))  # fmt: skip
    finally:
        load_after = os.getloadavg()
        for p in procs.values():
            stop(p)

    summary = {name: {"rps_median": statistics.median(r["rps"] for r in rs), "rps_runs": [r["rps"] for r in rs],
                      "errors": sum(r["errors"] for r in rs), "probe": checks[name]} for name, rs in runs.items()}  # fmt: skip
    mitm = summary["stock mitmdump reverse (proxied, no cache)"]["rps_median"]
    one = summary["portico worker, 1 process, hit"]["rps_median"]
    many = summary[f"portico worker, {args.processes} processes, hit"]["rps_median"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "wrk": f"-t1 -c32 -d{args.duration}s, {args.rounds} alternating rounds",
        "throughput": summary,
        "ratios": {
            "worker_1_process_hits_vs_stock_mitmdump": round(one / mitm, 2),
            f"worker_{args.processes}_processes_hits_vs_stock_mitmdump": round(many / mitm, 2),
            "bare_master_ceiling_vs_stock_mitmdump": round(
                summary["bare mitmproxy Master answering in requestheaders (ceiling)"]["rps_median"] / mitm, 2
            ),
            "worker_1_process_hits_vs_bare_master_ceiling": round(
                one / summary["bare mitmproxy Master answering in requestheaders (ceiling)"]["rps_median"], 2
            ),
            "worker_1_process_hits_vs_nginx_proxy_cache": round(one / summary["nginx proxy_cache hit"]["rps_median"], 3),
        },
        "compression": compression_table(),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
