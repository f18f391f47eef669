"""Per-credential request throttling: one bucket per API token, per signed-in person, or per
client address for unauthenticated calls. DRF answers 429 with ``Retry-After``.

The counters live in Django's default cache: set ``PORTICO_CACHE_URL`` to a Redis URL when several
web processes serve the API, or each process counts on its own.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle
from tenancy.models import ApiToken


class CredentialRateThrottle(SimpleRateThrottle):
    scope = "api"

    def get_rate(self) -> str:
        # Read per request, not once at import as DRF does, so that settings overrides apply.
        return settings.PORTICO_API_RATE

    def get_cache_key(self, request, view) -> str:
        if isinstance(request.auth, ApiToken):
            ident = f"token:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"
