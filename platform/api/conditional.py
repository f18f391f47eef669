"""ETags on detail responses, ``If-None-Match`` on reads and ``If-Match`` on writes (RFC 9110 §13).

The ETag is a hash of the object's JSON representation, so anything a client can see changing
(a renamed site, an added hostname) changes it. Writes compare it under a row lock, so two
clients that read the same version cannot both write over it: the second gets 412.
"""

from __future__ import annotations

import hashlib
import json

from rest_framework.utils.encoders import JSONEncoder

from .exceptions import PreconditionFailed


def etag_of(data) -> str:
    body = json.dumps(data, sort_keys=True, cls=JSONEncoder, separators=(",", ":"))
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'


def _tags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def check_if_match(request, current_etag: str) -> None:
    """412 unless the client's ``If-Match`` names the current ETag (or ``*``). No header: no check."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    tags = _tags(header)
    # §13.1.1: If-Match uses the strong comparison, so weak tags (W/"...") never match.
    if "*" in tags or current_etag in tags:
        return
    raise PreconditionFailed()


def not_modified(request, current_etag: str) -> bool:
    """True when ``If-None-Match`` names the current ETag (weak comparison, §13.1.2)."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = [t.removeprefix("W/") for t in _tags(header)]
    return "*" in tags or current_etag in tags
