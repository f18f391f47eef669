"""The WAF: managed groups against attack samples and benign look-alikes (false positives counted),
custom rules on every field and operator, negate, and/or, log, allow, redirect; through real
workers: the 403 page with its reference id, the log line naming the rule, body rules."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from proxyworker import snapshot as snap
from proxyworker.addons.waf import WebFirewall
from proxyworker.tables import compile_snapshot
from proxyworker.waf import RequestView, Waf
from tests.proxyworker.conftest import get, site, snapshot

ATTACKS = {
    "sqli": [
        "/search?q=' OR 1=1--",
        "/item?id=1 UNION SELECT username, password FROM users",
        "/item?id=1%20union%2F**%2Fall%2F**%2Fselect%20null,null",
        "/login?user=admin'--",
        "/login?user=admin'--&next=/home",
        "/login?user=admin'#",
        "/p?id=1; DROP TABLE users",
        "/p?id=1 AND SLEEP(5)",
        "/p?id=1' AND '1'='1",
        "/p?id=1 or 1=1",
        "/p?q=1' waitfor delay '0:0:5'--",
        "/p?q=select @@version",
        "/p?q=1 and extractvalue(1,concat(0x7e,version()))",
        "/p?q=' or \"a\"=\"a",
        "/p?id=1%2527%2520OR%25201%253D1--",  # double-encoded
        "/p?id=-1 union distinct select 1,2,3",
        "/p?q=1;insert into users values(1)",
        "/p?q=x' or 'x' like 'x",
        "/p?q=select * from information_schema.tables",
    ],
    "xss": [
        "/s?q=<script>alert(1)</script>",
        "/s?q=<img src=x onerror=alert(1)>",
        "/s?q=<svg/onload=alert('x')>",
        "/s?q=javascript:alert(document.cookie)",
        "/s?q=%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
        "/s?q=<iframe src=//evil>",
        "/s?q=\"><body onload=prompt(1)>",
        "/s?q=<a href=\"javascript:void(0)\">",
        "/s?q=%253Cscript%253E",  # double-encoded
        "/s?q=<details open ontoggle=confirm`1`>",
        "/s?q=eval('x')",
        "/s?q=document.write(1)",
    ],
    "traversal": [
        "/../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/download?file=../../../etc/shadow",
        "/download?file=..\\..\\boot.ini",
        "/files/%252e%252e/%252e%252e/secret",
        "/a/b/..",
        "/read?f=/proc/self/environ",
        "/img?f=x.png%00.php",
        "/file?name=....//....//etc/passwd",
    ],
}
BENIGN = [
    "/people?name=O'Brien",
    "/people?name=Conan O'Brien&city=Dublin",
    "/blog/how-to-select-the-right-plan",
    "/search?q=select a plan from the list where you live",
    "/search?q=union members select a leader",
    "/search?q=drop table tennis lessons; update your browser",
    "/search?q=rock 'n' roll",
    "/search?q=it's #1 in sales",
    "/search?q=a < b and c > d",
    "/search?q=tom & jerry <3",
    "/search?q=<b>bold</b> text",
    "/books?title=JavaScript: The Good Parts",
    "/search?q=please confirm (required)",
    "/signup?onboarding=true&step=2",
    "/files/report...final.pdf",
    "/files/wait.../",
    "/docs/a..b/c",
    "/docs/v1.2..v1.3-changes",
    "/search?q=1 or 2 items",
    "/search?q=sleep (well)",
    "/search?q=who wrote 'the documents'?",
    "/api/items?sort=-created&fields=id,name",
    "/search?q=SELECT is a keyword",
    "/search?q=and 2=3",
    "/math?q=x=1 or y=2",
    "/search?q=etc/password reset",
    "/search?q=c# tutorial",
    "/search?q=script writing class",
    "/search?q=onload event docs",
    "/q?email=a.b+tag@example.com",
    "/q?text=100%25 cotton",
    "/q?json={\"a\":[1,2],\"b\":\"x\"}",
    "/search?q=it's 'quoted' -- really",
]
SCANNERS = [
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:Port Check)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "Fuzz Faster U Fool v2.0.0-dev",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.169 Safari/537.36 Nuclei",
    "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "gobuster/3.6",
    "Wfuzz/3.1.0",
    "zgrab/0.x",
]
BENIGN_UA = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Nikon-Camera-Uploader/2.0",
    "Dirbuilder/1.0",
    "Zapier",
    "okhttp/4.12.0",
]


def make_flow(path: str = "/", *, method: str = "GET", headers: dict | None = None, body: bytes = b"",
              ip: str = "127.0.0.1") -> http.HTTPFlow:
    req = tutils.treq(method=method.encode(), path=path.encode(), headers=http.Headers(**{}), content=body)
    for k, v in (headers or {}).items():
        req.headers[k] = v
    flow = tflow.tflow(req=req)
    flow.client_conn.peername = (ip, 40000)
    return flow


def decide(waf: Waf, flow: http.HTTPFlow):
    view = RequestView(flow, flow.request.path)
    logged: list = []
    verdict = waf.check_head(view, logged)
    if verdict is None:
        verdict = waf.check_body(view, logged)
    return verdict, logged


def managed(*groups: str, mode: str = "block") -> Waf:
    return Waf(snap.WafPolicy(managed={g: mode for g in groups}))


# --- managed groups ------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["sqli", "xss", "traversal"])
def test_managed_group_blocks_its_attack_samples(group):
    waf = managed(group)
    missed = [p for p in ATTACKS[group] if decide(waf, make_flow(p))[0] is None]
    assert missed == []
    assert decide(waf, make_flow(ATTACKS[group][0]))[0].rule == f"managed:{group}"


def test_managed_groups_let_benign_look_alikes_through():
    waf = managed("sqli", "xss", "traversal", "scanners")
    false_positives = [p for p in BENIGN if decide(waf, make_flow(p))[0] is not None]
    false_positives += [ua for ua in BENIGN_UA if decide(waf, make_flow("/", headers={"User-Agent": ua}))[0]]
    assert false_positives == [], f"{len(false_positives)} false positives of {len(BENIGN) + len(BENIGN_UA)}"


def test_scanners_group_matches_known_tool_agents():
    waf = managed("scanners")
    assert [ua for ua in SCANNERS if decide(waf, make_flow("/", headers={"User-Agent": ua}))[0] is None] == []


def test_managed_sqli_and_xss_read_form_and_json_bodies():
    waf = managed("sqli", "xss")
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert decide(waf, make_flow("/login", method="POST", headers=form, body=b"user=admin%27--&pw=x"))[0].rule == "managed:sqli"
    assert decide(waf, make_flow("/c", method="POST", headers={"content-type": "application/json"},
                                 body=b'{"comment": "<script>alert(1)</script>"}'))[0].rule == "managed:xss"
    assert decide(waf, make_flow("/c", method="POST", headers=form, body=b"name=O%27Brien&note=select+a+plan"))[0] is None
    # an image upload is not text: not inspected
    assert decide(waf, make_flow("/u", method="POST", headers={"content-type": "image/png"}, body=b"' OR 1=1--"))[0] is None


def test_managed_group_in_log_mode_records_without_deciding():
    verdict, logged = decide(managed("sqli", mode="log"), make_flow("/p?id=1 UNION SELECT 1"))
    assert verdict is None and [v.rule for v in logged] == ["managed:sqli"]


def test_managed_group_off_does_nothing():
    assert decide(managed("xss", mode="off"), make_flow("/s?q=<script>"))[0] is None


# --- custom rules --------------------------------------------------------------------------------


def rule(id: str, *conds: snap.WafCondition, **kw) -> snap.WafRule:
    return snap.WafRule(id=id, conditions=list(conds), **kw)


def cond(field: str, op: str, value, **kw) -> snap.WafCondition:
    return snap.WafCondition(field=field, op=op, value=value, **kw)


CASES = [
    # (condition, matching request, non-matching request)
    (cond("ip", "in_cidr", ["10.0.0.0/8", "2001:db8::/32"]), {"ip": "10.1.2.3"}, {"ip": "11.0.0.1"}),
    (cond("ip", "in_cidr", "2001:db8::/32"), {"ip": "2001:db8::7"}, {"ip": "2001:db9::7"}),
    (cond("ip", "equals", "127.0.0.9"), {"ip": "127.0.0.9"}, {"ip": "127.0.0.90"}),
    (cond("method", "equals", ["PUT", "delete"]), {"method": "DELETE"}, {"method": "GET"}),
    (cond("path", "prefix", "/admin"), {"path": "/%61dmin/users"}, {"path": "/public/admin"}),
    (cond("path", "equals", "/login"), {"path": "/LOGIN?next=/"}, {"path": "/login/x"}),
    (cond("path", "regex", r"\.(php|asp)$"), {"path": "/index.php?x=1"}, {"path": "/index.phpx"}),
    (cond("user_agent", "regex", [r"(?i)^curl/", r"wget"]), {"headers": {"User-Agent": "CURL/8"}},
     {"headers": {"User-Agent": "Wget"}}),  # global flags in one value of a list
    (cond("query", "contains", "debug=1"), {"path": "/x?a=2&debug=1"}, {"path": "/debug=1"}),
    (cond("header", "equals", "yes", name="X-Internal"), {"headers": {"X-Internal": "YES"}}, {"headers": {}}),
    (cond("header", "in_cidr", "192.0.2.0/24", name="X-Real-IP"), {"headers": {"X-Real-IP": "192.0.2.5"}},
     {"headers": {"X-Real-IP": "not an ip"}}),
    (cond("cookie", "prefix", "adm-", name="role"), {"headers": {"Cookie": "a=1; role=adm-9"}},
     {"headers": {"Cookie": "roles=adm-9"}}),
    (cond("user_agent", "contains", ["badbot", "evilcrawler"]), {"headers": {"User-Agent": "x BadBot/2"}},
     {"headers": {"User-Agent": "goodbot"}}),
    (cond("body", "contains", "forbidden-word"), {"method": "POST", "body": b"a forbidden-word here"},
     {"method": "POST", "body": b"fine"}),
    (cond("body", "regex", r"^\{\s*\"admin\"\s*:\s*true"), {"method": "POST", "body": b'{"admin": true}'},
     {"method": "POST", "body": b'{"user": {"admin": true}}'}),
]


def _flow_from(spec: dict) -> http.HTTPFlow:
    return make_flow(spec.get("path", "/"), method=spec.get("method", "GET"), headers=spec.get("headers"),
                     body=spec.get("body", b""), ip=spec.get("ip", "127.0.0.1"))


@pytest.mark.parametrize(("condition", "hit", "miss"), CASES, ids=[f"{c.field}-{c.op}" for c, _, _ in CASES])
def test_custom_condition_matches_its_field_and_op(condition, hit, miss):
    waf = Waf(snap.WafPolicy(rules=[rule("r1", condition)]))
    assert decide(waf, _flow_from(hit))[0].rule == "r1"
    assert decide(waf, _flow_from(miss))[0] is None
    negated = Waf(snap.WafPolicy(rules=[rule("r1", msgspec.structs.replace(condition, negate=True))]))
    assert decide(negated, _flow_from(hit))[0] is None
    assert decide(negated, _flow_from(miss))[0].rule == "r1"


def test_and_needs_every_condition_or_needs_one():
    conds = (cond("method", "equals", "POST"), cond("path", "prefix", "/admin"))
    both = Waf(snap.WafPolicy(rules=[rule("and", *conds)]))
    either = Waf(snap.WafPolicy(rules=[rule("or", *conds, combine="or")]))
    assert decide(both, make_flow("/admin", method="POST"))[0].rule == "and"
    assert decide(both, make_flow("/admin"))[0] is None
    assert decide(either, make_flow("/admin"))[0].rule == "or"
    assert decide(either, make_flow("/x", method="POST"))[0].rule == "or"
    assert decide(either, make_flow("/x"))[0] is None


def test_first_deciding_rule_wins_log_rules_only_record():
    waf = Waf(snap.WafPolicy(
        rules=[
            rule("watch", cond("path", "prefix", "/"), action="log"),
            rule("office", cond("ip", "in_cidr", "10.0.0.0/8"), action="allow"),
            rule("old", cond("path", "prefix", "/old"), action="redirect", redirect_to="https://example.test/new"),
            rule("admin", cond("path", "prefix", "/admin"), action="block"),
            rule("disabled", cond("path", "prefix", "/"), enabled=False),
        ],
        managed={"sqli": "block"},
    ))
    verdict, logged = decide(waf, make_flow("/admin"))
    assert (verdict.rule, verdict.action) == ("admin", "block") and [v.rule for v in logged] == ["watch"]
    verdict, _ = decide(waf, make_flow("/admin?q=' OR 1=1--", ip="10.9.9.9"))
    assert (verdict.rule, verdict.action) == ("office", "allow")  # allow skips later and managed rules
    verdict, _ = decide(waf, make_flow("/old/page"))
    assert (verdict.action, verdict.redirect_to) == ("redirect", "https://example.test/new")
    assert decide(waf, make_flow("/fine"))[0] is None


def test_addon_records_outcome_in_metadata():
    live_site = compile_snapshot(snapshot(site("m.test", [], policies=snap.Policies(waf=snap.WafPolicy(
        rules=[rule("no-admin", cond("path", "prefix", "/admin"), action="block"),
               rule("watch", cond("method", "equals", "GET"), action="log")]))))).sites[0]
    addon = WebFirewall()
    flow = make_flow("/admin")
    flow.metadata["portico.site"] = live_site
    addon.requestheaders(flow)
    assert flow.response.status_code == 403
    assert flow.metadata["portico.blocked"] == {"reason": "waf", "rule": "no-admin", "action": "block"}
    assert flow.metadata["portico.request_id"].encode() in flow.response.content
    flow = make_flow("/ok")
    flow.metadata["portico.site"] = live_site
    addon.requestheaders(flow)
    assert flow.response is None and flow.metadata["portico.logged"] == [{"reason": "waf", "rule": "watch", "action": "log"}]


# --- through a real worker ---------------------------------------------------------------------


def test_worker_blocks_logs_redirects_and_reads_bodies(backend_factory, worker_factory):
    a = backend_factory()
    waf = snap.WafPolicy(
        managed={"sqli": "block", "xss": "log", "scanners": "block"},
        rules=[
            rule("no-wp", cond("path", "prefix", "/wp-admin"), description="no WordPress here"),
            rule("moved", cond("path", "equals", "/old"), action="redirect", redirect_to="/new"),
            rule("no-secrets", cond("body", "contains", "BEGIN PRIVATE KEY")),
            rule("watch-delete", cond("method", "equals", "DELETE"), action="log"),
        ],
    )
    w = worker_factory(snapshot(site("waf.test", [a], policies=snap.Policies(waf=waf))))
    blocked = get(w, "waf.test", "/wp-admin/setup.php", headers={"X-Request-ID": "trace-42"})
    assert blocked.status == 403 and b"trace-42" in blocked.body and blocked.headers["x-request-id"] == "trace-42"
    assert get(w, "waf.test", "/q?id=1%20UNION%20SELECT%20password%20FROM%20users").status == 403
    assert get(w, "waf.test", "/", headers={"User-Agent": "sqlmap/1.7"}).status == 403
    moved = get(w, "waf.test", "/old")
    assert moved.status == 302 and moved.headers["location"] == "/new"
    assert get(w, "waf.test", "/upload", method="POST", body=b"-----BEGIN PRIVATE KEY-----\nMII").status == 403
    assert get(w, "waf.test", "/upload", method="POST", body=b"just text").status == 200
    assert get(w, "waf.test", "/s?q=<script>alert(1)</script>").status == 200  # xss in log mode
    assert get(w, "waf.test", "/thing", method="DELETE").status == 200
    assert get(w, "waf.test", "/people?name=O'Brien").status == 200
    assert a.hits == 4
    log = Path(w.log_path).read_text()
    assert "event=waf action=block rule=no-wp status=403 site=waf.test" in log and "request_id=trace-42" in log
    assert "event=waf action=block rule=managed:sqli" in log
    assert "event=waf action=block rule=managed:scanners" in log
    assert "event=waf action=redirect rule=moved status=302" in log
    assert "event=waf action=block rule=no-secrets" in log
    assert "event=waf action=log rule=managed:xss" in log
    assert "event=waf action=log rule=watch-delete" in log


def test_a_tenants_allow_rule_does_not_skip_groups_the_platform_enforces():
    allow_all = rule("trust-everyone", cond("path", "prefix", "/"), action="allow")
    attack = "/search?q=1' OR '1'='1"
    tenant_only = Waf(snap.WafPolicy(managed={"sqli": "block"}, rules=[allow_all]))
    assert decide(tenant_only, make_flow(attack))[0].action == "allow"  # the tenant may skip its own groups

    enforced = Waf(snap.WafPolicy(managed={"sqli": "block"}, rules=[allow_all], enforced=["sqli"]))
    verdict = decide(enforced, make_flow(attack))[0]
    assert (verdict.rule, verdict.action) == ("managed:sqli", "block")
    assert decide(enforced, make_flow("/search?q=shoes"))[0].action == "allow"  # benign: still allowed
    body_attack = make_flow("/login", method="POST", headers={"content-type": "application/x-www-form-urlencoded"},
                            body=b"user=admin'--&pass=x")
    view = RequestView(body_attack, body_attack.request.path)
    assert enforced.check_head(view, []).action == "allow"
    # what the addon does next for an allowed request with a body: only the enforced groups
    assert enforced.check_body(view, [], allowed=True).rule == "managed:sqli"
