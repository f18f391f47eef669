"""Celery tasks of the API app."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="api.expire_idempotency_keys", ignore_result=True)
def expire_idempotency_keys() -> int:
    from .idempotency import delete_expired

    return delete_expired()
