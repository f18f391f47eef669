"""The audit log: filters, each event's changes, and export of the filtered events."""

from __future__ import annotations

import csv
import datetime as dt
import json

from audit.models import AuditEvent
from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone

from ..forms import AuditFilterForm
from ..org_view import OrgView

EXPORT_FIELDS = [
    "seq", "created_at", "actor_kind", "actor_name", "action", "target_type", "target_id", "target_repr",
    "changes", "ip", "user_agent", "request_id", "hash",
]


class AuditView(OrgView):
    def filtered(self, form: AuditFilterForm):
        events = self.scoped(AuditEvent)
        if not form.is_valid():
            return events.none()
        data = form.cleaned_data
        if data["actor"]:
            events = events.filter(actor_name__icontains=data["actor"])
        if data["action"]:
            events = events.filter(action__startswith=data["action"])
        if data["target"]:
            events = events.filter(target_repr__icontains=data["target"]) | events.filter(
                target_type=data["target"].lower()
            ) | events.filter(target_id=data["target"])
        tz = timezone.get_current_timezone()
        if data["since"]:
            events = events.filter(created_at__gte=dt.datetime.combine(data["since"], dt.time.min, tzinfo=tz))
        if data["until"]:
            events = events.filter(created_at__lt=dt.datetime.combine(data["until"] + dt.timedelta(days=1), dt.time.min, tzinfo=tz))
        return events.order_by("-seq")

    def get(self, request):
        form = AuditFilterForm(request.GET)
        events = self.filtered(form)
        export = request.GET.get("export")
        if export == "csv":
            return _csv(events, self.org.slug)
        if export == "json":
            return _json(events, self.org.slug)
        page = Paginator(events, 50).get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        return self.page(
            "frontend/audit.html",
            form=form,
            page=page,
            query=query.urlencode(),
            actions=self.scoped(AuditEvent).order_by("action").values_list("action", flat=True).distinct(),
        )


def _row(event: AuditEvent) -> dict:
    row = {field: getattr(event, field) for field in EXPORT_FIELDS}
    row["created_at"] = event.created_at.isoformat()
    return row


def _csv(events, slug: str) -> StreamingHttpResponse:
    class Echo:
        def write(self, value):
            return value

    writer = csv.writer(Echo())

    def rows():
        yield writer.writerow(EXPORT_FIELDS)
        for event in events.iterator():
            row = _row(event)
            row["changes"] = json.dumps(row["changes"], sort_keys=True)
            yield writer.writerow([row[f] if row[f] is not None else "" for f in EXPORT_FIELDS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{slug}.csv"'
    return response


def _json(events, slug: str) -> HttpResponse:
    body = json.dumps([_row(e) for e in events.iterator()], indent=1, default=str)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{slug}.json"'
    return response
