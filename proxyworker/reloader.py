"""Watch the snapshot file, swap in each good snapshot, keep the last good one when a new one is bad.

The file is checked (stat only: mtime, inode, size) when inotify says something in its directory
changed, and polled a few times a second besides, off the request path.
Loading and decoding run in a thread; compiling runs on the loop and ends with a single reference
assignment, so a request sees either the old tables or the new ones, never a mix, and nothing is
restarted or dropped.

Every outcome is written atomically to the status file (``<snapshot>.status.json`` by default) for
the agent to report::

    {"state": "applied" | "rejected" | "missing", "version": <served>, "applied_at": <unix time>,
     "snapshot": <path>, "rejected": null | {"reason": ..., "version": <best effort>, "at": ...},
     "pid": ..., "updated_at": ...}
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import msgspec

from proxyworker import snapshot as snap
from proxyworker.health import HealthChecker
from proxyworker.inotify import DirectoryWatch
from proxyworker.tables import Live, compile_snapshot

logger = logging.getLogger(__name__)


def _peek_version(path: str) -> int | None:
    """The version a (rejected) file claims, for the report; None when unreadable."""
    try:
        with open(path, "rb") as fh:
            doc = msgspec.json.decode(fh.read())
        version = doc.get("version") if isinstance(doc, dict) else None
        return version if isinstance(version, int) else None
    except Exception:
        return None


class SnapshotWatcher:
    def __init__(
        self,
        path: str,
        live: Live,
        health: HealthChecker | None = None,
        status_path: str | None = None,
        poll_interval: float = 0.25,
    ):
        self.path = path
        self.live = live
        self.health = health
        self.status_path = status_path or f"{path}.status.json"
        self.poll_interval = poll_interval
        self._seen: tuple[int, int, int] | None = None
        self.applied_at: float | None = None
        self.rejection: dict | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def load_initial(self) -> bool:
        """Synchronous first load at start-up; the worker serves empty tables if it fails."""
        self._seen = self._stat()
        if self._seen is None:
            self._report("missing", f"snapshot file {self.path} does not exist")
            return False
        try:
            snapshot = snap.load_file(self.path, self.live.fleet_key)
            tables = compile_snapshot(snapshot, self.live.tables, self.live.fleet_key)
        except (snap.SnapshotError, OSError, ValueError) as exc:
            # A warning, not an error: mitmproxy's start-up check exits on any error logged, and a
            # worker without a good snapshot must still come up (serving nothing) and keep polling.
            self._reject(str(exc), level=logging.WARNING)
            return False
        self._apply(tables)
        return True

    async def run(self) -> None:
        changed = asyncio.Event()
        watch = DirectoryWatch.open(os.path.dirname(os.path.abspath(self.path)))
        if watch is not None:
            name = os.path.basename(self.path)
            loop = asyncio.get_running_loop()

            def on_events() -> None:
                if name in watch.names():
                    changed.set()

            loop.add_reader(watch.fd, on_events)
        try:
            while True:
                try:
                    await asyncio.wait_for(changed.wait(), self.poll_interval)
                except TimeoutError:
                    pass
                changed.clear()
                await self._check()
        finally:
            if watch is not None:
                loop.remove_reader(watch.fd)
                watch.close()

    async def _check(self) -> None:
        current = self._stat()
        if current == self._seen:
            return
        self._seen = current
        if current is None:
            self._report("missing", f"snapshot file {self.path} disappeared; serving the last good one")
            return
        await self.reload()

    async def reload(self) -> bool:
        try:
            snapshot = await asyncio.to_thread(snap.load_file, self.path, self.live.fleet_key)
            tables = compile_snapshot(snapshot, self.live.tables, self.live.fleet_key)
        except (snap.SnapshotError, OSError, ValueError) as exc:
            self._reject(str(exc))
            return False
        except Exception as exc:  # never let a bad file stop the watcher
            logger.exception("snapshot %s could not be compiled", self.path)
            self._reject(f"internal error: {exc!r}")
            return False
        self._apply(tables)
        return True

    def _apply(self, tables) -> None:
        self.live.tables = tables  # the swap: one reference, read by every request from now on
        self.applied_at = time.time()
        self.rejection = None
        if self.health is not None:
            self.health.reconcile(tables)
        logger.info("serving snapshot version %s (%d sites)", tables.version, len(tables.sites))
        self._report("applied")

    def _reject(self, reason: str, level: int = logging.ERROR) -> None:
        logger.log(
            level,
            "snapshot %s rejected, still serving version %s: %s",
            self.path,
            self.live.tables.version,
            reason,
        )
        self.rejection = {"reason": reason, "version": _peek_version(self.path), "at": time.time()}
        self._report("rejected")

    def _report(self, state: str, reason: str | None = None) -> None:
        if reason and self.rejection is None:
            self.rejection = {"reason": reason, "version": None, "at": time.time()}
        status = {
            "state": state,
            "version": self.live.tables.version,
            "applied_at": self.applied_at,
            "snapshot": self.path,
            "rejected": self.rejection,
            "pid": os.getpid(),
            "updated_at": time.time(),
        }
        try:
            snap.write_file_atomic(self.status_path, msgspec.json.encode(status))
        except OSError as exc:
            logger.error("cannot write status file %s: %s", self.status_path, exc)
