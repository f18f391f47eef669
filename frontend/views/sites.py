"""Sites: the list, creating one in a single form, and the site page with everything on it."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.forms.models import model_to_dict
from django.shortcuts import redirect
from django.urls import reverse
from edge import services
from edge.models import Backend, Hostname, Policy, Route, Site
from traffic.selectors import backends_with_health

from ..certificate_status import certificates_by_hostname
from ..forms import (
    POLICY_EXAMPLES,
    SITE_SECTION_FORMS,
    SITE_SECTIONS,
    BackendForm,
    BackendStateForm,
    BackendWeightForm,
    HostnameForm,
    PolicyEditForm,
    PolicyForm,
    RouteForm,
    SiteCreateForm,
)
from ..org_view import OrgView, apply_errors
from ..rollout import current_rollout


class SiteListView(OrgView):
    def get(self, request):
        sites = self.scoped(Site).prefetch_related("hostnames", "backends")
        return self.page(
            "frontend/sites/list.html",
            sites=sites,
            certificates=certificates_by_hostname(self.org),
            rollout=current_rollout(),
        )


class SiteCreateView(OrgView):
    form_only = True

    def get(self, request):
        return self.page("frontend/sites/create.html", form=SiteCreateForm())

    def post(self, request):
        form = SiteCreateForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                site = services.site_create(
                    actor=self.actor,
                    org=self.org,
                    name=data["name"],
                    hostnames=form.hostname_list(),
                    tls_mode=data["tls_mode"],
                    backends=[{"address": data["address"], "port": data["port"], "scheme": data["scheme"]}],
                )
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect("frontend:site", org_slug=self.org.slug, site_id=site.pk)
        return self.page("frontend/sites/create.html", form=form)


class SiteMixin(OrgView):
    """A view of one site of the organization (another tenant's site: 404)."""

    def dispatch(self, request, *args, **kwargs):
        self.site_id = kwargs.pop("site_id")
        return super().dispatch(request, *args, **kwargs)

    @property
    def site(self) -> Site:
        if not hasattr(self, "_site"):
            self._site = self.get_scoped(Site, pk=self.site_id)
        return self._site

    def site_url(self, anchor: str = "") -> str:
        url = reverse("frontend:site", kwargs={"org_slug": self.org.slug, "site_id": self.site.pk})
        return f"{url}#{anchor}" if anchor else url

    def site_page(self, **bound):
        """The site page; ``bound`` replaces an empty form with the one that failed."""
        site = self.site
        forms = {
            "hostname_form": HostnameForm(),
            "backend_form": BackendForm(initial={"pool": "default", "port": 80, "weight": 1, "tls_verify": True}),
            "route_form": RouteForm(),
            "policy_form": PolicyForm(initial={"kind": Policy.Kind.CACHE, "settings": _pretty(POLICY_EXAMPLES[Policy.Kind.CACHE])}),
        }
        sections = [
            {"key": key, "title": title, "form": SITE_SECTION_FORMS[key](initial=model_to_dict(site, fields=fields))}
            for key, (title, fields) in SITE_SECTIONS.items()
        ]
        for section in sections:
            if f"section_{section['key']}" in bound:
                section["form"] = bound.pop(f"section_{section['key']}")
        policy_forms = {}
        for policy in self.scoped(Policy).filter(site=site):
            policy_forms[policy.pk] = bound.pop(f"policy_{policy.pk}", None) or PolicyEditForm(
                initial={"name": policy.name, "enabled": policy.enabled, "settings": _pretty(policy.settings)}, prefix=str(policy.pk)
            )
        forms.update(bound)
        policies = [(p, policy_forms[p.pk]) for p in self.scoped(Policy).filter(site=site)]
        return self.page(
            "frontend/sites/detail.html",
            site=site,
            hostnames=self.scoped(Hostname).filter(site=site),
            backends=backends_with_health(site, self.scoped(Backend).filter(site=site)),
            routes=self.scoped(Route).filter(site=site),
            policies=policies,
            sections=sections,
            certificates=certificates_by_hostname(self.org),
            rollout=current_rollout(),
            policy_examples={str(k): _pretty(v) for k, v in POLICY_EXAMPLES.items()},
            **forms,
        )


def _pretty(value) -> str:
    return json.dumps(value, indent=2)


class SiteDetailView(SiteMixin):
    def get(self, request):
        return self.site_page()


class SiteLiveView(SiteMixin):
    """The parts of the site page that change by themselves, polled by htmx: backends and rollout."""

    def get(self, request):
        return self.page(
            "frontend/sites/_live.html",
            site=self.site,
            backends=backends_with_health(self.site, self.scoped(Backend).filter(site=self.site)),
            rollout=current_rollout(),
        )


class SiteSectionView(SiteMixin):
    def post(self, request, section: str):
        if section not in SITE_SECTION_FORMS:
            return redirect(self.site_url())
        form = SITE_SECTION_FORMS[section](request.POST)
        if form.is_valid():
            try:
                services.site_update(actor=self.actor, org=self.org, site=self.site, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url(section))
        return self.site_page(**{f"section_{section}": form})


class SiteStateView(SiteMixin):
    def post(self, request, action: str):
        if action == "pause":
            services.site_pause(actor=self.actor, org=self.org, site=self.site)
        elif action == "resume":
            services.site_resume(actor=self.actor, org=self.org, site=self.site)
        return redirect(self.site_url())


class SiteDeleteView(SiteMixin):
    form_only = True

    def get(self, request):
        return self.page("frontend/sites/delete.html", site=self.site, error="")

    def post(self, request):
        if request.POST.get("confirm", "").strip() != self.site.name:
            return self.page("frontend/sites/delete.html", site=self.site, error="Type the name of the site exactly to delete it.")
        services.site_delete(actor=self.actor, org=self.org, site=self.site)
        return redirect("frontend:sites", org_slug=self.org.slug)


class HostnameAddView(SiteMixin):
    def post(self, request):
        form = HostnameForm(request.POST)
        if form.is_valid():
            try:
                services.hostname_add(actor=self.actor, org=self.org, site=self.site, name=form.cleaned_data["name"])
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url("hostnames"))
        return self.site_page(hostname_form=form)


class HostnameRemoveView(SiteMixin):
    def post(self, request, hostname_id: int):
        hostname = self.get_scoped(Hostname, pk=hostname_id, site=self.site)
        try:
            services.hostname_remove(actor=self.actor, org=self.org, hostname=hostname)
        except ValidationError as exc:
            return self.site_page(hostname_error=" ".join(exc.messages))
        return redirect(self.site_url("hostnames"))


class BackendAddView(SiteMixin):
    def post(self, request):
        form = BackendForm(request.POST)
        if form.is_valid():
            try:
                services.backend_create(actor=self.actor, org=self.org, site=self.site, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url("backends"))
        return self.site_page(backend_form=form)


class BackendUpdateView(SiteMixin):
    """Change one backend's weight, or its state (enable, drain, disable)."""

    def post(self, request, backend_id):
        backend = self.get_scoped(Backend, pk=backend_id, site=self.site)
        form = BackendStateForm(request.POST) if "state" in request.POST else BackendWeightForm(request.POST)
        if form.is_valid():
            try:
                services.backend_update(actor=self.actor, org=self.org, backend=backend, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url("backends"))
        errors = "; ".join(f"{backend}: {m}" for messages in form.errors.values() for m in messages)
        return self.site_page(backend_error=errors)


class BackendRemoveView(SiteMixin):
    def post(self, request, backend_id):
        backend = self.get_scoped(Backend, pk=backend_id, site=self.site)
        services.backend_delete(actor=self.actor, org=self.org, backend=backend)
        return redirect(self.site_url("backends"))


class RouteAddView(SiteMixin):
    def post(self, request):
        form = RouteForm(request.POST)
        if form.is_valid():
            try:
                services.route_create(actor=self.actor, org=self.org, site=self.site, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url("routes"))
        return self.site_page(route_form=form)


class RouteRemoveView(SiteMixin):
    def post(self, request, route_id: int):
        route = self.get_scoped(Route, pk=route_id, site=self.site)
        services.route_delete(actor=self.actor, org=self.org, route=route)
        return redirect(self.site_url("routes"))


class PolicyAddView(SiteMixin):
    def post(self, request):
        form = PolicyForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.policy_create(
                    actor=self.actor, org=self.org, site=self.site, kind=data["kind"], name=data["name"],
                    settings=data["settings"], enabled=data["enabled"],
                )
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url("policies"))
        return self.site_page(policy_form=form)


class PolicyUpdateView(SiteMixin):
    def post(self, request, policy_id):
        policy = self.get_scoped(Policy, pk=policy_id, site=self.site)
        form = PolicyEditForm(request.POST, prefix=str(policy.pk))
        if form.is_valid():
            try:
                services.policy_update(actor=self.actor, org=self.org, policy=policy, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                return redirect(self.site_url("policies"))
        return self.site_page(**{f"policy_{policy.pk}": form})


class PolicyRemoveView(SiteMixin):
    def post(self, request, policy_id):
        policy = self.get_scoped(Policy, pk=policy_id, site=self.site)
        services.policy_delete(actor=self.actor, org=self.org, policy=policy)
        return redirect(self.site_url("policies"))
