"""Load balancing: per-backend runtime state and the seven algorithms. Pure: no I/O, no mitmproxy.

A ``Pool`` is compiled once per snapshot; ``BackendState`` objects outlive snapshots (the compiler
hands the same object to the next snapshot when the backend is still there), so health, ejections,
in-flight counts and latency averages survive a config swap.

``Pool.pick_backend`` is on the hot path: it filters a short list and does arithmetic, nothing else.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

EWMA_ALPHA = 0.3  # weight of the newest latency sample
_MIN_LATENCY = 0.0005  # seconds; keeps 1/latency finite for very fast backends
_RING_REPLICAS = 64  # virtual nodes per unit of weight on the consistent-hash ring


class PassivePolicy:
    """How passive checks eject: `failures` consecutive errors eject for `eject_seconds`, doubling."""

    __slots__ = ("failures", "eject_seconds", "eject_max_seconds")

    def __init__(self, failures: int = 3, eject_seconds: float = 10.0, eject_max_seconds: float = 300.0):
        self.failures = failures
        self.eject_seconds = eject_seconds
        self.eject_max_seconds = eject_max_seconds


class BackendState:
    """One backend of one pool: its configuration plus everything learned while serving."""

    __slots__ = (
        "key",
        "id",
        "address",
        "port",
        "scheme",
        "weight",
        "draining",
        "cookie_token",
        "upstream_tls",
        "client_ssl",
        "sni",
        # active health checks
        "healthy",
        "check_successes",
        "check_failures",
        # passive health checks
        "fails",
        "ejections",
        "ejected_until",
        # balancing inputs
        "active",
        "ewma",
        "load",
        "current_weight",
    )

    def __init__(
        self,
        key: tuple,
        id: str,
        address: str,
        port: int,
        scheme: str = "http",
        weight: int = 1,
        draining: bool = False,
    ):
        self.key = key
        self.id = id
        self.address = address
        self.port = port
        self.scheme = scheme
        self.weight = weight
        self.draining = draining
        self.cookie_token = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        self.upstream_tls: Any = None  # pyOpenSSL context for the proxy's upstream connections
        self.client_ssl: Any = None  # stdlib ssl context for health checks and retries
        self.sni: str | None = None
        self.healthy = True  # optimistic: a new backend serves until checks say otherwise
        self.check_successes = 0
        self.check_failures = 0
        self.fails = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.active = 0
        self.ewma: float | None = None
        self.load: float | None = None
        self.current_weight = 0.0

    def __repr__(self) -> str:
        return f"<Backend {self.id} {self.address}:{self.port}>"

    def available(self, now: float) -> bool:
        return self.healthy and not self.draining and now >= self.ejected_until

    # --- passive checks ---------------------------------------------------------------------

    def record_success(self) -> None:
        self.fails = 0
        self.ejections = 0

    def record_failure(self, now: float, policy: PassivePolicy) -> bool:
        """Count one connect error, 5xx or timeout. Returns True when this ejects the backend."""
        if now < self.ejected_until:
            return False  # already out: concurrent failures must not escalate the backoff
        self.fails += 1
        if self.fails < policy.failures:
            return False
        backoff = min(policy.eject_seconds * (2**self.ejections), policy.eject_max_seconds)
        self.ejected_until = now + backoff
        self.ejections += 1
        # When it comes back it is on probation: one more failure ejects it again, for longer.
        self.fails = policy.failures - 1
        return True

    # --- active checks ----------------------------------------------------------------------

    def record_check(self, ok: bool, rise: int, fall: int) -> bool:
        """Apply one active check result with rise/fall hysteresis. Returns True on a state change."""
        if ok:
            self.check_failures = 0
            self.check_successes += 1
            if not self.healthy and self.check_successes >= rise:
                self.healthy = True
                return True
        else:
            self.check_successes = 0
            self.check_failures += 1
            if self.healthy and self.check_failures >= fall:
                self.healthy = False
                return True
        return False

    def record_latency(self, seconds: float) -> None:
        if self.ewma is None:
            self.ewma = seconds
        else:
            self.ewma += EWMA_ALPHA * (seconds - self.ewma)


def _smooth_weighted(candidates: Sequence[BackendState], weights: Sequence[float]) -> BackendState:
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, never a a a a a b c."""
    total = 0.0
    best = None
    for b, w in zip(candidates, weights, strict=True):
        b.current_weight += w
        total += w
        if best is None or b.current_weight > best.current_weight:
            best = b
    assert best is not None
    best.current_weight -= total
    return best


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


class Pool:
    """A named group of backends of one site and the algorithm that chooses among them."""

    def __init__(
        self,
        name: str,
        backends: list[BackendState],
        algorithm: str = "round_robin",
        passive: PassivePolicy | None = None,
    ):
        self.name = name
        self.backends = backends
        self.algorithm = algorithm
        self.passive = passive or PassivePolicy()
        self.by_token = {b.cookie_token: b for b in backends}
        self._rr = -1
        self._choose: Callable[[list[BackendState], str], BackendState] = getattr(self, f"_{algorithm}")
        self._ring_hashes: list[int] = []
        self._ring_backends: list[BackendState] = []
        if algorithm == "ip_hash":
            self._build_ring()

    def pick_backend(
        self, client_ip: str, now: float, exclude: Collection[BackendState] = ()
    ) -> BackendState | None:
        """The backend for a new request, or None when no backend may take one."""
        if self.algorithm == "ip_hash":
            return self._ip_hash_lookup(client_ip, now, exclude)
        candidates = [b for b in self.backends if b.available(now) and b not in exclude]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self._choose(candidates, client_ip)

    def any_available(self, now: float) -> bool:
        return any(b.available(now) for b in self.backends)

    # --- algorithms -----------------------------------------------------------------------

    def _round_robin(self, candidates: list[BackendState], client_ip: str) -> BackendState:
        self._rr += 1
        return candidates[self._rr % len(candidates)]

    def _weighted_round_robin(self, candidates: list[BackendState], client_ip: str) -> BackendState:
        return _smooth_weighted(candidates, [b.weight for b in candidates])

    def _least_connections(self, candidates: list[BackendState], client_ip: str) -> BackendState:
        fewest = min(b.active for b in candidates)
        tied = [b for b in candidates if b.active == fewest]
        return self._round_robin(tied, client_ip) if len(tied) > 1 else tied[0]

    def _weighted_least_connections(self, candidates: list[BackendState], client_ip: str) -> BackendState:
        # Like nginx least_conn with weights: fewest in-flight requests per unit of weight, and ties
        # (the usual case at low load) shared by smooth weighted round robin so weights still count.
        lowest = min(b.active / b.weight for b in candidates)
        tied = [b for b in candidates if b.active / b.weight == lowest]
        if len(tied) == 1:
            return tied[0]
        return _smooth_weighted(tied, [b.weight for b in tied])

    def _weighted_response_time(self, candidates: list[BackendState], client_ip: str) -> BackendState:
        # Share proportional to weight / EWMA latency. A backend without samples yet is assumed as
        # fast as the average of the others, so it gets traffic and a measurement.
        known = [b.ewma for b in candidates if b.ewma is not None]
        default = sum(known) / len(known) if known else 1.0
        weights = [
            b.weight / max(b.ewma if b.ewma is not None else default, _MIN_LATENCY) / (b.active + 1)
            for b in candidates
        ]
        return _smooth_weighted(candidates, weights)

    def _resource_based(self, candidates: list[BackendState], client_ip: str) -> BackendState:
        # Backends report their load in [0, 1] through health checks; spare capacity is the share.
        known = [b.load for b in candidates if b.load is not None]
        default = sum(known) / len(known) if known else 0.0
        weights = [b.weight * max(0.02, 1.0 - (b.load if b.load is not None else default)) for b in candidates]
        return _smooth_weighted(candidates, weights)

    def _ip_hash(self, candidates: list[BackendState], client_ip: str) -> BackendState:  # pragma: no cover
        raise AssertionError("ip_hash is served by _ip_hash_lookup")

    # --- consistent hashing ----------------------------------------------------------------

    def _build_ring(self) -> None:
        # A ketama-style ring keyed by backend id: adding a backend only takes the arcs its own
        # points land on (about 1/n of the clients), everyone else keeps their backend.
        points: list[tuple[int, int]] = []
        for index, b in enumerate(self.backends):
            for replica in range(_RING_REPLICAS * min(b.weight, 100)):
                points.append((_hash64(f"{b.id}#{replica}"), index))
        points.sort()
        self._ring_hashes = [h for h, _ in points]
        self._ring_backends = [self.backends[i] for _, i in points]

    def _ip_hash_lookup(self, client_ip: str, now: float, exclude: Collection[BackendState]) -> BackendState | None:
        ring = self._ring_backends
        if not ring:
            return None
        start = bisect.bisect(self._ring_hashes, _hash64(client_ip)) % len(ring)
        seen: set[int] = set()
        # Walk clockwise to the first backend that can take the request; an unavailable backend
        # only moves its own clients.
        for step in range(len(ring)):
            b = ring[(start + step) % len(ring)]
            if id(b) in seen:
                continue
            seen.add(id(b))
            if b.available(now) and b not in exclude:
                return b
            if len(seen) == len(self.backends):
                break
        return None
