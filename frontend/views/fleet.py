"""The fleet as a tenant sees it: workers with this organization's traffic through each, its
busiest sites, config versions with their rollout, and the diff between two versions restricted to
this organization's sites. Traffic numbers are the organization's own only (``org_traffic``)."""

from __future__ import annotations

from fleet.models import ConfigVersion, Worker
from fleet.selectors import is_online, rollout_status, version_diff
from traffic.selectors import Tally, org_traffic

from ..org_view import OrgView

SHOWN_VERSIONS = 20
TOP_SITES = 10


class FleetView(OrgView):
    def get(self, request):
        traffic = org_traffic(self.org, "1h")
        workers = [(w, is_online(w), traffic.by_worker.get(w.name, Tally())) for w in Worker.objects.order_by("name")]
        versions = list(ConfigVersion.objects.order_by("-number").only("number", "created_at", "size", "changes")[:SHOWN_VERSIONS])
        rollouts = [(v, rollout_status(v.number)) for v in versions]
        diff, diff_error = None, ""
        old_n, new_n = request.GET.get("from", ""), request.GET.get("to", "")
        if old_n and new_n:
            old = ConfigVersion.objects.filter(number=old_n).first() if old_n.isdigit() else None
            new = ConfigVersion.objects.filter(number=new_n).first() if new_n.isdigit() else None
            if old is None or new is None:
                diff_error = "Choose two existing versions."
            else:
                diff = version_diff(old, new, organization_id=str(self.org.pk))
        elif len(versions) >= 2:
            old_n, new_n = str(versions[1].number), str(versions[0].number)
        return self.page(
            "frontend/fleet.html",
            workers=workers,
            traffic=traffic,
            top_sites=traffic.sites[:TOP_SITES],
            rollouts=rollouts,
            diff=diff,
            diff_error=diff_error,
            diff_from=old_n,
            diff_to=new_n,
            version_numbers=[v.number for v in versions],
        )
