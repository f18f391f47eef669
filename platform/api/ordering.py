"""``?ordering=``: one of the fields a list names, optionally with a leading ``-``. Anything
else is a 400 that lists the choices, rather than DRF's silent fallback to the default order."""

from __future__ import annotations

from rest_framework import filters, serializers


class StrictOrderingFilter(filters.OrderingFilter):
    def get_ordering(self, request, queryset, view):
        raw = request.query_params.get(self.ordering_param)
        if raw is None:
            return self.get_default_ordering(view)
        allowed = [name for name, _ in self.get_valid_fields(queryset, view, {"request": request})]
        if raw.lstrip("-") not in allowed:
            choices = ", ".join(allowed)
            raise serializers.ValidationError({self.ordering_param: [f"Sort by one of: {choices} (a leading - sorts descending)."]})
        return [raw]
