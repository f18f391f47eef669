from __future__ import annotations

from celery import shared_task


@shared_task(name="fleet.publish", ignore_result=True)
def publish() -> int | None:
    from .publisher import publish as _publish

    version = _publish()
    return version.number if version else None
