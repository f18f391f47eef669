"""``Authorization: Bearer pt_...``: organization-scoped API tokens.

``request.auth`` is the ``ApiToken`` (``Actor.from_request`` acts as the token) and
``request.user`` is ``AnonymousUser``: a token never borrows the rights its creator has elsewhere.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from tenancy.models import ApiToken
from tenancy.services import token_authenticate


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request) -> tuple[AnonymousUser, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # no token: session authentication may still apply
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Give the token as: Authorization: Bearer pt_...")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("This token is not valid.")
        token = token_authenticate(raw)
        if token is None:
            # One answer for unknown, revoked and expired tokens: nothing to learn by probing.
            raise exceptions.AuthenticationFailed("This token is not valid, was revoked or has expired.")
        return AnonymousUser(), token

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to requests without valid credentials.
        return f'{self.keyword} realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "pt_<lookup>_<secret>",
            "description": "An organization's API token (read or write scope), sent as `Authorization: Bearer pt_...`. "
            "A token only reaches its own organization.",
        }
