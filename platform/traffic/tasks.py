"""Celery tasks of traffic. Thin: they call the services."""

from __future__ import annotations

from celery import shared_task

from . import alerts, services


@shared_task(name="traffic.ingest", ignore_result=True)
def ingest(*, worker: str, minutes: list | None = None, samples: list | None = None, backends: list | None = None,
           **_ignored) -> None:
    services.ingest(worker=worker, minutes=minutes or [], samples=samples or [], backends=backends or [])


@shared_task(name="traffic.downsample", ignore_result=True)
def downsample() -> int:
    return services.downsample()


@shared_task(name="traffic.apply_retention", ignore_result=True)
def apply_retention() -> dict:
    return services.apply_retention()


@shared_task(name="traffic.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> None:
    alerts.evaluate()


@shared_task(name="traffic.notify", ignore_result=True)
def notify(*, alert_id: int, event: str) -> None:
    from .models import Alert

    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is not None:
        alerts.deliver(alert, event)
