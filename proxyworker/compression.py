"""Content codings: negotiation from ``Accept-Encoding`` and the encoders, at configurable levels.

Pure functions shared by the compression addon (which encodes) and the cache (which keys stored
variants by the coding a request would be answered with). mitmproxy's own ``encode()`` uses the
fastest level of each coding; a CDN compresses once and serves the result many times from its
cache, so the policy's levels (defaults: gzip 6, brotli 5, zstd 6) are worth their CPU.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import brotli

try:  # Python 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # mitmproxy depends on the backport below 3.14
    from backports import zstd  # type: ignore[no-redef]

CODINGS = ("zstd", "br", "gzip")


@functools.lru_cache(maxsize=4096)
def _parse_accept_encoding(header: str) -> dict[str, float]:
    """RFC 9110 §12.5.3: ``gzip;q=0.8, br, *;q=0`` -> {"gzip": 0.8, "br": 1.0, "*": 0.0}."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    q = 0.0
        weights[coding] = q
    return weights


@functools.lru_cache(maxsize=4096)
def negotiate(header: str | None, offered: tuple[str, ...]) -> str | None:
    """The coding of ``offered`` (in server preference order) the client wants most, or None.

    A coding the header does not name is acceptable only through ``*``; q=0 means "not acceptable".
    No header at all: identity (RFC 9110 allows any coding then, but old clients send none).
    """
    if not header:
        return None
    weights = _parse_accept_encoding(header)
    star = weights.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:  # ties go to the earlier (preferred) coding
        q = weights.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best


def accepts(header: str | None, coding: str) -> bool:
    """Whether a client sending ``header`` can decode a body in ``coding``."""
    return negotiate(header, (coding,)) == coding


def encoder(coding: str, level: int) -> Callable[[bytes], bytes]:
    if coding == "gzip":

        def gzip_encode(data: bytes) -> bytes:
            # wbits 31: a gzip container (header with mtime 0, CRC trailer), as gzip.compress makes.
            c = zlib.compressobj(level, zlib.DEFLATED, 31)
            return c.compress(data) + c.flush()

        return gzip_encode
    if coding == "br":
        return functools.partial(brotli.compress, quality=level)
    if coding == "zstd":
        return functools.partial(zstd.compress, level=level)
    raise ValueError(f"unknown content coding {coding!r}")


def decode(coding: str, data: bytes) -> bytes:
    """For tests and benchmarks: the inverse of ``encoder``."""
    if coding == "gzip":
        return zlib.decompress(data, 47)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstd.decompress(data)
    raise ValueError(f"unknown content coding {coding!r}")
