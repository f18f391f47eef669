"""Token buckets shared by every worker process of a node.

The worker runs N processes on one port (SO_REUSEPORT); a limit of 10 requests per minute must mean
10 for the node, not 10 per process. The buckets therefore live in one small file mapped into every
process (``MAP_SHARED``, on ``/dev/shm`` when it exists: memory, never a disk wait).

Layout: ``SETS`` sets of ``WAYS`` slots; a slot is ``<fingerprint u64, tokens f64, updated f64,
full_at f64>`` (32 bytes; 16384 × 4 slots = 2 MiB). A key (site, limit, client) hashes to one set;
it takes the slot with its fingerprint, else an empty one, else one whose bucket is full again
(``full_at`` passed: forgetting it loses nothing), else the least recently used (only when more
than four keys of one set are active at once: that key then starts with a full bucket; with 65536
slots this needs tens of thousands of concurrently limited clients).

Atomicity across processes: the read-modify-write of a set holds a POSIX record lock
(``lockf``) on that set's 128 bytes. The kernel drops the lock if its holder dies, so a crashed
process never wedges the others (a semaphore in shared memory would). Two syscalls per check,
about a microsecond each when uncontended; measured in bench/README.md.

Time is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every process of the machine.
The file is recreated when the worker starts, so no bucket outlives a reboot's clock.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import tempfile

SETS = 16384
WAYS = 4
_SLOT = struct.Struct("<Qddd")
SLOT_BYTES = _SLOT.size
SET_BYTES = SLOT_BYTES * WAYS
FILE_BYTES = SETS * SET_BYTES


def default_path(snapshot_path: str, http_port: int) -> str:
    """One file per worker deployment (snapshot file + port), shared by its processes."""
    tag = hashlib.sha256(f"{os.path.abspath(snapshot_path)}:{http_port}".encode()).hexdigest()[:16]
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, f"portico-ratelimit-{tag}")


def create(path: str) -> None:
    """A fresh, zeroed bucket file (written aside, then renamed: a process that still maps the old
    one keeps a consistent view until it exits). Call once before the worker processes start."""
    tmp = f"{path}.{os.getpid()}.part"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, FILE_BYTES)
    finally:
        os.close(fd)
    os.replace(tmp, path)



def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Verdict:
    __slots__ = ("allowed", "remaining", "reset", "retry_after")

    def __init__(self, allowed: bool, remaining: int, reset: float, retry_after: float):
        self.allowed = allowed
        self.remaining = remaining
        self.reset = reset  # seconds until the bucket is full again
        self.retry_after = retry_after  # seconds until the next token (0 when allowed)


class SharedBuckets:
    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            create(path)
        self._fd = os.open(path, os.O_RDWR)
        if os.fstat(self._fd).st_size < FILE_BYTES:
            os.ftruncate(self._fd, FILE_BYTES)
        self._mm = mmap.mmap(self._fd, FILE_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    def take(self, key: bytes, capacity: float, rate: float, now: float) -> Verdict:
        """Take one token from ``key``'s bucket (``capacity`` tokens, refilled at ``rate``/s)."""
        h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        fingerprint = h | 1  # 0 marks an empty slot
        base = (h >> 32) % SETS * SET_BYTES
        mm = self._mm
        unpack, pack = _SLOT.unpack_from, _SLOT.pack_into
        fcntl.lockf(self._fd, fcntl.LOCK_EX, SET_BYTES, base)
        try:
            slot = victim = -1
            victim_rank = math.inf
            for i in range(WAYS):
                off = base + i * SLOT_BYTES
                fp, tokens, updated, full_at = unpack(mm, off)
                if fp == fingerprint:
                    slot = off
                    break
                # empty or full again: free to take; else the least recently used
                rank = -math.inf if fp == 0 or full_at <= now else updated
                if rank < victim_rank:
                    victim, victim_rank = off, rank
            if slot >= 0:
                # `now` was read before the lock: another process may have written a later time.
                if now > updated:
                    tokens = min(capacity, tokens + (now - updated) * rate)
                else:
                    now = updated
            else:
                slot = slot if slot >= 0 else victim
                tokens = capacity
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            reset = (capacity - tokens) / rate
            pack(mm, slot, fingerprint, tokens, now, now + reset)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, SET_BYTES, base)
        retry_after = 0.0 if allowed else (1.0 - tokens) / rate
        return Verdict(allowed, int(tokens), reset, retry_after)


class Limit:
    """One RateLimit policy compiled."""

    __slots__ = ("name", "prefix", "capacity", "rate", "header", "action", "key_prefix", "policy", "limit")

    def __init__(self, site_id: str, spec) -> None:
        self.name = spec.name
        self.prefix = spec.path_prefix
        self.capacity = float(spec.requests + spec.burst)
        self.rate = spec.requests / spec.per_seconds
        self.header = spec.header.lower() if spec.key == "header" and spec.header else None
        self.action = spec.action
        self.limit = spec.requests + spec.burst
        # The bucket key names site and limit, so two sites never share a client's bucket, and a
        # limit whose numbers change (same name) keeps its clients' state.
        self.key_prefix = f"{site_id}\0{spec.name}\0".encode()
        window = spec.per_seconds
        self.policy = f"{spec.requests};w={int(window) if window == int(window) else window}"
        if spec.burst:
            self.policy += f";burst={spec.burst}"


# --- across nodes: Redis ------------------------------------------------------------------------

# One atomic token-bucket step in Redis, timed by the Redis server's clock (one clock for every
# node). State: a hash {t: tokens, u: updated}; it expires once the bucket would be full again.
_REDIS_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil then
  tokens = capacity
elseif now > updated then
  tokens = math.min(capacity, tokens + (now - updated) * rate)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'u', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', tokens)}
"""


class RedisBuckets:
    """Buckets shared by every node through Redis (``--ratelimit-redis``), checked asynchronously.

    Each limited request costs one round trip to Redis (awaited: the event loop serves other
    connections meanwhile). When Redis fails or answers later than ``timeout``, the caller falls
    back to the node's shared-memory buckets and Redis is left alone for ``retry_after`` seconds,
    so an outage costs one timeout, not one per request.
    """

    def __init__(self, url: str, *, timeout: float = 0.05, retry_after: float = 5.0):
        import redis.asyncio  # only workers configured for Redis import it

        self.url = url
        self.timeout = timeout
        self.retry_after = retry_after
        self.down_until = 0.0
        self._client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self._script = self._client.register_script(_REDIS_TAKE)

    def usable(self, now: float) -> bool:
        return now >= self.down_until

    async def take(self, key: bytes, capacity: float, rate: float) -> Verdict:
        redis_key = b"portico:rl:" + hashlib.blake2b(key, digest_size=12).hexdigest().encode()
        allowed, tokens_text = await self._script(keys=[redis_key], args=[capacity, rate])
        tokens = float(tokens_text)
        ok = bool(allowed)
        return Verdict(ok, int(tokens), (capacity - tokens) / rate, 0.0 if ok else (1.0 - tokens) / rate)
