"""``Idempotency-Key`` on POST: the same key with the same request replays the first answer;
the same key with a different request is a 422.

A POST carrying a key runs in one transaction that starts by inserting the key's row. A second
request with the same key waits on that row's unique index until the first commits (then it
replays the stored answer) or rolls back (then it runs itself). So two concurrent retries never
both act, and a request that failed leaves no row behind and can simply be retried. Only
successful (2xx) answers are stored: an error means nothing was changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from .exceptions import IdempotencyKeyReused
from .models import IdempotencyKey

HEADER = "Idempotency-Key"
TTL = dt.timedelta(hours=24)
REPLAYED_HEADERS = ("ETag", "Location")
KEY_FORMAT = re.compile(r"[ -~]{1,255}")  # as documented in the schema


class Replay(Exception):
    """Raised by ``begin`` to answer with the stored response; the view returns it as is."""

    def __init__(self, response: Response):
        self.response = response


def requested(request) -> bool:
    return request.method == "POST" and "HTTP_IDEMPOTENCY_KEY" in request.META


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True, cls=JSONEncoder, separators=(",", ":"))


def fingerprint(request) -> str:
    body = _canonical(request.data if request.data is not None else {})
    return hashlib.sha256(f"{request.method} {request.get_full_path()}\n{body}".encode()).hexdigest()


def begin(request, actor_ref: str) -> IdempotencyKey | None:
    """Claim the key for this request, or raise ``Replay`` / ``IdempotencyKeyReused``.

    Must run inside the request's transaction (see the module docstring).
    """
    key = request.headers.get(HEADER, "")
    if not KEY_FORMAT.fullmatch(key):
        raise exceptions.ValidationError({HEADER: ["Give a key of 1 to 255 printable ASCII characters, e.g. a UUID."]})
    fp = fingerprint(request)
    now = timezone.now()
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(actor_ref=actor_ref, key=key, fingerprint=fp, expires_at=now + TTL)
    except IntegrityError:
        pass  # the key was used before (and that request has committed): compare
    row = IdempotencyKey.objects.select_for_update().get(actor_ref=actor_ref, key=key)
    if row.expires_at <= now:
        row.fingerprint, row.status_code, row.body, row.headers = fp, None, None, {}
        row.created_at, row.expires_at = now, now + TTL
        row.save()
        return row
    if row.fingerprint != fp:
        raise IdempotencyKeyReused()
    response = Response(row.body, status=row.status_code, headers={**row.headers, "Idempotent-Replayed": "true"})
    raise Replay(response)


def finish(row: IdempotencyKey, response: Response, *, secrets: tuple[str, ...] = ()) -> None:
    """Store a successful answer for replays. Fields named in ``secrets`` (shown once) are blanked."""
    if not 200 <= response.status_code < 300:
        return  # the caller rolls the transaction back, row included
    body = json.loads(_canonical(response.data)) if response.data is not None else None
    if isinstance(body, dict):
        body = {k: (None if k in secrets else v) for k, v in body.items()}
    row.status_code = response.status_code
    row.body = body
    row.headers = {h: response[h] for h in REPLAYED_HEADERS if h in response}
    row.save(update_fields=["status_code", "body", "headers"])


def delete_expired() -> int:
    return IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).delete()[0]
