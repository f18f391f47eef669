from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.filter
def as_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)
