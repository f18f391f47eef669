"""``/metrics`` of the control plane, in the Prometheus text format.

Values are read from the database at scrape time (a custom collector), so every web process gives
the same answer: the fleet, rollouts, open alerts, and how fresh the traffic rollups are.
Access: from loopback, or with ``Authorization: Bearer <PORTICO_METRICS_TOKEN>``; anyone else 404s.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db.models import Count, Max
from django.http import Http404, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class PlatformCollector:
    def collect(self):
        from fleet.models import ConfigVersion, Worker
        from fleet.selectors import online_workers

        from .models import Alert, TrafficMinute

        online = GaugeMetricFamily("portico_workers_online", "Workers that sent a heartbeat recently")
        online.add_metric([], online_workers().count())
        versions = GaugeMetricFamily("portico_worker_config_version", "Config version each worker applied", labels=["worker"])
        for name, version in Worker.objects.values_list("name", "version"):
            versions.add_metric([name], version)
        latest = GaugeMetricFamily("portico_config_version_latest", "Newest published config version")
        latest.add_metric([], ConfigVersion.objects.aggregate(n=Max("number"))["n"] or 0)
        alerts = GaugeMetricFamily("portico_alerts_open", "Open alerts by kind", labels=["kind"])
        for row in Alert.objects.filter(resolved_at__isnull=True).values("kind").annotate(n=Count("id")):
            alerts.add_metric([row["kind"]], row["n"])
        newest = TrafficMinute.objects.aggregate(m=Max("minute"))["m"]
        lag = GaugeMetricFamily("portico_traffic_rollup_age_seconds", "Age of the newest traffic minute stored")
        lag.add_metric([], (timezone.now() - newest).total_seconds() if newest else float("nan"))
        yield from (online, versions, latest, alerts, lag)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(PlatformCollector())


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    return request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")


def metrics(request):
    if not _allowed(request):
        raise Http404()
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
