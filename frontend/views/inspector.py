"""The request inspector of a site: recent sampled, blocked and failed requests, one request's
headers (secrets masked on the worker), rule, backend and timing, and its replay."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from edge.models import Backend
from traffic import replay
from traffic.models import RequestSample

from proxyworker.traffic import mask_headers

from ..org_view import apply_errors
from .sites import SiteMixin

PAGE_SIZE = 50
STATUS_CLASSES = [("", "Any status"), ("2", "2xx"), ("3", "3xx"), ("4", "4xx"), ("5", "5xx")]


class InspectorFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "All"), *RequestSample.Kind.choices], required=False, label="Kind")
    status = forms.ChoiceField(choices=STATUS_CLASSES, required=False, label="Status")
    path = forms.CharField(required=False, max_length=200, label="Path contains")


class ReplayForm(forms.Form):
    backend = forms.ChoiceField(label="Backend")
    confirm = forms.BooleanField(required=False, label="Send it: I understand this can change data on the origin")

    def __init__(self, *args, backends, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["backend"].choices = [
            (str(b.pk), f"{b} (pool {b.pool}{'' if b.state == Backend.State.ENABLED else ', ' + b.get_state_display().lower()})")
            for b in backends
        ]


def timing_segments(parts: list[tuple[str, float | None, str]], total: float | None) -> dict:
    """Consecutive phases as rectangles of a 1000-unit wide SVG bar: x and width per phase, drawn
    with attributes (the CSP forbids inline styles). Phases without a value are skipped."""
    known = [(label, ms, css) for label, ms, css in parts if ms is not None]
    scale = max(total or 0.0, sum(ms for _, ms, _ in known)) or 1.0
    x = 0.0
    segments = []
    for label, ms, css in known:
        width = 1000 * ms / scale
        segments.append({"label": label, "ms": ms, "css": css, "x": round(x, 1), "width": round(max(width, 1.0), 1)})
        x += width
    return {"segments": segments, "total": total}


def sample_timing(sample: RequestSample) -> dict:
    t = sample.timing or {}
    wait, connect = t.get("upstream_wait"), t.get("connect")
    parts = [("receive", t.get("receive"), "receive")]
    if connect is not None and wait is not None:
        # The upstream connection opens while the request waits for its answer: drawn as the start
        # of the wait. None when a kept-alive connection was reused.
        parts += [("connect", min(connect, wait), "connect"), ("upstream wait", max(wait - connect, 0.0), "wait")]
    else:
        parts += [("connect", connect, "connect"), ("upstream wait", wait, "wait")]
    parts.append(("send", t.get("send"), "send"))
    return timing_segments(parts, t.get("total"))


class InspectorView(SiteMixin):
    def get(self, request):
        form = InspectorFilterForm(request.GET)
        samples = self.scoped(RequestSample).filter(site=self.site).order_by("-at", "-pk")
        if form.is_valid():
            data = form.cleaned_data
            if data["kind"]:
                samples = samples.filter(kind=data["kind"])
            if data["status"]:
                low = int(data["status"]) * 100
                samples = samples.filter(status__gte=low, status__lt=low + 100)
            if data["path"]:
                samples = samples.filter(path__icontains=data["path"])
        page = Paginator(samples, PAGE_SIZE).get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        backends = {str(b.pk): b for b in self.scoped(Backend).filter(site=self.site)}
        rows = [(s, backends.get(s.backend_id)) for s in page]
        return self.page("frontend/sites/inspector.html", site=self.site, form=form, page=page, rows=rows,
                         query=query.urlencode())


class SampleView(SiteMixin):
    def sample(self, sample_id: int) -> RequestSample:
        return self.get_scoped(RequestSample, pk=sample_id, site=self.site)

    def sample_page(self, sample: RequestSample, form: ReplayForm | None = None, result=None):
        backends = list(self.scoped(Backend).filter(site=self.site))
        if form is None:
            chosen = replay.default_backend(sample)
            form = ReplayForm(backends=backends, initial={"backend": str(chosen.pk) if chosen else ""})
        plan = replay.plan_replay(sample)
        return self.page(
            "frontend/sites/sample.html",
            site=self.site,
            sample=sample,
            # Masked on the worker already; masked again here so that a sample from a worker that
            # missed one (an older version, a new secret-looking name) never shows it in clear.
            request_headers=mask_headers(sample.request_headers),
            response_headers=mask_headers(sample.response_headers),
            backend=next((b for b in backends if str(b.pk) == sample.backend_id), None),
            timing=sample_timing(sample),
            form=form,
            needs_confirm=plan.method not in replay.SAFE_METHODS,
            plan=plan,
            result=result,
            result_timing=timing_segments(
                [(label, result.timing.get(key), key) for label, key in
                 (("connect", "connect"), ("TLS", "tls"), ("wait", "wait"), ("read", "read"))],
                result.timing.get("total"),
            ) if result is not None else None,
        )

    def get(self, request, sample_id: int):
        return self.sample_page(self.sample(sample_id))


class SampleReplayView(SampleView):
    def post(self, request, sample_id: int):
        sample = self.sample(sample_id)
        backends = list(self.scoped(Backend).filter(site=self.site))
        form = ReplayForm(request.POST, backends=backends)
        result = None
        if form.is_valid():
            backend = next(b for b in backends if str(b.pk) == form.cleaned_data["backend"])
            try:
                result = replay.replay_sample(actor=self.actor, org=self.org, sample=sample, backend=backend,
                                              confirm=form.cleaned_data["confirm"])
            except ValidationError as exc:
                apply_errors(form, exc)
            except replay.ReplayRateLimited as exc:
                form.add_error(None, str(exc))
        return self.sample_page(sample, form=form, result=result)
