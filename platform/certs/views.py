"""The internal CA's root, for developers to download and trust. Public by nature: a root
certificate holds no secret."""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.http import require_GET

from .selectors import internal_ca_root_pem


@require_GET
def internal_ca_root(request):
    response = HttpResponse(internal_ca_root_pem(), content_type="application/x-pem-file")
    response["Content-Disposition"] = 'attachment; filename="portico-internal-root.pem"'
    return response
