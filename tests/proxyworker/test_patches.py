"""The worker's replacements inside mitmproxy answer exactly as the originals did."""

from __future__ import annotations

import pytest
from mitmproxy.coretypes.multidict import _MultiDict
from mitmproxy.http import Headers

from proxyworker import patches

FIELDS = [
    (b"Host", b"a.test"),
    (b"Accept", b"text/html"),
    (b"X-Forwarded-For", b"10.0.0.1"),
    (b"x-forwarded-for", b"10.0.0.2"),  # repeated, other case: folded with ", "
    (b"X-Odd", b"caf\xc3\xa9 \xff"),  # UTF-8 and an invalid byte (surrogateescape)
    (b"Empty", b""),
]
NAMES = ["host", "HOST", b"host", "x-forwarded-for", "X-Odd", "x-odd", "empty", "content-length", b"missing", "caf\xe9"]


@pytest.mark.parametrize("name", NAMES)
def test_header_lookups_match_mitmproxys_own(name):
    h = Headers(FIELDS)
    values = h.get_all(name)
    expected = ", ".join(values) if values else None
    assert patches._headers_get(h, name) == expected
    assert patches._headers_get(h, name, "default") == (expected if values else "default")
    assert patches._headers_contains(h, name) == bool(values)
    if values:
        assert patches._headers_getitem(h, name) == _MultiDict.__getitem__(h, name)
    else:
        with pytest.raises(KeyError):
            patches._headers_getitem(h, name)


def test_a_non_string_key_is_never_contained():
    assert patches._headers_contains(Headers(FIELDS), 42) is False
