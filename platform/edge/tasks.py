"""Celery tasks of the edge app. Thin: they take ids and call a service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="edge.purge_send", ignore_result=True)
def purge_send(purge_id: str) -> int:
    from .purges import purge_send as _send

    return _send(purge_id=purge_id)
