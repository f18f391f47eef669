"""The Celery side of a worker node.

It consumes the node's own durable queue ``portico.agent.<name>`` and, for each snapshot:
verifies the signature (an unsigned or tampered one is rejected and reported), ignores versions
not newer than the one served, writes it atomically as last-known-good to the snapshot file the
proxy processes watch, waits for them to swap it in, and reports ``applied`` or ``rejected`` with
the reason. A rejected file is replaced by the previous good one, so a restart never starts from
a bad snapshot.

On start and on every reconnect it says hello with its version; the control plane answers with
the newest snapshot if the node lacks it. Heartbeats go out every HEARTBEAT_SECONDS. While the
broker is down the proxy keeps serving what it has; kombu reconnects with backoff. A snapshot the
disk refuses (full, read-only) is reported and written again every heartbeat until it fits.

Never imports Django: it talks to the control plane only through messages on the broker.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import socket
import threading
import time
import zlib
from pathlib import Path

from celery import Celery
from kombu import Connection, Queue
from kombu.mixins import ConsumerMixin

from . import fsbroker, shipping, snapshot  # noqa: F401  (fsbroker registers portico-fs://)

log = logging.getLogger("portico.agent")

AGENT_QUEUE_PREFIX = "portico.agent."
HEARTBEAT_SECONDS = 5.0
APPLY_TIMEOUT = 10.0
# A snapshot travels zlib-compressed: about a tenth of the bytes through the broker, and cheaper
# to serialize than the JSON-escaped text. The envelope's signature is checked after inflating.
MAX_ENVELOPE_BYTES = 512 * 1024 * 1024


def snapshot_message(version: int, envelope: str) -> dict:
    """The broker message that carries one signed envelope to an agent."""
    packed = base64.b64encode(zlib.compress(envelope.encode(), 1)).decode()
    return {"kind": "snapshot", "version": version, "envelope_zlib": packed}


def envelope_of(body: dict) -> str:
    """The envelope text of a snapshot message (compressed or, from older publishers, plain)."""
    if "envelope_zlib" not in body:
        return body.get("envelope", "")
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(base64.b64decode(body["envelope_zlib"]), MAX_ENVELOPE_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        return data.decode()
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise snapshot.SnapshotError(f"unreadable compressed envelope: {exc}") from None


def broker_options(url: str, folder: str | None) -> dict:
    """Transport options for ``url``; the embedded filesystem broker needs its shared folder."""
    if url.startswith(("portico-fs://", "filesystem://")):
        if not folder:
            raise SystemExit("the filesystem broker needs --broker-folder (the control plane's var/broker)")
        Path(folder).mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": folder, "data_folder_out": folder, "control_folder": str(Path(folder) / "control"),
                "polling_interval": 0.01}
    return {}


def status_path(snapshot_path: str) -> str:
    return f"{snapshot_path}.status.json"


def read_status(snapshot_path: str) -> dict:
    try:
        with open(status_path(snapshot_path)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


class Agent(ConsumerMixin):
    def __init__(
        self,
        *,
        connection: Connection,
        control: Celery,
        name: str,
        snapshot_path: str,
        fleet_key: snapshot.FleetKey,
        pool: str = "default",
        address: str = "",
        capacity: int = 1,
        wait_for_proxy: bool = True,
    ):
        self.connection = connection
        self.control = control
        self.name = name
        self.snapshot_path = snapshot_path
        self.key = fleet_key
        self.pool = pool
        self.address = address
        self.capacity = capacity
        self.wait_for_proxy = wait_for_proxy
        self.version = self._served_version()
        self.queue = Queue(f"{AGENT_QUEUE_PREFIX}{name}", durable=True, routing_key=f"{AGENT_QUEUE_PREFIX}{name}")
        self._stop_heartbeat = threading.Event()
        # The consumer and the heartbeat thread (retrying an unwritten snapshot) both apply.
        self._apply_lock = threading.Lock()
        # A verified snapshot the disk refused (full, read-only): (version, envelope, reason),
        # written again every heartbeat until it fits or a newer one supersedes it.
        self.unwritten: tuple[int, str, str] | None = None

    # --- what is served now --------------------------------------------------------------------

    def _served_version(self) -> int:
        try:
            return snapshot.load_file(self.snapshot_path, self.key).version
        except FileNotFoundError:
            return 0
        except snapshot.SnapshotError as exc:
            log.error("last-known-good snapshot unusable: %s", exc)
            return 0

    # --- kombu ---------------------------------------------------------------------------------

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], accept=["json"], prefetch_count=1)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.send("fleet.hello", name=self.name, pool=self.pool, address=self.address, capacity=self.capacity, version=self.version)
        log.info("agent %s connected; serving v%s", self.name, self.version)

    def on_message(self, body, message):
        try:
            kind = body.get("kind")
            if kind == "snapshot":
                self.handle_snapshot(int(body.get("version", 0)), body)
            elif kind == "purge":
                self.handle_purge(body)
            else:
                log.warning("ignoring unknown message kind %r", kind)
        except Exception:
            log.exception("message handling failed")
        finally:
            message.ack()

    def send(self, task: str, **kwargs) -> None:
        try:
            self.control.send_task(task, kwargs=kwargs, retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2})
        except Exception as exc:  # the broker is down; heartbeats and hello will retry
            log.warning("could not send %s: %s", task, exc)

    # --- snapshots -----------------------------------------------------------------------------

    def handle_snapshot(self, version: int, message: dict) -> str:
        """Apply the envelope of one snapshot message. Returns 'applied', 'rejected' or 'ignored'."""
        with self._apply_lock:
            return self._apply(version, message)

    def retry_unwritten(self) -> str | None:
        """Write again a snapshot the disk refused; None when there is none (or a newer one won)."""
        pending = self.unwritten
        if pending is None:
            return None
        if pending[0] <= self.version:
            self.unwritten = None
            return None
        return self.handle_snapshot(pending[0], {"kind": "snapshot", "version": pending[0], "envelope": pending[1]})

    def _apply(self, version: int, message: dict) -> str:
        started = time.perf_counter()
        try:
            envelope_text = envelope_of(message)
            env = snapshot.decode_envelope(envelope_text)
            snap = snapshot.verify(env, self.key)
        except snapshot.SnapshotError as exc:
            log.error("rejected v%s: %s", version, exc)
            self.send("fleet.report", name=self.name, version=version, outcome="rejected", reason=str(exc))
            return "rejected"
        if snap.version <= self.version:
            # replayed or out-of-order: never go backwards
            log.info("ignoring v%s: serving v%s already", snap.version, self.version)
            return "ignored"
        previous = self._read_current()
        try:
            snapshot.write_file_atomic(self.snapshot_path, envelope_text.encode())
        except OSError as exc:
            # Disk full or read-only: the proxy keeps serving what it has in memory, and the
            # control plane hears why this node is behind.
            reason = f"cannot write the last-known-good snapshot: {exc.strerror or exc}"
            again = self.unwritten is not None and self.unwritten[0] == snap.version and self.unwritten[2] == reason
            self.unwritten = (snap.version, envelope_text, reason)
            if again:  # reported already; say it again only when the reason changes
                log.debug("v%s still not written: %s", snap.version, reason)
                return "rejected"
            log.error("v%s not applied: %s; retrying every %.0f s", snap.version, reason, HEARTBEAT_SECONDS)
            self.send("fleet.report", name=self.name, version=snap.version, outcome="rejected", reason=reason)
            return "rejected"
        written = time.perf_counter()
        ok, reason = self._await_proxy(snap.version)
        if not ok:
            if previous is not None:
                snapshot.write_file_atomic(self.snapshot_path, previous)
            log.error("proxy rejected v%s: %s", snap.version, reason)
            self.send("fleet.report", name=self.name, version=snap.version, outcome="rejected", reason=reason)
            return "rejected"
        self.version = snap.version
        if self.unwritten is not None and self.unwritten[0] <= snap.version:
            self.unwritten = None
        log.info(
            "applied v%s: verified and written in %.0f ms, swapped in by the proxy %.0f ms later",
            snap.version, 1000 * (written - started), 1000 * (time.perf_counter() - written),
        )
        self.send("fleet.report", name=self.name, version=snap.version, outcome="applied", reason="")
        return "applied"

    def _read_current(self) -> bytes | None:
        try:
            with open(self.snapshot_path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def _await_proxy(self, version: int) -> tuple[bool, str]:
        """Wait until the proxy processes report serving ``version`` (or rejecting it)."""
        if not self.wait_for_proxy:
            return True, ""
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline:
            status = read_status(self.snapshot_path)
            if status.get("version") == version:
                return True, ""
            rejected = status.get("rejected") or {}
            if rejected.get("version") == version:
                return False, rejected.get("reason") or "rejected by the proxy"
            time.sleep(0.01)
        return False, f"the proxy did not load v{version} within {APPLY_TIMEOUT:.0f} s"

    # --- purges --------------------------------------------------------------------------------

    def handle_purge(self, body: dict) -> bool:
        """Hand a purge to the node's cache: a file in ``<snapshot dir>/purges``. One proxy process
        claims it, deletes what it covers and leaves a receipt in ``purges/done/``; only then is the
        purge reported as done (``fleet.purged``). Returns whether it was applied."""
        folder = Path(self.snapshot_path).parent / "purges"
        folder.mkdir(exist_ok=True)
        name = f"{time.time_ns()}-{body.get('id', 'purge')}.json"
        snapshot.write_file_atomic(str(folder / name), json.dumps(body).encode())
        if self.wait_for_proxy and not self._await_purge(folder / "done" / name):
            log.error("purge %s not applied by the proxy within %.0f s", body.get("id"), APPLY_TIMEOUT)
            return False
        self.send("fleet.purged", name=self.name, purge_id=body.get("id"))
        return True

    @staticmethod
    def _await_purge(receipt: Path) -> bool:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline:
            if receipt.exists():
                return True
            time.sleep(0.01)
        return False

    # --- heartbeats ----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_SECONDS):
            try:
                self.retry_unwritten()
            except Exception:  # the heartbeat must go on
                log.exception("retrying the unwritten snapshot failed")
            self.send("fleet.heartbeat", name=self.name, version=self.version)

    def start_heartbeats(self) -> threading.Thread:
        thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        thread.start()
        threading.Thread(target=self._traffic_loop, name="traffic", daemon=True).start()
        return thread

    # --- traffic: the proxy processes' counters, samples and backend health (see shipping.py) ---

    def _traffic_loop(self) -> None:
        collector = shipping.TrafficCollector(self.snapshot_path)
        while not self._stop_heartbeat.wait(shipping.SHIP_SECONDS):
            try:
                self.ship_traffic(collector)
            except Exception:  # a bad file must not stop shipping
                log.exception("traffic shipping failed")

    def ship_traffic(self, collector: shipping.TrafficCollector) -> bool:
        """One ``traffic.ingest`` with everything the spool holds; its files go once it is sent."""
        body = collector.collect()
        if body is None:
            return False
        try:
            self.control.send_task("traffic.ingest", kwargs={"worker": self.name, **body}, retry=True,
                                   retry_policy={"max_retries": 2, "interval_start": 0.2})
        except Exception as exc:  # the broker is down: the files wait for the next round
            log.warning("could not send traffic: %s", exc)
            return False
        collector.commit()
        return True

    def stop(self) -> None:
        self.should_stop = True
        self._stop_heartbeat.set()


def build(args: argparse.Namespace) -> Agent:
    opts = broker_options(args.broker, args.broker_folder)
    control = Celery("portico-agent", broker=args.broker)
    control.conf.broker_transport_options = opts
    control.conf.task_serializer = "json"
    control.conf.broker_connection_retry_on_startup = True
    connection = Connection(args.broker, transport_options=opts, heartbeat=0)
    secret = os.environ.get("PORTICO_FLEET_KEY", "")
    if not secret:
        raise SystemExit("PORTICO_FLEET_KEY must be set: the agent verifies every snapshot with it")
    return Agent(
        connection=connection,
        control=control,
        name=args.name,
        snapshot_path=args.snapshot,
        fleet_key=snapshot.FleetKey(secret),
        pool=args.pool,
        address=args.address,
        capacity=args.capacity,
        wait_for_proxy=not args.no_proxy,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default=os.environ.get("CELERY_BROKER_URL", "portico-fs://"))
    parser.add_argument("--broker-folder", default=os.environ.get("PORTICO_BROKER_FOLDER"))
    parser.add_argument("--name", default=os.environ.get("PORTICO_WORKER_NAME", socket.gethostname()))
    parser.add_argument("--pool", default="default")
    parser.add_argument("--address", default="")
    parser.add_argument("--capacity", type=int, default=os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m proxyworker.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot", required=True, help="last-known-good snapshot file the proxy watches")
    parser.add_argument("--no-proxy", action="store_true", help="do not wait for a proxy's status file (tests)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PORTICO_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = build(args)
    agent.start_heartbeats()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    try:
        agent.run()
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
