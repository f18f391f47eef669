"""A site's traffic: totals and charts for the last hour, day or week."""

from __future__ import annotations

from traffic import selectors

from ..charts import WINDOW_PHRASES, traffic_charts
from .sites import SiteMixin

WINDOW_LABELS = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
TOP_RULES = 10


class SiteTrafficView(SiteMixin):
    def get(self, request):
        window = request.GET.get("window", "1h")
        if window not in selectors.WINDOWS:  # a hand-edited link: show the default, not an error page
            window = "1h"
        points = selectors.series(self.site, window)
        totals = selectors.summary(self.site, window, points=points)
        requests = totals["requests"]
        return self.page(
            "frontend/sites/traffic.html",
            site=self.site,
            window=window,
            windows=list(WINDOW_LABELS.items()),
            phrase=WINDOW_PHRASES[window],
            totals=totals,
            error_ratio=totals["status"]["5xx"] / requests if requests else None,
            charts=traffic_charts(points, window),
            blocked_by=totals["blocked_by"][:TOP_RULES],
        )
