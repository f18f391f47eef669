"""The subset of RFC 9111 (HTTP caching) a shared cache in front of origins needs.

Written here rather than taken from ``hishel``: hishel's sans-I/O core builds its own request and
response objects and state machine per exchange, which costs more than mitmproxy's whole hit path;
the decisions themselves are the few functions below, computed once per stored response, so that a
hit is an arithmetic comparison.

Also here: a site's ``CachePolicy`` compiled into ``SiteRules`` (prefix tables, the query filter),
once per snapshot.
"""

from __future__ import annotations

import email.utils
import functools
import time
from urllib.parse import parse_qsl, urlencode

from proxyworker import compression
from proxyworker import snapshot as snap

# RFC 9110 §15.1: statuses a cache may store without explicit freshness ("heuristically cacheable").
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Other statuses stored only with explicit freshness (max-age, s-maxage, Expires).
EXPLICIT_STATUSES = frozenset({302, 307})


@functools.lru_cache(maxsize=4096)
def parse_cache_control(value: str) -> dict[str, str | None]:
    """``public, max-age=60, no-cache="set-cookie"`` -> {"public": None, "max-age": "60", ...} (RFC 9111 §5.2)."""
    out: dict[str, str | None] = {}
    for item in value.split(","):
        name, eq, arg = item.partition("=")
        name = name.strip().lower()
        if name:
            out[name] = arg.strip().strip('"') if eq else None
    return out


def seconds(directive: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 §1.2.2); invalid -> None."""
    if directive is None:
        return None
    try:
        return max(0, int(directive))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def storable(status: int, cc: dict[str, str | None], has_expires: bool) -> bool:
    """RFC 9111 §3 for a GET response to a request without Authorization (those bypass the cache)."""
    if "no-store" in cc or "private" in cc:  # §5.2.2.5, §5.2.2.7: a shared cache must not store
        return False
    if status in HEURISTIC_STATUSES:
        return True
    if status in EXPLICIT_STATUSES:
        return "max-age" in cc or "s-maxage" in cc or has_expires
    return False


def freshness_lifetime(
    cc: dict[str, str | None], expires: str | None, date: float | None, override: int | None, default_ttl: int, max_ttl: int
) -> float:
    """RFC 9111 §4.2.1, in order: s-maxage, max-age, Expires - Date, then the site's default (our
    "heuristic", §4.2.2, which is 0 unless the site sets one). A site's per-prefix TTL overrides the
    origin's explicit freshness; ``max_ttl`` caps everything."""
    if override is not None:
        return float(min(override, max_ttl))
    lifetime: float | None = seconds(cc.get("s-maxage"))
    if lifetime is None:
        lifetime = seconds(cc.get("max-age"))
    if lifetime is None and expires is not None:
        exp = http_date(expires)
        # §5.3: an invalid Expires (e.g. "0") means "already expired".
        lifetime = 0.0 if exp is None else max(0.0, exp - (date or time.time()))
    if lifetime is None:
        lifetime = default_ttl
    return float(min(lifetime, max_ttl))


def initial_age(age_header: str | None, date: float | None, request_time: float | None, response_time: float) -> float:
    """RFC 9111 §4.2.3: corrected_initial_age; current_age adds the time resident in the cache."""
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    age_value = seconds(age_header) or 0
    response_delay = max(0.0, response_time - request_time) if request_time else 0.0
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def etag_matches(if_none_match: str, etag: str | None) -> bool:
    """RFC 9110 §13.1.2: If-None-Match uses the weak comparison; ``*`` matches any stored response."""
    if if_none_match.strip() == "*":
        return True
    if not etag:
        return False
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(","))


def not_modified(inm: str | None, ims: str | None, etag: str | None, last_modified: str | None) -> bool:
    """Whether a client's conditional GET is answered 304 from what we hold (RFC 9110 §13.2.2)."""
    if inm is not None:  # If-None-Match wins; If-Modified-Since is then ignored (§13.1.3)
        return etag_matches(inm, etag)
    if ims is not None and last_modified is not None:
        since, modified = http_date(ims), http_date(last_modified)
        return since is not None and modified is not None and modified <= since
    return False


# --- a site's policy, compiled ------------------------------------------------------------------


class SiteRules:
    """One site's CachePolicy (and the codings its compression policy offers), precompiled."""

    __slots__ = (
        "default_ttl",
        "max_ttl",
        "ttl_prefixes",
        "bypass_paths",
        "ignore_all_query",
        "ignore_exact",
        "ignore_prefixes",
        "bypass_on_cookie",
        "swr",
        "sie",
        "max_object_bytes",
        "codings",
        "not_stored",
    )

    def __init__(
        self,
        policy: snap.CachePolicy,
        compression_policy: snap.CompressionPolicy | None,
        header_rules: list[snap.HeaderRule] = (),  # type: ignore[assignment]
    ):
        self.default_ttl = policy.default_ttl
        self.max_ttl = policy.max_ttl
        self.ttl_prefixes = tuple(sorted(policy.ttl_by_prefix.items(), key=lambda kv: len(kv[0]), reverse=True))
        self.bypass_paths = tuple(policy.bypass_paths)
        ignore = policy.ignore_query_params
        self.ignore_all_query = "*" in ignore
        self.ignore_exact = frozenset(p for p in ignore if not p.endswith("*"))
        self.ignore_prefixes = tuple(p[:-1] for p in ignore if p.endswith("*") and p != "*")
        self.bypass_on_cookie = policy.bypass_on_cookie
        self.swr = policy.stale_while_revalidate
        self.sie = policy.stale_if_error
        self.max_object_bytes = policy.max_object_bytes
        # None: the site does not compress, so a Vary on Accept-Encoding keys on the raw header.
        self.codings: tuple[str, ...] | None = None
        if compression_policy is not None and compression_policy.enabled:
            self.codings = tuple(compression_policy.encodings)
        # Response fields the site's "add" header rules append: every answer, hits included, gets
        # them again, so a stored copy would appear twice.
        self.not_stored = frozenset(r.name.lower().encode("latin-1") for r in header_rules if r.direction == "response" and r.op == "add")

    def bypassed(self, path: str) -> bool:
        for prefix in self.bypass_paths:
            if path.startswith(prefix):
                return True
        return False

    def ttl_override(self, path: str) -> int | None:
        for prefix, ttl in self.ttl_prefixes:
            if path.startswith(prefix):
                return ttl
        return None

    def key_path(self, path: str) -> str:
        """The path as it enters the cache key: ignored query parameters removed."""
        if "?" not in path:
            return path
        if self.ignore_all_query:
            return path.partition("?")[0]
        if not self.ignore_exact and not self.ignore_prefixes:
            return path
        base, _, query = path.partition("?")
        kept = [
            (k, v)
            for k, v in parse_qsl(query, keep_blank_values=True)
            if k not in self.ignore_exact and not k.startswith(self.ignore_prefixes or ("\0",))
        ]
        return f"{base}?{urlencode(kept)}" if kept else base

    def coding_class(self, accept_encoding: str | None) -> str:
        """What a ``Vary: Accept-Encoding`` keys on: the coding this request would be answered with
        (so "gzip, br" and "br;q=1, gzip;q=0.5" share one stored variant), or the raw header when the
        site does not compress."""
        if self.codings is None:
            return accept_encoding or ""
        return compression.negotiate(accept_encoding, self.codings) or "identity"


def rules_for(site) -> SiteRules | None:
    """The compiled rules of a ``tables.SiteTable``, built on first use and kept in ``site.extra``
    for the life of that snapshot (a new snapshot brings new SiteTables)."""
    try:
        return site.extra["cache"]
    except KeyError:
        pass
    policies = site.spec.policies
    policy = policies.cache
    rules = SiteRules(policy, policies.compression, policies.headers) if policy is not None and policy.enabled else None
    site.extra["cache"] = rules
    return rules
