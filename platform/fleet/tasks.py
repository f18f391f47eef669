"""Celery tasks of the fleet: the publish, and what agents report. Thin: they call services."""

from __future__ import annotations

from celery import shared_task

from . import distribution


@shared_task(name="fleet.publish", ignore_result=True)
def publish() -> int | None:
    from .publisher import publish as _publish

    version = _publish()
    return version.number if version else None


@shared_task(name="fleet.hello", ignore_result=True)
def hello(*, name: str, pool: str = "default", address: str = "", capacity: int = 1, version: int = 0) -> None:
    distribution.worker_hello(name=name, pool=pool, address=address, capacity=capacity, version=version)


@shared_task(name="fleet.heartbeat", ignore_result=True)
def heartbeat(*, name: str, version: int = 0) -> None:
    distribution.worker_heartbeat(name=name, version=version)


@shared_task(name="fleet.report", ignore_result=True)
def report(*, name: str, version: int, outcome: str, reason: str = "") -> None:
    distribution.worker_report(name=name, version=version, outcome=outcome, reason=reason)


@shared_task(name="fleet.purged", ignore_result=True)
def purged(*, name: str, purge_id: str | None = None) -> None:
    distribution.worker_purged(name=name, purge_id=purge_id)
