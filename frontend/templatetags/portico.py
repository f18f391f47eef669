from __future__ import annotations

import json

from django import template

from .. import charts

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.filter
def as_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@register.filter
def count(value) -> str:
    """1.5k, 3.4M: how the charts write numbers."""
    return charts.format_count(value or 0)


@register.filter
def ms(value) -> str:
    return "–" if value is None else charts.format_ms(value)


@register.filter
def percent(ratio) -> str:
    return "–" if ratio is None else charts.format_percent(ratio)
