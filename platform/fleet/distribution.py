"""Getting snapshots to the proxy workers, and hearing back from them.

Each worker's agent consumes a durable queue of its own, ``portico.agent.<name>``. A publish puts
the signed envelope on the queue of every worker seen recently. Why not a fanout exchange: on
Redis, fanout is pub/sub and an agent that is down misses the message, and kombu's filesystem
transport keeps exchange bindings in each process's memory. A per-agent queue is store-and-forward
on every transport, and a worker that was away longer gets the newest version when it says hello.

Agents answer with Celery tasks (``fleet.hello``, ``fleet.report``, ``fleet.heartbeat``) on the
control plane's default queue; the agent never touches the database.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.utils import timezone
from kombu import Queue

from proxyworker import snapshot
from proxyworker.agent import AGENT_QUEUE_PREFIX, HEARTBEAT_SECONDS, snapshot_message

from .models import ConfigVersion, Rollout, Worker

log = logging.getLogger(__name__)

# A worker silent for this long is offline: it gets no broadcast and does not count in rollouts.
OFFLINE_AFTER = dt.timedelta(seconds=HEARTBEAT_SECONDS * 3)
# Workers silent for longer than this are not sent broadcasts at all (their queue would only
# grow); they catch up through hello when they return.
BROADCAST_HORIZON = dt.timedelta(minutes=10)


def agent_queue(name: str) -> Queue:
    return Queue(f"{AGENT_QUEUE_PREFIX}{name}", durable=True, routing_key=f"{AGENT_QUEUE_PREFIX}{name}")


def send_to_worker(name: str, message: dict) -> None:
    from config.celery import app

    queue = agent_queue(name)
    with app.producer_or_acquire() as producer:
        producer.publish(
            message,
            exchange="",
            routing_key=queue.name,
            declare=[queue],
            serializer="json",
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5},
        )


def recent_workers():
    return Worker.objects.filter(last_heartbeat__gte=timezone.now() - BROADCAST_HORIZON)


def broadcast(number: int, envelope: str) -> int:
    """Send version ``number`` to every worker seen recently. Returns how many were sent."""
    sent = 0
    message = snapshot_message(number, envelope)
    for name in recent_workers().values_list("name", flat=True):
        try:
            send_to_worker(name, message)
            sent += 1
        except Exception:  # the broker is down: the worker catches up on its next hello
            log.exception("could not send v%s to worker %s", number, name)
    return sent


def broadcast_message(message: dict) -> list[str]:
    """Send a non-snapshot message (a cache purge) to every recent worker; their names."""
    names = list(recent_workers().values_list("name", flat=True))
    for name in names:
        send_to_worker(name, message)
    return names


def current_challenges() -> list[snapshot.AcmeChallenge]:
    """Pending ACME HTTP-01 tokens ride in the snapshot so every worker can answer them."""
    try:
        from certs.selectors import pending_challenges
    except ImportError:
        return []
    return pending_challenges()


# --- what agents tell us --------------------------------------------------------------------------


def worker_hello(*, name: str, pool: str, address: str, capacity: int, version: int) -> Worker:
    """A worker started or reconnected: record it and send the newest version if it lacks it."""
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name=name,
        defaults={"pool": pool, "address": address, "capacity": capacity, "version": version, "started_at": now, "last_heartbeat": now},
    )
    latest = ConfigVersion.objects.order_by("-number").first()
    if latest is not None and latest.number > version:
        send_to_worker(name, snapshot_message(latest.number, latest.envelope))
    _send_missed_purges(name)
    return worker


def _send_missed_purges(name: str) -> None:
    """Purges that went out while this worker was away (left out of the broadcast) reach it on its
    next hello or heartbeat, whichever the control plane handles first."""
    try:
        from edge.purges import send_missed
    except ImportError:
        return
    send_missed(worker_name=name)


def worker_heartbeat(*, name: str, version: int) -> None:
    updated = Worker.objects.filter(name=name).update(last_heartbeat=timezone.now(), version=version)
    if not updated:  # the control plane lost the row (restored database): treat as hello
        worker_hello(name=name, pool="default", address="", capacity=1, version=version)
        return
    _send_missed_purges(name)


def worker_report(*, name: str, version: int, outcome: str, reason: str = "") -> None:
    worker, _ = Worker.objects.get_or_create(name=name)
    Rollout.objects.update_or_create(worker=worker, version=version, defaults={"outcome": outcome, "reason": reason[:2000]})
    fields = {"last_heartbeat": timezone.now()}
    if outcome == Rollout.Outcome.APPLIED and version > worker.version:
        fields["version"] = version
    Worker.objects.filter(pk=worker.pk).update(**fields)


def worker_purged(*, name: str, purge_id: str | None) -> None:
    """A worker confirmed a cache purge (purge status is kept by the cache's purge records)."""
    try:
        from edge.purges import purge_confirmed
    except ImportError:
        return
    purge_confirmed(worker_name=name, purge_id=purge_id)
