from __future__ import annotations

from celery import shared_task
from tenancy.access import Actor
from tenancy.models import Organization

from .services import checkup_run


@shared_task(name="advisor.checkup_all", ignore_result=True)
def checkup_all() -> int:
    """The scheduled check-up of every organization (daily, from beat)."""
    actor = Actor.system("security check-up")
    return sum(len(checkup_run(actor=actor, org=org).opened) for org in Organization.objects.all())
