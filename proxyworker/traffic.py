"""Traffic accounting inside one proxy process: counters, request samples, and the spool they ship in.

Pure: no mitmproxy, no Django. The metrics addon calls ``Recorder.count`` once per answered request
(dict lookups and integer additions, no locks: one process is one event loop) and ``Recorder.sample``
for the few requests it keeps. Every ``interval`` seconds, off the request path, ``Recorder.drain``
hands over the site-minutes that changed since the last drain and ``write_spool`` puts them in a new
file of ``<snapshot dir>/traffic/`` (write + rename, so the agent never reads half a file).

What a spool file says is *cumulative per minute*: "site S, minute M, from this process, so far: 812
requests...". Sending it twice, or late, cannot double-count: the control plane keeps the newest
value per (worker, process, site, minute), ordered by ``seq``.

The control plane imports ``LATENCY_BOUNDS_MS`` and ``percentile`` from here, so that both planes
read the same histogram buckets.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import os
import re
import time
from pathlib import Path

import msgspec

# Upper bounds of the upstream latency histogram, in milliseconds; one more bucket for slower.
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
# Minutes kept in memory after they end, so that a late request still lands in its own minute.
KEEP_MINUTES = 3
SPOOL_FOLDER = "traffic"

# Headers whose values never leave the worker in a sample (RFC 9110 §11.6 credentials, session
# cookies) and name fragments that mark a header or query parameter as secret.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_NAME = re.compile(r"(token|secret|passw|pwd|auth|session|signature|sig$|api[-_]?key|credential|code$)", re.I)
MASK = "***"


class SiteMinute:
    """One site's counts for one minute, in this process."""

    __slots__ = ("site", "organization", "minute", "requests", "status", "bytes_in", "bytes_out", "cache",
                 "blocked", "latency", "latency_sum_ms", "backends", "dirty")

    def __init__(self, site: str, organization: str, minute: int):
        self.site = site
        self.organization = organization
        self.minute = minute
        self.requests = 0
        self.status = [0, 0, 0, 0, 0, 0]  # by status // 100; index 0 unused
        self.bytes_in = 0
        self.bytes_out = 0
        self.cache: dict[str, int] = {}  # hit, miss, stale, bypass
        self.blocked: dict[tuple[str, str], int] = {}  # (reason, rule) -> count
        self.latency = [0] * _BUCKETS
        self.latency_sum_ms = 0.0
        self.backends: dict[str, list[int]] = {}  # backend id -> [requests, errors]
        self.dirty = True

    def to_wire(self) -> dict:
        return {
            "site": self.site,
            "organization": self.organization,
            "minute": self.minute,
            "requests": self.requests,
            "status": self.status[1:],
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "cache": self.cache,
            "blocked": [[reason, rule, n] for (reason, rule), n in self.blocked.items()],
            "latency": self.latency,
            "latency_sum_ms": round(self.latency_sum_ms, 3),
            "backends": self.backends,
        }


class Recorder:
    """Counters of one process. Only the event loop's thread touches it."""

    def __init__(self, *, sample_every: int = 100, sample_size: int = 200):
        self.minutes: dict[tuple[str, int], SiteMinute] = {}
        # Totals of minutes already dropped from ``minutes``, per site: what /metrics adds to the
        # minutes still held to get counters that only grow.
        self.closed: dict[str, SiteMinute] = {}
        self.unrouted = 0
        self.sample_every = sample_every
        self._sample_countdown = sample_every
        self.samples: collections.deque[dict] = collections.deque(maxlen=sample_size)
        self._new_samples: list[dict] = []

    # --- the hot path -----------------------------------------------------------------------

    def count(self, site: str, organization: str, when: float, status: int, bytes_in: int, bytes_out: int,
              cache: str | None, blocked: tuple[str, str] | None, latency_s: float | None,
              backend: str | None) -> None:
        minute = int(when) // 60
        key = (site, minute)
        m = self.minutes.get(key)
        if m is None:
            m = self.minutes[key] = SiteMinute(site, organization, minute)
        m.dirty = True
        m.requests += 1
        m.status[status // 100 if 100 <= status < 600 else 5] += 1
        m.bytes_in += bytes_in
        m.bytes_out += bytes_out
        if cache is not None:
            m.cache[cache] = m.cache.get(cache, 0) + 1
        if blocked is not None:
            m.blocked[blocked] = m.blocked.get(blocked, 0) + 1
        if latency_s is not None:
            ms = latency_s * 1000.0
            m.latency[bisect.bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
            m.latency_sum_ms += ms
        if backend is not None:
            b = m.backends.get(backend)
            if b is None:
                b = m.backends[backend] = [0, 0]
            b[0] += 1
            if status >= 500:
                b[1] += 1

    def wants_sample(self, status: int, blocked: bool) -> bool:
        """Every blocked or failed request, and one in ``sample_every`` of the others."""
        if blocked or status >= 500:
            return True
        if self.sample_every <= 0:
            return False
        self._sample_countdown -= 1
        if self._sample_countdown > 0:
            return False
        self._sample_countdown = self.sample_every
        return True

    def sample(self, record: dict) -> None:
        self.samples.append(record)
        self._new_samples.append(record)
        if len(self._new_samples) > self.samples.maxlen:  # type: ignore[operator]
            del self._new_samples[0]

    # --- off the request path ---------------------------------------------------------------

    def drain(self, now: float | None = None) -> tuple[list[dict], list[dict]]:
        """The site-minutes changed since the last drain, and the new samples. Forgets minutes
        older than KEEP_MINUTES once they are drained (folding them into ``closed``)."""
        oldest_kept = int(now if now is not None else time.time()) // 60 - KEEP_MINUTES
        changed = []
        for key, m in list(self.minutes.items()):
            if m.dirty:
                changed.append(m.to_wire())
                m.dirty = False
            if m.minute < oldest_kept:
                del self.minutes[key]
                self._close(m)
        samples, self._new_samples = self._new_samples, []
        return changed, samples

    def _close(self, m: SiteMinute) -> None:
        total = self.closed.get(m.site)
        if total is None:
            total = self.closed[m.site] = SiteMinute(m.site, m.organization, 0)
        merge_into(total, m)

    def totals(self) -> dict[str, SiteMinute]:
        """Per site, everything counted since the process started (for /metrics)."""
        out: dict[str, SiteMinute] = {}
        for m in itertools.chain(self.closed.values(), self.minutes.values()):
            total = out.get(m.site)
            if total is None:
                total = out[m.site] = SiteMinute(m.site, m.organization, 0)
            merge_into(total, m)
        return out


def merge_into(total: SiteMinute, m: SiteMinute) -> None:
    total.requests += m.requests
    for i, n in enumerate(m.status):
        total.status[i] += n
    total.bytes_in += m.bytes_in
    total.bytes_out += m.bytes_out
    for k, n in m.cache.items():
        total.cache[k] = total.cache.get(k, 0) + n
    for k2, n in m.blocked.items():
        total.blocked[k2] = total.blocked.get(k2, 0) + n
    for i, n in enumerate(m.latency):
        total.latency[i] += n
    total.latency_sum_ms += m.latency_sum_ms
    for b, (req, err) in m.backends.items():
        t = total.backends.setdefault(b, [0, 0])
        t[0] += req
        t[1] += err


# --- masking ----------------------------------------------------------------------------------


def mask_headers(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, MASK if k.lower() in SECRET_HEADERS or _SECRET_NAME.search(k) else v) for k, v in fields]


def mask_path(path: str) -> str:
    """``/login?user=a&token=xyz`` -> ``/login?user=a&token=***``: query values named like secrets."""
    base, q, query = path.partition("?")
    if not q:
        return path
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and _SECRET_NAME.search(name) else item)
    return f"{base}?{'&'.join(parts)}"


def anonymize_ip(ip: str) -> str:
    """IPv4 keeps its /24, IPv6 its /48 (the usual analytics truncation)."""
    if ":" in ip:
        if ip.startswith("::ffff:") and "." in ip:
            return "::ffff:" + anonymize_ip(ip[7:])
        groups = ip.split(":")
        head = [g for g in groups[:3]]
        return ":".join(head) + "::"
    parts = ip.split(".")
    return ".".join(parts[:3] + ["0"]) if len(parts) == 4 else ip


# --- the spool ----------------------------------------------------------------------------------


class Spool:
    """Files of one process in ``folder``: ``<process>-<seq>.json``; the agent consumes them."""

    # If the agent is away, a process stops writing beyond this many pending files (about 8 minutes
    # at 5 s): counts of the current minutes stay in memory and catch up when the agent returns.
    MAX_PENDING = 100

    def __init__(self, folder: str | Path, process: str):
        self.folder = Path(folder)
        self.process = process
        self.seq = 0

    def write(self, payload: dict) -> Path | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        pending = sum(1 for p in self.folder.glob(f"{self.process}-*.json"))
        if pending >= self.MAX_PENDING:
            return None
        self.seq += 1
        payload = {"process": self.process, "seq": self.seq, "written_at": time.time(), **payload}
        final = self.folder / f"{self.process}-{self.seq:012d}.json"
        tmp = final.with_suffix(".part")
        with open(tmp, "wb") as fh:
            fh.write(msgspec.json.encode(payload))
        os.replace(tmp, final)
        return final


def process_id() -> str:
    """Unique across restarts of the node: the pid alone is reused."""
    return f"{os.getpid()}.{int(time.time() * 1000) % 10**10}"


def percentile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (0..1) in ms of a histogram over LATENCY_BOUNDS_MS, interpolated linearly in
    its bucket (as Prometheus' histogram_quantile does). None without samples."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lower = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])  # the open bucket: its lower bound is all we know
            upper = LATENCY_BOUNDS_MS[i]
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])
