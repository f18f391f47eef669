"""Serializer fields that refer to other objects, always within the URL's organization."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from edge.models import Site
from rest_framework import serializers


class OrgSiteField(serializers.PrimaryKeyRelatedField):
    """A site of the organization in the URL, by id. Another organization's site is answered as
    if it did not exist."""

    default_error_messages = {
        "does_not_exist": "No site {pk_value} in this organization.",
        "incorrect_type": "A site id (a UUID) is expected.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Site.objects.all())  # the model, for the schema; narrowed below
        super().__init__(**kwargs)

    def get_queryset(self):
        view = self.context.get("view")
        org = getattr(view, "org", None)
        return Site.objects.for_org(org) if org is not None else Site.objects.none()

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except (ValueError, TypeError, DjangoValidationError):
            self.fail("incorrect_type", data_type=type(data).__name__)
