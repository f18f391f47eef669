"""The web application firewall: custom rules and managed rule groups, compiled once per snapshot.

Custom rules (``WafRule``) are tried in the order the site lists them. A rule's conditions are
sorted cheapest first (method and IP before headers, regexes and the body), which changes nothing
about the outcome because conditions have no side effects, and ``and``/``or`` stop at the first
condition that decides. The first rule that matches with ``block``, ``allow`` or ``redirect``
decides; ``log`` rules record and evaluation goes on. ``allow`` skips the rest of the WAF (custom
and managed rules) for that request.

Rules that look at the body are evaluated when the body has arrived (the ``request`` hook), after
the others (``requestheaders``): a request is blocked before a cache could answer it, and the body
is only waited for when a rule needs it. Body conditions see the first ``BODY_BYTES`` bytes of a
buffered body; bodies streamed to the backend (over ``--stream-bodies-over``) are not inspected.

Field values: ``path`` and ``query`` are percent-decoded (``/%61dmin`` is ``/admin``); ``path`` is
the path the client sent, before a route strips its prefix. ``equals``, ``contains`` and
``prefix`` ignore case; ``regex`` is a Python regex searched as written (add ``(?i)`` to ignore
case); ``in_cidr`` parses the field as an IP address. A list value matches when any item matches.
A header or cookie that is absent matches nothing (so ``negate`` makes it match).

Managed groups (``sqli``, ``xss``, ``traversal``, ``scanners``; each ``off``, ``log`` or
``block``) are one precompiled regex each, run after the custom rules on the decoded path and
query (twice decoded, against double encoding), on URL-encoded and JSON bodies for ``sqli`` and
``xss``, and on the User-Agent for ``scanners``. They are written for few false positives on real
traffic (see tests/proxyworker/test_waf.py for the look-alikes they let through), not as a complete
rule set like OWASP CRS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote, unquote_plus

from proxyworker.cidr import CidrMap
from proxyworker.forwarded import client_ip

BODY_BYTES = 8192
SEEN_MAX = 8192  # remembered managed verdicts per site and process
SEEN_KEY_MAX = 512  # longest input remembered: at most ~8 MiB per site and process

# What it costs to get a field's value; cheaper ones are read first.
_FIELD_COST = {"method": 0, "ip": 1, "path": 1, "user_agent": 2, "header": 2, "cookie": 4, "query": 3, "body": 9}

# Each managed check is (triggers, regex): the regex only runs when one of its literal triggers
# occurs in the lower-cased text. A substring test is a C loop; Python's regex engine tries every
# alternative at every position, which costs microseconds per pattern on each request. Most
# requests contain no trigger, so a group usually costs a few substring tests.
_SQLI = [
    (("'", '"', "`"), [
        # ' OR 1=1, ' or 'a'='a, " AND x LIKE ...
        r"['\"`]\s*\)?\s*(?:or|and|xor|\|\||&&)\s+[\w'\"(]+?\s*(?:=|<>|<|>|\blike\b|\bis\b|\bin\b)",
        r"['\"`]\s*[;)]?\s*(?:(?:--|#)[^\n]{0,3}(?:\n|$)|/\*)",  # admin'-- : a quote, then a comment to the end
    ]),
    (("or ", "and ", "or\t", "and\t", "or\n", "and\n"), [r"\b(?:or|and)\s+(\d+)\s*=\s*\1\b"]),  # or 1=1
    (("union",), [r"\bunion(?:\s+|/\*.*?\*/)+(?:all(?:\s+|/\*.*?\*/)+|distinct(?:\s+|/\*.*?\*/)+)?select\b"]),
    ((";",), [
        r";\s*(?:drop|truncate|alter)\s+(?:table|database|schema)\b",
        r";\s*(?:delete\s+from|insert\s+into|update\s+\w+\s+set|exec(?:ute)?\s+(?:xp_|sp_))",
    ]),
    (("sleep", "benchmark", "load_file", "extractvalue", "updatexml"), [
        r"\b(?:sleep|benchmark|pg_sleep)\s*\(\s*\d|\b(?:load_file|extractvalue|updatexml)\s*\(",
    ]),
    (("waitfor",), [r"\bwaitfor\s+delay\s+['\"]"]),
    (("information_schema", "@@", "xp_cmdshell", "outfile", "dumpfile"), [
        r"\binformation_schema\b|@@version\b|\bxp_cmdshell\b|\binto\s+(?:out|dump)file\b",
    ]),
    (("select",), [
        r"\bselect\s+(?:\*\s+from\b|@@|null\s*,|(?:group_concat|concat|count|version|user|database|char)\s*\()",
    ]),
]
_XSS = [
    (("<",), [
        r"<\s*/?\s*(?:script|iframe|frame|frameset|object|embed|applet|meta|base|svg|math|link|style)\b",
        r"<[^>]*?[\s/\"']on[a-z]{3,}\s*=",  # <img src=x onerror=...>
    ]),
    (("script",), [r"\b(?:javascript|vbscript|livescript)\s*:(?!\s)"]),  # a URL scheme, not "JavaScript: the book"
    (("document",), [r"\bdocument\s*\.\s*(?:cookie|domain|write|location)\b"]),
    (("alert", "prompt", "confirm", "eval"), [r"\b(?:alert|prompt|confirm|eval)\s*\(\s*(?:\d|['\"`]|document|window|this)"]),
    (("srcdoc", "formaction"), [r"\bsrcdoc\s*=|\bformaction\s*="]),
]
_TRAVERSAL = [
    (("..",), [r"(?:^|[/\\=\n])\.\.(?:[/\\;]|$)"]),  # a ".." segment, not "..." in a file name
    (("/etc/", ".ini", "/proc/", "c:\\"), [
        r"/etc/(?:passwd|shadow|group|hosts)\b|\b(?:boot|win|system)\.ini\b|/proc/self/|\bc:\\windows\\",
    ]),
    (("\x00",), [r"\x00"]),
]
_SCANNER_NAMES = frozenset(
    "sqlmap nikto nmap masscan zgrab nuclei acunetix netsparker wpscan dirbuster gobuster ffuf wfuzz w3af openvas"
    " nessus havij jaeles whatweb zmeu arachni skipfish commix xsstrike appscan webinspect morfeus paros dirb"
    " feroxbuster zap".split()
)
_SCANNER_PHRASES = ("fuzz faster u fool",)  # ffuf's default agent
_WORD = re.compile(r"[a-z0-9_]+")


class PatternGroup:
    """A managed group of (triggers, regex) checks."""

    __slots__ = ("checks", "gate")

    def __init__(self, checks: list[tuple[tuple[str, ...], list[str]]]):
        self.checks = tuple(
            (triggers, re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.DOTALL).search)
            for triggers, patterns in checks
        )
        # Every trigger of the group in one search: the usual clean request costs one C call.
        self.gate = re.compile("|".join(re.escape(t) for triggers, _ in checks for t in triggers)).search

    def matches(self, text: str) -> bool:
        low = text.lower()
        if self.gate(low) is None:
            return False
        for triggers, search in self.checks:
            if any(map(low.__contains__, triggers)) and search(low) is not None:
                return True
        return False


class ScannerAgents:
    """Known attack tools by the words of their User-Agent: a set lookup, not a regex."""

    __slots__ = ()

    def matches(self, text: str) -> bool:
        low = text.lower()
        return not _SCANNER_NAMES.isdisjoint(_WORD.findall(low)) or any(p in low for p in _SCANNER_PHRASES)


MANAGED = {
    "scanners": ScannerAgents(),
    "traversal": PatternGroup(_TRAVERSAL),
    "sqli": PatternGroup(_SQLI),
    "xss": PatternGroup(_XSS),
}
# Cheapest first: a short header, then the decoded path and query.
MANAGED_ORDER = ("scanners", "traversal", "sqli", "xss")
_BODY_GROUPS = ("sqli", "xss")
_BODY_TYPES = ("application/x-www-form-urlencoded", "application/json", "text/plain")


class RequestView:
    """One request's field values, each computed on first use (a rule set rarely needs all)."""

    __slots__ = ("flow", "client_path", "matched", "_headers", "_cookies", "_managed")

    def __init__(self, flow, client_path: str):
        self.flow = flow
        self.client_path = client_path
        self.matched: set[int] = set()  # ids of the custom conditions that hold (before negation)
        self._headers: dict[str, str] | None = None
        self._cookies: dict[str, str] | None = None
        self._managed: str | None = None

    def header(self, name: str) -> str | None:
        headers = self._headers
        if headers is None:
            # One pass over the raw fields into a plain dict: each later lookup is one dict get
            # (mitmproxy's Headers.get re-scans and re-encodes on every call).
            headers = {}
            for k, v in self.flow.request.headers.fields:
                key = k.decode("latin-1").lower()
                text = v.decode("utf-8", "surrogateescape")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            self._headers = headers
        return headers.get(name)

    def cookie(self, name: str) -> str | None:
        cookies = self._cookies
        if cookies is None:
            cookies = {}
            for part in (self.header("cookie") or "").replace(",", ";").split(";"):
                key, sep, val = part.strip().partition("=")
                if sep and key not in cookies:
                    cookies[key] = val
            self._cookies = cookies
        return cookies.get(name)

    def value(self, field: str, name: str | None) -> str | None:
        if field == "path":
            return unquote(self.client_path.partition("?")[0])
        if field == "query":
            return unquote_plus(self.client_path.partition("?")[2])
        if field == "header":
            return self.header(name or "")
        if field == "user_agent":
            return self.header("user-agent")
        if field == "ip":
            return client_ip(self.flow)
        if field == "method":
            return self.flow.request.method.upper()
        if field == "cookie":
            return self.cookie(name or "")
        req = self.flow.request  # body
        raw = b"" if req.stream else (req.raw_content or b"")
        return raw[:BODY_BYTES].decode("utf-8", "replace")

    def managed_text(self) -> str:
        """Decoded path and query, decoded once more when still encoded (double encoding)."""
        text = self._managed
        if text is None:
            path, _, query = self.client_path.partition("?")
            # One line per parameter: patterns anchored at a value's end ("admin'--") see its end.
            text = unquote(path) + "\n" + unquote_plus(query.replace("&", "\n"))
            if "%" in text:
                text += "\n" + unquote(text)
            self._managed = text
        return text

    def managed_body(self) -> str:
        req = self.flow.request
        if req.stream or not req.raw_content:
            return ""
        ctype = (self.header("content-type") or "").lower()
        if not ctype.startswith(_BODY_TYPES):
            return ""
        text = req.raw_content[:BODY_BYTES].decode("utf-8", "replace")
        if ctype.startswith("application/x-www-form-urlencoded"):
            return unquote_plus(text.replace("&", "\n"))
        return text


# --- custom rules, compiled for multi-pattern matching ----------------------------------------
#
# A site may have dozens of rules; testing each condition on its own costs a few microseconds of
# interpreter time apiece. Instead every condition gets an id, and conditions reading the same
# value (field + header/cookie name) are merged into one FieldMatcher: equals -> one dict lookup,
# prefix -> one str.startswith(tuple), contains -> one case-insensitive alternation, regexes ->
# one combined prefilter, CIDRs -> one table. Each value is read once per request and the usual
# "nothing matches" costs one C-level call per kind. Only rules that own a matched condition (or
# that hold on no match at all, through negation) are then evaluated, in order.

_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
_NOT_COMBINABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?P<|\(\?<[A-Za-z_]")


class FieldMatcher:
    __slots__ = ("field", "name", "equals", "prefixes", "any_prefix", "contains", "contains_re",
                 "regexes", "regex_prefilter", "cidrs", "lower")

    def __init__(self, field: str, name: str | None):
        self.field = field
        self.name = name
        self.equals: dict[str, list[int]] = {}
        self.prefixes: list[tuple[str, int]] = []
        self.any_prefix: tuple[str, ...] = ()
        self.contains: list[tuple[str, int]] = []
        self.contains_re: re.Pattern | None = None
        self.regexes: list[tuple[Callable, int]] = []
        self.regex_prefilter: Callable | None = None
        self.cidrs: CidrMap | None = None
        self.lower = False

    def add(self, cid: int, op: str, values: list[str], extra: dict) -> None:
        if op == "equals":
            for v in values:
                self.equals.setdefault(v.lower(), []).append(cid)
        elif op == "prefix":
            self.prefixes += [(v.lower(), cid) for v in values]
        elif op == "contains":
            self.contains += [(v.lower(), cid) for v in values]
        elif op == "regex":
            self.regexes += [(re.compile(v).search, cid) for v in values]
            extra.setdefault("regex_sources", []).extend(values)
        else:  # in_cidr
            extra.setdefault("cidr", []).extend((v, cid) for v in values)

    def seal(self, extra: dict) -> None:
        self.lower = bool(self.equals or self.prefixes or self.contains)
        self.any_prefix = tuple(p for p, _ in self.prefixes)
        if self.contains:
            self.contains_re = re.compile("|".join(re.escape(n) for n, _ in self.contains))
        sources = extra.get("regex_sources", [])
        if len(sources) > 1:
            self.regex_prefilter = _combined_search(sources)
        if extra.get("cidr"):
            self.cidrs = CidrMap(extra["cidr"])

    def match(self, value: str, out: set[int]) -> None:
        if self.lower:
            low = value.lower()
            hit = self.equals.get(low)
            if hit:
                out.update(hit)
            if self.any_prefix and low.startswith(self.any_prefix):
                out.update(cid for p, cid in self.prefixes if low.startswith(p))
            if self.contains_re is not None and self.contains_re.search(low) is not None:
                out.update(cid for n, cid in self.contains if n in low)
        if self.regexes and (self.regex_prefilter is None or self.regex_prefilter(value) is not None):
            out.update(cid for search, cid in self.regexes if search(value) is not None)
        if self.cidrs is not None:
            hit = self.cidrs.lookup(value)
            if hit:
                out.update(hit)


def _combined_search(sources: list[str]) -> Callable | None:
    """One search that finds something whenever any of the regexes would (a prefilter), or None
    when they cannot be merged safely (backreferences, named groups)."""
    by_flags: dict[str, list[str]] = {}
    for src in sources:
        if _NOT_COMBINABLE.search(src):
            return None
        m = _GLOBAL_FLAGS.match(src)
        flags, body = (m.group(1), src[m.end():]) if m else ("", src)
        by_flags.setdefault(flags, []).append(body)
    try:
        searches = [re.compile((f"(?{flags})" if flags else "") + "|".join(f"(?:{b})" for b in bodies)).search
                    for flags, bodies in by_flags.items()]
    except re.error:
        return None
    if len(searches) == 1:
        return searches[0]
    return lambda s: next((m for m in (search(s) for search in searches) if m is not None), None)


class Rule:
    __slots__ = ("id", "action", "redirect_to", "conds", "any", "needs_body", "index")

    def __init__(self, spec, index: int, conds: tuple[tuple[int, bool], ...], needs_body: bool):
        self.id = spec.id
        self.action = spec.action
        self.redirect_to = spec.redirect_to
        self.conds = conds  # (condition id, negate)
        self.any = spec.combine == "or"
        self.needs_body = needs_body
        self.index = index

    def matches(self, matched: set[int]) -> bool:
        if self.any:
            return any((cid in matched) != negate for cid, negate in self.conds)
        return all((cid in matched) != negate for cid, negate in self.conds)


class RuleSet:
    """Rules of one phase (head or body) with the matchers of the fields they read."""

    __slots__ = ("rules", "matchers", "owner", "always")

    def __init__(self, rules: list[Rule], matchers: list[FieldMatcher], owner: dict[int, list[Rule]]):
        self.rules = rules
        # Cheapest values first; every matcher runs (it is one C call in the common case).
        self.matchers = tuple(sorted(matchers, key=lambda m: _FIELD_COST[m.field]))
        self.owner = owner
        # Rules that hold when none of their conditions matched (negations): always candidates.
        self.always = frozenset(r.index for r in rules if r.matches(set()))

    def first(self, view: RequestView, logged: list[Verdict]) -> Verdict | None:
        matched = view.matched
        for m in self.matchers:
            value = view.value(m.field, m.name)
            if value is not None:
                m.match(value, matched)
        candidates = set(self.always)
        for cid in matched:
            for rule in self.owner.get(cid, ()):
                candidates.add(rule.index)
        if not candidates:
            return None
        rules = self.rules
        for index in sorted(candidates):
            rule = rules[index]
            if rule.needs_body is not self.needs_body_phase or not rule.matches(matched):
                continue
            if rule.action == "log":
                logged.append(Verdict(rule.id, "log"))
                continue
            return Verdict(rule.id, rule.action, rule.redirect_to)
        return None

    needs_body_phase = False


class _BodyRuleSet(RuleSet):
    __slots__ = ()
    needs_body_phase = True


def compile_rules(specs) -> tuple[RuleSet | None, RuleSet | None]:
    """(rules that need no body, rules that read the body); None for an empty phase."""
    rules: list[Rule] = []
    matchers: dict[tuple[str, str | None], FieldMatcher] = {}
    extras: dict[tuple[str, str | None], dict] = {}
    owner_of: dict[int, int] = {}
    next_id = 0
    for spec in specs:
        if not spec.enabled or not spec.conditions:
            continue
        conds = []
        for c in spec.conditions:
            name = c.name.lower() if c.field == "header" and c.name else c.name
            key = (c.field, name if c.field in ("header", "cookie") else None)
            matcher = matchers.get(key)
            if matcher is None:
                matcher = matchers[key] = FieldMatcher(*key)
            matcher.add(next_id, c.op, c.value if isinstance(c.value, list) else [c.value], extras.setdefault(key, {}))
            conds.append((next_id, c.negate))
            owner_of[next_id] = len(rules)
            next_id += 1
        needs_body = any(c.field == "body" for c in spec.conditions)
        rules.append(Rule(spec, len(rules), tuple(conds), needs_body))
    for key, matcher in matchers.items():
        matcher.seal(extras.get(key, {}))
    owner: dict[int, list[Rule]] = {}
    for cid, index in owner_of.items():
        owner.setdefault(cid, []).append(rules[index])
    head_matchers = [m for m in matchers.values() if m.field != "body"]
    body_matchers = [m for m in matchers.values() if m.field == "body"]
    head = RuleSet(rules, head_matchers, owner) if any(not r.needs_body for r in rules) else None
    body = _BodyRuleSet(rules, body_matchers, owner) if any(r.needs_body for r in rules) else None
    return head, body


class Verdict:
    """What the WAF decided: the deciding rule (or managed group) and its action."""

    __slots__ = ("rule", "action", "redirect_to", "group")

    def __init__(self, rule: str, action: str, redirect_to: str | None = None, group: str | None = None):
        self.rule = rule
        self.action = action
        self.redirect_to = redirect_to
        self.group = group


class Waf:
    """One site's WafPolicy compiled."""

    __slots__ = ("head", "body", "managed", "body_managed", "enforced", "body_enforced", "needs_body", "_seen")

    def __init__(self, spec):
        self.head, self.body = compile_rules(spec.rules)
        # Managed verdicts by input text (path + query, or User-Agent): real traffic repeats both
        # (popular pages, a few browsers), and a verdict depends on nothing else. Bounded; the
        # only mutable part of a compiled snapshot, local to this process.
        self._seen: dict[tuple[str, str], bool] = {}
        self.managed = tuple(
            (group, spec.managed[group], MANAGED[group]) for group in MANAGED_ORDER if spec.managed.get(group, "off") != "off"
        )
        self.body_managed = tuple(m for m in self.managed if m[0] in _BODY_GROUPS)
        # Platform-enforced groups: a tenant's own "allow" rule does not skip them.
        self.enforced = tuple(m for m in self.managed if m[0] in spec.enforced)
        self.body_enforced = tuple(m for m in self.enforced if m[0] in _BODY_GROUPS)
        self.needs_body = bool(self.body or self.body_managed)

    def check_head(self, view: RequestView, logged: list[Verdict]) -> Verdict | None:
        """Rules that need no body, then the managed groups on path, query and User-Agent."""
        if self.head is not None:
            found = self.head.first(view, logged)
            if found is not None:
                if found.action == "allow" and self.enforced:
                    return self._managed_head(view, logged, self.enforced) or found
                return found
        return self._managed_head(view, logged, self.managed)

    def _managed_head(self, view: RequestView, logged: list[Verdict], groups) -> Verdict | None:
        seen = self._seen
        for group, mode, pattern in groups:
            if group == "scanners":
                text = view.header("user-agent")
                if not text:
                    continue
            else:
                text = view.client_path
            hit = seen.get((group, text))
            if hit is None:
                hit = pattern.matches(text if group == "scanners" else view.managed_text())
                if len(text) <= SEEN_KEY_MAX:  # long, unique inputs (attacks) are not worth keeping
                    if len(seen) >= SEEN_MAX:
                        seen.clear()
                    seen[(group, text)] = hit
            if hit:
                verdict = Verdict(f"managed:{group}", mode, group=group)
                if mode == "block":
                    return verdict
                logged.append(verdict)
        return None

    def check_body(self, view: RequestView, logged: list[Verdict], *, allowed: bool = False) -> Verdict | None:
        """Body rules, then the managed groups on the body. ``allowed``: a rule already allowed the
        request, so only the platform-enforced groups still apply."""
        groups = self.body_enforced if allowed else self.body_managed
        found = None
        if self.body is not None and not allowed:
            found = self.body.first(view, logged)
            if found is not None:
                if found.action != "allow" or not self.body_enforced:
                    return found
                groups = self.body_enforced
        if groups:
            text = view.managed_body()
            if text:
                for group, mode, pattern in groups:
                    if pattern.matches(text):
                        verdict = Verdict(f"managed:{group}", mode, group=group)
                        if mode == "block":
                            return verdict
                        logged.append(verdict)
        return found
