"""API tokens: create (the token is shown once), scopes, expiry, revoke, last use."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from tenancy import services
from tenancy.models import ApiToken, Role

from ..forms import TokenForm
from ..org_view import OrgView, apply_errors


class TokenListView(OrgView):
    write_role = Role.ADMIN

    def tokens_page(self, form: TokenForm | None = None, **extra):
        return self.page(
            "frontend/tokens.html",
            tokens=self.scoped(ApiToken).select_related("created_by"),
            form=form or TokenForm(),
            **extra,
        )

    def get(self, request):
        return self.tokens_page()

    def post(self, request):
        form = TokenForm(request.POST)
        if form.is_valid():
            try:
                row, token = services.token_create(
                    actor=self.actor, org=self.org, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"],
                    expires_at=form.expires_at(),
                )
            except ValidationError as exc:
                if "expires_at" in getattr(exc, "error_dict", {}):
                    exc = ValidationError({"expires_on": exc.error_dict["expires_at"]})
                apply_errors(form, exc)
            else:
                response = self.tokens_page(new_token=token, new_row=row)
                response["Cache-Control"] = "no-store"  # the secret must not stay in any cache
                return response
        return self.tokens_page(form)


class TokenRevokeView(OrgView):
    write_role = Role.ADMIN

    def post(self, request, token_id: int):
        token = self.get_scoped(ApiToken, pk=token_id)
        services.token_revoke(actor=self.actor, org=self.org, token=token)
        return redirect("frontend:tokens", org_slug=self.org.slug)
