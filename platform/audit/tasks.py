from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from tenancy.models import Organization

from .services import apply_retention as _apply


@shared_task(name="audit.tasks.apply_retention")
def apply_retention() -> int:
    """Prune events past PORTICO_AUDIT_RETENTION_DAYS in every organization (hourly, from beat)."""
    cutoff = timezone.now() - dt.timedelta(days=settings.AUDIT_RETENTION_DAYS)
    return sum(_apply(org=org, older_than=cutoff) for org in Organization.objects.all())
