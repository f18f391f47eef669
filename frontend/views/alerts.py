"""Alerts: incidents, open ones first, and where they are sent (the organization's settings)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.shortcuts import redirect
from tenancy.models import Role
from traffic import alert_settings
from traffic.models import Alert

from ..forms import AlertSettingsForm
from ..org_view import OrgView, apply_errors

STATES = (("", "All"), ("open", "Open"), ("resolved", "Resolved"))


class AlertsView(OrgView):
    write_role = Role.ADMIN  # the settings form; services check again

    def get(self, request):
        return self.alerts_page()

    def post(self, request):
        if request.POST.get("action") == "test":
            return self.send_test(request)
        form = AlertSettingsForm(request.POST)
        if form.is_valid():
            try:
                alert_settings.alert_settings_update(actor=self.actor, org=self.org, **form.changes())
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, "Alert settings saved.")
                return redirect("frontend:alerts", org_slug=self.org.slug)
        return self.alerts_page(settings_form=form)

    def send_test(self, request):
        results = alert_settings.alert_settings_test(actor=self.actor, org=self.org)
        if not results:
            messages.warning(request, "Nothing was sent: alerts are turned off, or there is nobody to send them to.")
        for r in results:
            if r["ok"]:
                messages.success(request, f"Test alert: {r['channel']} sent.")
            else:
                messages.error(request, f"Test alert: {r['channel']} failed: {r.get('error') or r.get('status')}")
        return redirect("frontend:alerts", org_slug=self.org.slug)

    def alerts_page(self, settings_form: AlertSettingsForm | None = None):
        state = self.request.GET.get("state", "")
        kind = self.request.GET.get("kind", "")
        alerts = self.scoped(Alert).select_related("site")
        if state in ("open", "resolved"):
            alerts = alerts.filter(resolved_at__isnull=(state == "open"))
        if kind in Alert.Kind.values:
            alerts = alerts.filter(kind=kind)
        is_open = ExpressionWrapper(Q(resolved_at__isnull=True), output_field=BooleanField())
        alerts = alerts.annotate(is_open_now=is_open).order_by("-is_open_now", "-opened_at", "-pk")
        page = Paginator(alerts, 50).get_page(self.request.GET.get("page"))
        query = self.request.GET.copy()
        query.pop("page", None)
        conf = alert_settings.current(self.org)
        if settings_form is None and self.has_role(Role.ADMIN):
            settings_form = AlertSettingsForm(initial={
                **{f: getattr(conf, f) for f in alert_settings.EDITABLE if f != "webhook_secret"},
                "emails": "\n".join(conf.emails),
            })
        if settings_form is not None:
            state_of_secret = "set" if conf.webhook_secret else "not set"
            field = settings_form.fields["webhook_secret"]
            field.help_text = f"Currently {state_of_secret}; it is never shown. {AlertSettingsForm.SECRET_HELP}"
        return self.page(
            "frontend/alerts.html",
            page=page,
            query=query.urlencode(),
            state=state,
            kind=kind,
            states=STATES,
            kinds=Alert.Kind.choices,
            open_count=self.scoped(Alert).filter(resolved_at__isnull=True).count(),
            conf=conf,
            settings_form=settings_form,
        )
