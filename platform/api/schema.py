"""The OpenAPI schema: drf-spectacular's, plus what every Portico endpoint shares — the error
answers, the conditional and idempotency headers, and the throttling answer — added here once so
that no endpoint can leave them out of the documentation."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from .idempotency import KEY_FORMAT

ERROR_COMPONENTS = {}
ERROR_COMPONENTS["Error"] = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What went wrong, for a person to read."}},
    "required": ["detail"],
}
_VALIDATIONERROR_COMPONENTS = {}
ERROR_COMPONENTS["Error"] = {
    "type": "object",
    "description": "The fields that are wrong, each with a list of reasons a person can act on "
    "(nested for lists and objects). Errors that concern no single field are under `non_field_errors`.",
    "additionalProperties": {},
    "example": {"address": ["'http://10.0.0.1' is not a host: give a hostname or IP address, without scheme or path."]},
}
_ERROR = {"$ref": "#/components/schemas/Error"}
_VALIDATION_ERROR = {"$ref": "#/components/schemas/ValidationError"}

_ERRORS = {
    "400": "The request is invalid: see the fields named in the body.",
    "401": "No valid credentials: send `Authorization: Bearer pt_...` or sign in.",
    "403": "Your role (or your token's scope) does not allow this.",
    "404": "No such object in this organization (also the answer for organizations you are not a member of).",
    "412": "`If-Match` names an ETag that is no longer current: the object changed since you read it.",
    "422": "This `Idempotency-Key` was already used with a different request.",
    "429": "Too many requests for this token (or person): wait `Retry-After` seconds.",
}

_UNSAFE = ("PUT", "PATCH", "DELETE")


class PorticoSchema(AutoSchema):
    def _is_detail(self) -> bool:
        return bool(getattr(self.view, "detail", False))

    def get_tags(self):
        # One section per kind of object (Sites, Backends, ...), not one per URL prefix.
        serializer = getattr(self.view, "serializer_class", None)
        model = getattr(getattr(serializer, "Meta", None), "model", None)
        if model is not None:
            return [str(model._meta.verbose_name_plural).capitalize()]
        return super().get_tags()

    def get_override_parameters(self):
        params = list(super().get_override_parameters())
        if "{org_slug}" in self.path:
            params.append(
                OpenApiParameter(
                    "org_slug",
                    OpenApiTypes.STR,
                    OpenApiParameter.PATH,
                    pattern=r"^[-a-zA-Z0-9_]+$",
                    description="The organization's slug, as listed by /api/v1/orgs/.",
                )
            )
        if "{site_pk}" in self.path:
            params.append(OpenApiParameter("site_pk", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The site's id."))
        ordering_fields = getattr(self.view, "ordering_fields", None)
        if self.method == "GET" and getattr(self.view, "action", None) == "list" and ordering_fields:
            default = ",".join(getattr(self.view, "ordering", []) or [])
            params.append(
                OpenApiParameter(
                    "ordering",
                    OpenApiTypes.STR,
                    OpenApiParameter.QUERY,
                    enum=[f for name in ordering_fields for f in (name, f"-{name}")],
                    description=f"Sort by this field; a leading - sorts descending. Default: {default}.",
                )
            )
        if self.method in _UNSAFE:
            params.append(
                OpenApiParameter(
                    "If-Match",
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    description="The ETag you read. When given, the write happens only if the object is still that "
                    "version, else 412.",
                )
            )
        if self.method == "POST":
            params.append(
                OpenApiParameter(
                    "Idempotency-Key",
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    pattern=rf"^{KEY_FORMAT.pattern}$",
                    description="Any unique string (a UUID). Retrying with the same key and body within 24 h replays the "
                    "first answer instead of acting twice; the same key with another body is a 422.",
                )
            )
        if self.method == "GET" and self._is_detail():
            params.append(
                OpenApiParameter(
                    "If-None-Match",
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    description="An ETag you hold: the answer is 304 with no body while it is still current.",
                )
            )
        if self._is_detail() or self.method == "POST":
            params.append(
                OpenApiParameter(
                    "ETag",
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    response=["200", "201", "202", "304"],
                    description="The version of the object returned; send it back as If-Match on writes.",
                )
            )
        params.append(
            OpenApiParameter(
                "Retry-After",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                response=["429"],
                description="Seconds to wait before the next request.",
            )
        )
        return params

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        create_status = str(getattr(self.view, "create_status", 201))
        if self._is_create_operation() and "201" in responses and create_status != "201":
            body = responses.pop("201")
            body["description"] = body.get("description") or "Accepted: stored and audited; the effect follows."
            responses[create_status] = body
        codes = ["400", "401", "403", "404", "429"]  # 400: a bad body, filter, parameter or header
        if self.method in _UNSAFE:
            codes.append("412")
        if self.method == "POST":
            codes.append("422")
        for code in sorted(codes):
            if code in responses:
                continue
            schema = _VALIDATION_ERROR if code == "400" else _ERROR
            response = self._get_response_for_code(schema, code, media_types=["application/json"])
            response["description"] = _ERRORS[code]
            responses[code] = response
        if self.method == "GET" and self._is_detail() and "304" not in responses:
            responses["304"] = {"description": "Not modified: your If-None-Match ETag is current."}
        return responses


def add_components(result, generator, request, public):
    """Add the error bodies and the policy settings' JSON Schemas (built from the snapshot
    contract) as components."""
    from .endpoints.policies import POLICY_SETTINGS_COMPONENTS

    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(POLICY_SETTINGS_COMPONENTS)
    schemas.update(ERROR_COMPONENTS)
    return result
