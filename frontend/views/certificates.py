"""Certificates: the state of every hostname, issuance followed step by step, upload, revoke,
delete, and the internal CA's root for developers to trust."""

from __future__ import annotations

from certs.models import Certificate
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from tenancy.models import Role

from ..certificate_status import issuance_steps
from ..forms import CertificateUploadForm
from ..org_view import OrgView, apply_errors


class CertificatesView(OrgView):
    def certificates_page(self, upload_form: CertificateUploadForm | None = None, error: str = ""):
        from certs import selectors
        certificates = list(self.scoped(Certificate).exclude(status=Certificate.Status.REPLACED).order_by("-created_at"))
        return self.page(
            "frontend/certificates.html",
            hostnames=selectors.hostname_tls(self.org),
            certificates=certificates,
            in_flight=[(c, issuance_steps(c)) for c in certificates if c.in_flight],
            upload_form=upload_form or CertificateUploadForm(),
            error=error,
        )

    def get(self, request):
        return self.certificates_page()

    def post(self, request):
        from certs import services as cert_services

        action = request.POST.get("action")
        try:
            if action == "upload":
                form = CertificateUploadForm(request.POST)
                if not form.is_valid():
                    return self.certificates_page(upload_form=form)
                try:
                    cert_services.certificate_upload(actor=self.actor, org=self.org, **form.cleaned_data)
                except ValidationError as exc:
                    apply_errors(form, exc)
                    return self.certificates_page(upload_form=form)
            elif action == "request":
                cert_services.certificate_request(actor=self.actor, org=self.org, hostnames=[request.POST.get("hostname", "")])
            elif action == "revoke":
                cert = self.get_scoped(Certificate, pk=request.POST.get("certificate"))
                cert_services.certificate_revoke(actor=self.actor, org=self.org, certificate=cert)
            elif action == "delete":
                cert = self.get_scoped(Certificate, pk=request.POST.get("certificate"))
                cert_services.certificate_delete(actor=self.actor, org=self.org, certificate=cert)
        except ValidationError as exc:
            return self.certificates_page(error=" ".join(exc.messages))
        return redirect("frontend:certificates", org_slug=self.org.slug)


class CertificateProgressView(OrgView):
    """The issuances under way, polled by htmx while any runs."""

    def get(self, request):
        certificates = self.scoped(Certificate).filter(status__in=Certificate.IN_FLIGHT).order_by("-created_at")
        return self.page("frontend/_certificate_progress.html", in_flight=[(c, issuance_steps(c)) for c in certificates])


class InternalCARootView(OrgView):
    write_role = Role.VIEWER

    def get(self, request):
        from certs import selectors

        response = HttpResponse(selectors.internal_ca_root_pem(), content_type="application/x-pem-file")
        response["Content-Disposition"] = 'attachment; filename="portico-internal-root.pem"'
        return response
