"""The agent's half of traffic shipping: the node's spool files become one ``traffic.ingest`` message.

Every ``SHIP_SECONDS`` the agent calls ``TrafficCollector.collect``: it reads every spool file the
node's proxy processes wrote (``<snapshot dir>/traffic/<process>-<seq>.json``, see
``proxyworker.traffic``), keeps per (process, site, minute) the newest cumulative counts, gathers
the new request samples, and merges the backends' health over the live processes: a backend is up
on this worker when every process that reported recently sees it up (each process runs its own
checks and its own passive ejections). Files are deleted only after the message was handed to the
broker (``commit``); a failed send leaves them for the next round, and since counts are cumulative
per minute, sending one twice does no harm.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from proxyworker.traffic import SPOOL_FOLDER

log = logging.getLogger("portico.agent")

SHIP_SECONDS = 5.0
# A process whose newest file is older than this is gone (restarted or stopped): its backend view
# no longer counts.
PROCESS_GONE_SECONDS = 30.0
MAX_SAMPLES_PER_MESSAGE = 500


class TrafficCollector:
    def __init__(self, snapshot_path: str):
        self.folder = Path(snapshot_path).resolve().parent / SPOOL_FOLDER
        self._pending: list[Path] = []
        # process -> (written_at, backends list): the last health view of each process
        self._views: dict[str, tuple[float, list[dict]]] = {}

    def collect(self) -> dict | None:
        """The next message's body, or None when there is nothing new."""
        files = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        if not files:
            return None
        minutes: dict[tuple[str, str, int], dict] = {}
        samples: list[dict] = []
        for path in files:
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:  # never half-written (rename); unreadable: drop it
                log.warning("dropping unreadable traffic file %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            process, seq = doc["process"], doc["seq"]
            for m in doc.get("minutes", ()):
                key = (process, m["site"], m["minute"])
                old = minutes.get(key)
                if old is None or old["seq"] < seq:
                    minutes[key] = {**m, "process": process, "seq": seq}
            samples.extend(doc.get("samples", ()))
            written = doc.get("written_at", 0.0)
            if written >= self._views.get(process, (0.0, []))[0]:
                self._views[process] = (written, doc.get("backends", []))
        self._pending = files
        return {
            "minutes": list(minutes.values()),
            "samples": samples[-MAX_SAMPLES_PER_MESSAGE:],
            "backends": self.backend_health(),
        }

    def backend_health(self, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        for process, (written, _) in list(self._views.items()):
            if now - written > PROCESS_GONE_SECONDS:
                del self._views[process]
        merged: dict[str, dict] = {}
        for _, backends in self._views.values():
            for b in backends:
                m = merged.setdefault(b["backend"], {"backend": b["backend"], "site": b["site"], "processes": 0,
                                                     "processes_up": 0})
                m["processes"] += 1
                m["processes_up"] += 1 if b["up"] else 0
        for m in merged.values():
            m["up"] = m["processes_up"] == m["processes"]
        return list(merged.values())

    def commit(self) -> None:
        """The message is on the broker: its files are done."""
        for path in self._pending:
            path.unlink(missing_ok=True)
        self._pending = []
