"""Run the worker: an embedded mitmproxy Master with only the addons it needs, in N processes.

Each process is one asyncio loop on one core. With ``processes > 1`` the parent forks the workers,
restarts one that dies, and forwards SIGTERM/SIGINT; the workers bind with SO_REUSEPORT so the
kernel spreads connections over them. Each worker polls the snapshot file itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time

from mitmproxy import options
from mitmproxy.addons import errorcheck, next_layer, proxyserver
from mitmproxy.master import Master

from proxyworker import patches, ratelimit
from proxyworker.addons import portico_addons
from proxyworker.addons.metrics import metrics_addon
from proxyworker.health import HealthChecker
from proxyworker.reloader import SnapshotWatcher
from proxyworker.tables import Live

logger = logging.getLogger("proxyworker")

# mitmproxy listens in reverse mode towards a placeholder; the balancer sets the real destination
# of every request. One such listener serves plain HTTP and TLS (the ClientHello is sniffed).
PLACEHOLDER_UPSTREAM = "http://127.0.0.1:9"


@dataclasses.dataclass
class Settings:
    snapshot: str
    http_port: int = 8080
    https_port: int = 8443
    listen_host: str = ""
    processes: int = 0  # 0: one per core
    public_https_port: int | None = None  # port named in HTTP->HTTPS redirects; default https_port
    status_file: str | None = None
    poll_interval: float = 0.05
    max_conns_per_ip: int = 256
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    stream_bodies_over: str = "1m"
    drain_seconds: float = 5.0
    log_level: str = "warning"
    cache_dir: str | None = None  # default: <snapshot dir>/cache, shared by the node's processes
    cache_max_bytes: int = 1024**3
    cache_memory_bytes: int = 64 * 1024**2  # hot entries kept in each process
    metrics: bool = True  # count traffic, keep samples and ship them through the spool
    ship_interval: float = 5.0
    sample_every: int = 100  # keep 1 in N ordinary requests (every blocked or failed one)
    admin_host: str = "127.0.0.1"
    admin_port: int = 0  # /metrics on admin_port + process slot; 0: off
    access_log: str | None = None  # JSON lines to this file, or "-" for stdout
    anonymize_ip: bool = False
    ratelimit_file: str | None = None  # shared token buckets; default under /dev/shm
    ratelimit_redis: str | None = None  # redis:// URL: rate limits across nodes
    event_loop: str = "auto"  # auto (uvloop when installed), uvloop, asyncio
    # Pin process i to core i and take the connections whose packets arrive there (SO_INCOMING_CPU).
    # Off by default: where one core receives every packet, every connection would go to one process.
    cpu_affinity: bool = False
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For / -Proto are believed

    def __post_init__(self) -> None:
        if self.public_https_port is None:
            self.public_https_port = self.https_port
        if self.processes <= 0:
            self.processes = os.cpu_count() or 1
        if self.ratelimit_file is None:
            self.ratelimit_file = ratelimit.default_path(self.snapshot, self.http_port)


def _modes(settings: Settings) -> list[str]:
    host = settings.listen_host
    ports = dict.fromkeys([settings.http_port, settings.https_port])
    return [f"reverse:{PLACEHOLDER_UPSTREAM}@{host + ':' if host else ''}{port}" for port in ports]


def pinned_cores(settings: Settings) -> list[int] | None:
    """The core of each process slot, when processes are pinned: more than one process, no more
    processes than usable cores, and ``cpu_affinity`` on."""
    cores = sorted(os.sched_getaffinity(0))
    if not settings.cpu_affinity or settings.processes < 2 or settings.processes > len(cores):
        return None
    return cores[: settings.processes]


async def run_worker(settings: Settings, slot: int = 0, core: int | None = None) -> None:
    """One worker process: serve until SIGTERM/SIGINT, then stop listening and drain."""
    patches.apply(reuse_port=settings.processes > 1, max_header_bytes=settings.max_header_bytes, incoming_cpu=core)
    logger.info("event loop: %s", type(asyncio.get_running_loop()).__module__.split(".")[0])
    live = Live()
    health = HealthChecker()
    watcher = SnapshotWatcher(settings.snapshot, live, health, settings.status_file, settings.poll_interval)

    opts = options.Options(mode=_modes(settings), http2=True, websocket=True, rawtcp=False)
    master = Master(opts)
    master.addons.add(
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        errorcheck.ErrorCheck(),
        *portico_addons(live, settings, metrics := metrics_addon(settings, live)),
    )
    opts.update(
        connection_strategy="lazy",
        keep_host_header=True,
        stream_large_bodies=settings.stream_bodies_over or None,
        validate_inbound_headers=True,
    )

    watcher.load_initial()
    health.reconcile(live.tables)
    watch_task = asyncio.create_task(watcher.run(), name="snapshot watcher")
    if settings.admin_port and metrics is not None:
        from proxyworker import admin

        await admin.serve_admin(settings.admin_host, settings.admin_port + slot, admin.registry_for(metrics.recorder, live))

    stopping = False

    async def drain_and_stop() -> None:
        ps = master.addons.get("proxyserver")
        await ps.servers.update([])  # stop accepting; connections in flight finish
        deadline = time.monotonic() + settings.drain_seconds
        while ps.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        master.shutdown()

    def on_signal() -> None:
        nonlocal stopping
        if stopping:
            master.shutdown()
            return
        stopping = True
        asyncio.ensure_future(drain_and_stop())

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await master.run()
    finally:
        watch_task.cancel()
        health.stop()


def loop_factory(name: str):
    """The event loop the worker runs on: uvloop's (libuv) when installed, unless asked otherwise."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def _run_one(settings: Settings, slot: int = 0, core: int | None = None) -> int:
    try:
        asyncio.run(run_worker(settings, slot, core), loop_factory=loop_factory(settings.event_loop))
    except OSError as exc:
        logger.error("worker failed: %s", exc)
        return 1
    return 0


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s",
    )
    # Fresh buckets for this run, created before the processes that share them start.
    ratelimit.create(settings.ratelimit_file)
    try:
        if settings.processes == 1:
            return _run_one(settings)
        return _supervise(settings)
    finally:
        ratelimit.remove(settings.ratelimit_file)


# A process that dies again and again is restarted later and later (0.5 s, 1 s, 2 s ... 30 s), so a
# crash loop does not eat a core; one that served this long before dying counts as a fresh start.
RESPAWN_BACKOFF_FIRST = 0.5
RESPAWN_BACKOFF_MAX = 30.0
RESPAWN_STABLE_SECONDS = 30.0


def respawn_delay(deaths_in_a_row: int) -> float:
    """Seconds to wait before replacing a process that died ``deaths_in_a_row`` times without
    serving RESPAWN_STABLE_SECONDS in between: the first is replaced at once."""
    if deaths_in_a_row <= 1:
        return 0.0
    return min(RESPAWN_BACKOFF_MAX, RESPAWN_BACKOFF_FIRST * 2 ** (deaths_in_a_row - 2))


def _supervise(settings: Settings) -> int:
    """Fork `processes` workers, restart any that dies (with a backoff), pass termination signals on.

    The other processes keep serving meanwhile: they share the ports, so the kernel sends new
    connections to them; only connections the dead process had accepted are lost."""
    children: dict[int, float] = {}
    slots: dict[int, int] = {}  # pid -> its slot (admin port offset), reused by its replacement
    deaths: dict[int, int] = {}  # slot -> deaths in a row
    pending: dict[int, float] = {}  # slot -> when its replacement starts
    stopping = False
    cores = pinned_cores(settings)

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            core = cores[slot] if cores else None
            if core is not None:
                os.sched_setaffinity(0, {core})
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            logging.getLogger().handlers[0].setFormatter(
                logging.Formatter(f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s")
            )
            code = _run_one(settings, slot, core)
            os._exit(code)
        children[pid] = time.monotonic()
        slots[pid] = slot

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        pending.clear()
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(settings.processes):
        spawn(slot)
    exit_code = 0
    while children or pending:
        if pending:
            now = time.monotonic()
            for slot, at in list(pending.items()):
                if at <= now:
                    del pending[slot]
                    spawn(slot)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                time.sleep(0.05)
                continue
        else:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        started = children.pop(pid, None)
        slot = slots.pop(pid, 0)
        if started is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        lived = time.monotonic() - started
        if lived < 1.0 and code > 0:
            # Exiting with an error at start-up (port taken, bad option): restarting would only loop.
            # A signal (code < 0: the OOM killer, an operator's kill -9) is not the process's doing.
            logger.error("worker %d exited with %d at start-up; stopping", pid, code)
            exit_code = code or 1
            stop(signal.SIGTERM, None)
            continue
        deaths[slot] = 1 if lived >= RESPAWN_STABLE_SECONDS else deaths.get(slot, 0) + 1
        delay = respawn_delay(deaths[slot])
        how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        logger.error("worker %d %s; starting a new one%s", pid, how, f" in {delay:.1f} s" if delay else "")
        pending[slot] = time.monotonic() + delay
    return exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: python -m proxyworker --help")
