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

from proxyworker.cidr import CidrSet

BODY_BYTES = 8192

# What it costs to get a field's value and to test it; lower runs first.
_FIELD_COST = {"method": 0, "ip": 1, "path": 1, "user_agent": 2, "header": 2, "cookie": 4, "query": 3, "body": 9}
_OP_COST = {"equals": 0, "prefix": 0, "in_cidr": 1, "contains": 1, "regex": 4}

_SQLI = [
    # ' OR 1=1, ' or 'a'='a, " AND x LIKE ...
    r"['\"`]\s*\)?\s*(?:or|and|xor|\|\||&&)\s+[\w'\"(]+?\s*(?:=|<>|<|>|\blike\b|\bis\b|\bin\b)",
    r"\b(?:or|and)\s+(\d+)\s*=\s*\1\b",  # or 1=1 without quotes
    r"\bunion(?:\s+|/\*.*?\*/)+(?:all(?:\s+|/\*.*?\*/)+|distinct(?:\s+|/\*.*?\*/)+)?select\b",
    r"['\"`]\s*[;)]?\s*(?:(?:--|#)[^\n]{0,3}(?:\n|$)|/\*)",  # admin'-- : a quote, then a comment to the end
    r";\s*(?:drop|truncate|alter)\s+(?:table|database|schema)\b",
    r";\s*(?:delete\s+from|insert\s+into|update\s+\w+\s+set|exec(?:ute)?\s+(?:xp_|sp_))",
    r"\b(?:sleep|benchmark|pg_sleep)\s*\(\s*\d|\b(?:load_file|extractvalue|updatexml)\s*\(",
    r"\bwaitfor\s+delay\s+['\"]",
    r"\binformation_schema\b|@@version\b|\bxp_cmdshell\b|\binto\s+(?:out|dump)file\b",
    r"\bselect\s+(?:\*\s+from\b|@@|null\s*,|(?:group_concat|concat|count|version|user|database|char)\s*\()",
]
_XSS = [
    r"<\s*/?\s*(?:script|iframe|frame|frameset|object|embed|applet|meta|base|svg|math|link|style)\b",
    r"<[^>]*?[\s/\"']on[a-z]{3,}\s*=",  # <img src=x onerror=...>
    r"\b(?:javascript|vbscript|livescript)\s*:(?!\s)",  # a URL scheme, not "JavaScript: the book"
    r"\bdocument\s*\.\s*(?:cookie|domain|write|location)\b",
    r"\b(?:alert|prompt|confirm|eval)\s*\(\s*(?:\d|['\"`]|document|window|this)",
    r"\bsrcdoc\s*=|\bformaction\s*=",
]
_TRAVERSAL = [
    r"(?:^|[/\\=\n])\.\.(?:[/\\;]|$)",  # a ".." segment, not "..." in a file name
    r"/etc/(?:passwd|shadow|group|hosts)\b|\b(?:boot|win|system)\.ini\b|/proc/self/|\bc:\\windows\\",
    r"\x00",
]
_SCANNERS = [
    r"\b(?:sqlmap|nikto|nmap|masscan|zgrab|nuclei|acunetix|netsparker|wpscan|dirbuster|gobuster|ffuf|wfuzz"
    r"|w3af|openvas|nessus|havij|jaeles|whatweb|zmeu|arachni|skipfish|commix|xsstrike|appscan|webinspect"
    r"|morfeus|paros|dirb|feroxbuster|httpx-toolkit|zap)\b|fuzz faster u fool",
]


def _union(patterns: list[str]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.DOTALL)


MANAGED = {
    "scanners": _union(_SCANNERS),
    "traversal": _union(_TRAVERSAL),
    "sqli": _union(_SQLI),
    "xss": _union(_XSS),
}
# Cheapest first: a short header, then the decoded path and query.
MANAGED_ORDER = ("scanners", "traversal", "sqli", "xss")
_BODY_GROUPS = ("sqli", "xss")
_BODY_TYPES = ("application/x-www-form-urlencoded", "application/json", "text/plain")


class RequestView:
    """One request's field values, each computed on first use (a rule set rarely needs all)."""

    __slots__ = ("flow", "client_path", "_memo")

    def __init__(self, flow, client_path: str):
        self.flow = flow
        self.client_path = client_path
        self._memo: dict = {}

    def value(self, field: str, name: str | None) -> str | None:
        key = (field, name)
        memo = self._memo
        if key in memo:
            return memo[key]
        req = self.flow.request
        if field == "ip":
            v = self.flow.client_conn.peername[0]
        elif field == "method":
            v = req.method.upper()
        elif field == "path":
            v = unquote(self.client_path.partition("?")[0])
        elif field == "query":
            v = unquote_plus(self.client_path.partition("?")[2])
        elif field == "header":
            v = req.headers.get(name)
        elif field == "cookie":
            v = req.cookies.get(name)
        elif field == "user_agent":
            v = req.headers.get("user-agent")
        else:  # body
            raw = b"" if req.stream else (req.raw_content or b"")
            v = raw[:BODY_BYTES].decode("utf-8", "replace")
        memo[key] = v
        return v

    def managed_text(self) -> str:
        """Decoded path and query, decoded once more when still encoded (double encoding)."""
        text = self._memo.get("managed")
        if text is None:
            path, _, query = self.client_path.partition("?")
            # One line per parameter: patterns anchored at a value's end ("admin'--") see its end.
            text = unquote(path) + "\n" + unquote_plus(query.replace("&", "\n"))
            if "%" in text:
                text += "\n" + unquote(text)
            self._memo["managed"] = text
        return text

    def managed_body(self) -> str:
        req = self.flow.request
        if req.stream or not req.raw_content:
            return ""
        ctype = req.headers.get("content-type", "").lower()
        if not ctype.startswith(_BODY_TYPES):
            return ""
        text = req.raw_content[:BODY_BYTES].decode("utf-8", "replace")
        if ctype.startswith("application/x-www-form-urlencoded"):
            return unquote_plus(text.replace("&", "\n"))
        return text


class Condition:
    __slots__ = ("field", "name", "negate", "test", "cost")

    def __init__(self, spec):
        self.field = spec.field
        self.name = spec.name.lower() if spec.field == "header" and spec.name else spec.name
        self.negate = spec.negate
        self.test = _matcher(spec.op, spec.value if isinstance(spec.value, list) else [spec.value])
        self.cost = _FIELD_COST[spec.field] * 10 + _OP_COST[spec.op]

    def matches(self, view: RequestView) -> bool:
        value = view.value(self.field, self.name)
        hit = value is not None and self.test(value)
        return hit != self.negate


def _matcher(op: str, values: list[str]) -> Callable[[str], bool]:
    if op == "equals":
        wanted = frozenset(v.lower() for v in values)
        return lambda s: s.lower() in wanted
    if op == "prefix":
        prefixes = tuple(v.lower() for v in values)
        return lambda s: s.lower().startswith(prefixes)
    if op == "contains":
        needles = tuple(v.lower() for v in values)
        if len(needles) == 1:
            needle = needles[0]
            return lambda s: needle in s.lower()
        return lambda s: any(n in s.lower() for n in needles)
    if op == "regex":
        search = re.compile("|".join(f"(?:{v})" for v in values)).search
        return lambda s: search(s) is not None
    cidrs = CidrSet(values)  # in_cidr
    return lambda s: s in cidrs


class Rule:
    __slots__ = ("id", "action", "redirect_to", "conditions", "any", "needs_body")

    def __init__(self, spec):
        self.id = spec.id
        self.action = spec.action
        self.redirect_to = spec.redirect_to
        self.conditions = tuple(sorted((Condition(c) for c in spec.conditions), key=lambda c: c.cost))
        self.any = spec.combine == "or"
        self.needs_body = any(c.field == "body" for c in self.conditions)

    def matches(self, view: RequestView) -> bool:
        if self.any:
            return any(c.matches(view) for c in self.conditions)
        return all(c.matches(view) for c in self.conditions)


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

    __slots__ = ("head_rules", "body_rules", "managed", "body_managed", "needs_body")

    def __init__(self, spec):
        rules = [Rule(r) for r in spec.rules if r.enabled and r.conditions]
        self.head_rules = tuple(r for r in rules if not r.needs_body)
        self.body_rules = tuple(r for r in rules if r.needs_body)
        self.managed = tuple(
            (group, spec.managed[group], MANAGED[group]) for group in MANAGED_ORDER if spec.managed.get(group, "off") != "off"
        )
        self.body_managed = tuple(m for m in self.managed if m[0] in _BODY_GROUPS)
        self.needs_body = bool(self.body_rules or self.body_managed)

    def check_head(self, view: RequestView, logged: list[Verdict]) -> Verdict | None:
        """Rules that need no body, then the managed groups on path, query and User-Agent."""
        found = _first(self.head_rules, view, logged)
        if found is not None:
            return found
        for group, mode, pattern in self.managed:
            if group == "scanners":
                text = view.value("user_agent", None)
                if not text:
                    continue
            else:
                text = view.managed_text()
            if pattern.search(text) is not None:
                verdict = Verdict(f"managed:{group}", mode, group=group)
                if mode == "block":
                    return verdict
                logged.append(verdict)
        return None

    def check_body(self, view: RequestView, logged: list[Verdict]) -> Verdict | None:
        found = _first(self.body_rules, view, logged)
        if found is not None:
            return found
        if self.body_managed:
            text = view.managed_body()
            if text:
                for group, mode, pattern in self.body_managed:
                    if pattern.search(text) is not None:
                        verdict = Verdict(f"managed:{group}", mode, group=group)
                        if mode == "block":
                            return verdict
                        logged.append(verdict)
        return None


def _first(rules: tuple[Rule, ...], view: RequestView, logged: list[Verdict]) -> Verdict | None:
    for rule in rules:
        if rule.matches(view):
            if rule.action == "log":
                logged.append(Verdict(rule.id, "log"))
                continue
            return Verdict(rule.id, rule.action, rule.redirect_to)
    return None
