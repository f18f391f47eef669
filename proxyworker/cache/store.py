"""The node's response cache: one file per stored response, shared by the node's worker processes.

Layout under the cache directory (``<snapshot dir>/cache`` unless ``--cache-dir``)::

    ab/abcdef…-0123….e   a stored response: b"PC1\\n", 4-byte meta length, msgpack meta, body
    ab/abcdef….v         the Vary header names last stored for a URL (absent: no Vary)
    ab/abcdef…-….l       a miss in progress for a key (cross-process coalescing)

``abcdef…`` hashes the primary key (scheme, site, host, path with the site's ignored query
parameters removed), so every variant of one URL sits in one small directory: purging a URL or
invalidating it after a POST lists one directory. Files are written to a temporary name and
renamed, so a reader never sees half an entry.

Each process keeps the hot entries in memory (an LRU bounded by ``memory_bytes``). A hit checks the
file with one ``stat``: a file that is gone was purged or evicted by some process, a different
inode or mtime was replaced by a newer response; either way the memory copy is dropped. That is
what makes a purge applied by one process hold for all of them, without any other signalling.

Eviction is by total bytes on disk, least recently used first. Access time is the file's atime,
which a hit refreshes (``utime``, at most every ``TOUCH_SECONDS`` per entry). A process that has
written more than an eighth of the budget since its last scan scans the directory under an
exclusive ``flock`` (one evicting process at a time) and deletes the oldest files until the total
is below 90 % of ``max_bytes``. Between scans the total may exceed the budget by up to an eighth
per process.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import logging
import os
import struct
import time

import msgspec

logger = logging.getLogger(__name__)

MAGIC = b"PC1\n"
META_VERSION = 1
TOUCH_SECONDS = 1.0
LOCK_SECONDS = 30.0  # a coalescing lock older than this belongs to a process that died

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def primary_hash(primary: str) -> str:
    return hashlib.blake2b(primary.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def variant_hash(variant: str) -> str:
    return hashlib.blake2b(variant.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


class Entry:
    """A stored response and what RFC 9111 needs to decide about it, computed when it was stored."""

    __slots__ = (
        "site",
        "host",
        "url_path",
        "scheme",
        "status",
        "reason",
        "fields",
        "body",
        "stored_at",
        "initial_age",
        "lifetime",
        "swr",
        "sie",
        "must_revalidate",
        "no_cache",
        "etag",
        "last_modified",
        "tags",
        "encoding",
        "file",
        "ino",
        "mtime_ns",
        "size",
        "touched",
    )

    def __init__(self, **kw) -> None:
        self.file = ""
        self.ino = self.mtime_ns = self.size = 0
        self.touched = 0.0
        for name, value in kw.items():
            setattr(self, name, value)

    def meta(self) -> list:
        return [
            META_VERSION, self.site, self.host, self.url_path, self.scheme, self.status, self.reason,
            self.fields, self.stored_at, self.initial_age, self.lifetime, self.swr, self.sie,
            self.must_revalidate, self.no_cache, self.etag, self.last_modified, self.tags, self.encoding,
        ]  # fmt: skip

    @classmethod
    def from_meta(cls, meta: list, body: bytes) -> Entry:
        if meta[0] != META_VERSION:
            raise ValueError("unknown cache entry version")
        (_, site, host, url_path, scheme, status, reason, fields, stored_at, initial_age, lifetime, swr, sie,
         must_revalidate, no_cache, etag, last_modified, tags, encoding) = meta  # fmt: skip
        return cls(
            site=site, host=host, url_path=url_path, scheme=scheme, status=status, reason=reason,
            fields=tuple((k, v) for k, v in fields), body=body, stored_at=stored_at, initial_age=initial_age,
            lifetime=lifetime, swr=swr, sie=sie, must_revalidate=must_revalidate, no_cache=no_cache, etag=etag,
            last_modified=last_modified, tags=tuple(tags), encoding=encoding,
        )  # fmt: skip

    def age(self, now: float) -> float:
        return self.initial_age + (now - self.stored_at)  # RFC 9111 §4.2.3 current_age


def _read_meta(path: str, with_body: bool) -> tuple[list, bytes] | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read() if with_body else fh.read(65536)
    except OSError:
        return None
    if data[:4] != MAGIC or len(data) < 8:
        return None
    (n,) = struct.unpack_from(">I", data, 4)
    if len(data) < 8 + n:
        if with_body:
            return None
        try:  # a meta block larger than the first read (many headers)
            with open(path, "rb") as fh:
                data = fh.read(8 + n)
        except OSError:
            return None
    try:
        meta = _unpack(data[8 : 8 + n])
    except msgspec.DecodeError:
        return None
    return meta, (data[8 + n :] if with_body else b"")


class Store:
    def __init__(self, directory: str, *, max_bytes: int, memory_bytes: int):
        self.dir = directory
        self.max_bytes = max_bytes
        self.memory_bytes = min(memory_bytes, max_bytes)
        self._memory: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self._memory_used = 0
        self._vary: dict[str, tuple[str, ...]] = {}  # primary -> Vary names (lower case)
        self._written_since_scan = 0
        os.makedirs(directory, exist_ok=True)

    # --- paths ------------------------------------------------------------------------------------

    def _entry_path(self, primary: str, variant: str) -> str:
        hp = primary_hash(primary)
        return os.path.join(self.dir, hp[:2], f"{hp}-{variant_hash(variant)}.e")

    def _vary_path(self, primary: str) -> str:
        hp = primary_hash(primary)
        return os.path.join(self.dir, hp[:2], f"{hp}.v")

    def lock_path(self, primary: str, variant: str) -> str:
        hp = primary_hash(primary)
        return os.path.join(self.dir, hp[:2], f"{hp}-{variant_hash(variant)}.l")

    # --- reading ----------------------------------------------------------------------------------

    def vary_names(self, primary: str, refresh: bool = False) -> tuple[str, ...]:
        names = None if refresh else self._vary.get(primary)
        if names is None:
            try:
                with open(self._vary_path(primary), encoding="latin-1") as fh:
                    names = tuple(n for n in fh.read().split(",") if n)
            except OSError:
                names = ()
            self._remember_vary(primary, names)
        return names

    def _remember_vary(self, primary: str, names: tuple[str, ...]) -> None:
        if len(self._vary) > 100_000:
            self._vary.clear()
        self._vary[primary] = names

    def lookup(self, key: str, primary: str, variant: str) -> Entry | None:
        """The stored response for ``key`` (= primary + variant), checked against the disk."""
        entry = self._memory.get(key)
        if entry is not None:
            try:
                st = os.stat(entry.file)
            except OSError:  # purged or evicted, maybe by another process
                self._forget(key)
                return None
            if st.st_ino == entry.ino and st.st_mtime_ns == entry.mtime_ns:
                self._memory.move_to_end(key)
                return entry
            self._forget(key)  # replaced by a newer response: read that one
        return self._load(key, self._entry_path(primary, variant))

    def _load(self, key: str, path: str) -> Entry | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read()
        finally:
            os.close(fd)
        if data[:4] != MAGIC:
            return None
        try:
            (n,) = struct.unpack_from(">I", data, 4)
            entry = Entry.from_meta(_unpack(data[8 : 8 + n]), data[8 + n :])
        except (struct.error, msgspec.DecodeError, ValueError, TypeError):
            logger.warning("unreadable cache entry %s removed", path)
            _unlink(path)
            return None
        entry.file, entry.ino, entry.mtime_ns, entry.size = path, st.st_ino, st.st_mtime_ns, st.st_size
        entry.touched = time.monotonic()
        self._remember(key, entry)
        return entry

    def touch(self, entry: Entry, now: float) -> None:
        """Refresh the file's access time (the LRU clock of eviction), keeping its mtime."""
        if now - entry.touched > TOUCH_SECONDS:
            entry.touched = now
            try:
                os.utime(entry.file, ns=(time.time_ns(), entry.mtime_ns))
            except OSError:
                pass

    # --- memory LRU -------------------------------------------------------------------------------

    def _remember(self, key: str, entry: Entry) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= old.size
        if entry.size > self.memory_bytes // 4:
            return  # large objects are read from disk each time rather than flush the hot set
        self._memory[key] = entry
        self._memory_used += entry.size
        while self._memory_used > self.memory_bytes and self._memory:
            _, gone = self._memory.popitem(last=False)
            self._memory_used -= gone.size

    def _forget(self, key: str) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= old.size

    # --- writing ----------------------------------------------------------------------------------

    def put(self, key: str, primary: str, variant: str, vary: tuple[str, ...], entry: Entry) -> bool:
        """Write an entry (atomically) and keep it in memory. False when the disk refused."""
        path = self._entry_path(primary, variant)
        meta = _pack(entry.meta())
        data = b"".join((MAGIC, struct.pack(">I", len(meta)), meta, entry.body))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if vary != self._vary.get(primary) and (vary or self.vary_names(primary)):
                _write_atomic(self._vary_path(primary), ",".join(vary).encode("latin-1"))
            self._remember_vary(primary, vary)
            _write_atomic(path, data)
            st = os.stat(path)
        except OSError as exc:
            logger.warning("cache write failed: %s", exc)
            return False
        entry.file, entry.ino, entry.mtime_ns, entry.size = path, st.st_ino, st.st_mtime_ns, st.st_size
        entry.touched = time.monotonic()
        self._remember(key, entry)
        self._written_since_scan += st.st_size
        return True

    def delete(self, key: str, entry: Entry) -> None:
        self._forget(key)
        _unlink(entry.file)

    def delete_url(self, primary: str) -> int:
        """Drop every variant of one URL (purge by URL, RFC 9111 §4.4 invalidation). Returns how many."""
        hp = primary_hash(primary)
        folder = os.path.join(self.dir, hp[:2])
        removed = 0
        try:
            names = os.listdir(folder)
        except OSError:
            return 0
        for name in names:
            if name.startswith(hp) and name.endswith(".e"):
                removed += _unlink(os.path.join(folder, name))
        return removed

    # --- scans: purges and eviction (run in a thread) ------------------------------------------------

    def entry_files(self):
        try:
            folders = os.scandir(self.dir)
        except OSError:
            return
        with folders:
            for folder in folders:
                if not folder.is_dir(follow_symlinks=False):
                    continue
                try:
                    with os.scandir(folder.path) as files:
                        for f in files:
                            if f.name.endswith(".e"):
                                yield f
                except OSError:
                    continue

    def delete_matching(self, predicate) -> int:
        """Delete every entry whose meta ``predicate(site, host, url_path, tags)`` accepts."""
        removed = 0
        for f in self.entry_files():
            got = _read_meta(f.path, with_body=False)
            if got is None:
                continue
            meta = got[0]
            try:
                if predicate(meta[1], meta[2], meta[3], meta[17]):
                    removed += _unlink(f.path)
            except (IndexError, TypeError):
                continue
        return removed

    def needs_eviction_scan(self) -> bool:
        return self._written_since_scan > self.max_bytes // 8

    def evict(self) -> tuple[int, int]:
        """Delete least recently used entries until the total is under 90 % of max_bytes.
        Returns (files deleted, total bytes after). One process at a time (flock)."""
        self._written_since_scan = 0
        lock_fd = os.open(os.path.join(self.dir, ".evict.lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0, -1  # another process is evicting right now
            files = []
            total = 0
            for f in self.entry_files():
                try:
                    st = f.stat(follow_symlinks=False)
                except OSError:
                    continue
                files.append((st.st_atime_ns, st.st_size, f.path))
                total += st.st_size
            if total <= self.max_bytes:
                return 0, total
            files.sort()
            target = int(self.max_bytes * 0.9)
            deleted = 0
            for _, size, path in files:
                if total <= target:
                    break
                if _unlink(path):
                    total -= size
                    deleted += 1
            return deleted, total
        finally:
            os.close(lock_fd)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
        return 1
    except OSError:
        return 0
