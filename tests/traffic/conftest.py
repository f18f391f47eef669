"""A site with two backends in one organization, and report builders shaped like the agent's."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from edge.models import Backend, Site
from fleet.models import Worker
from tenancy.models import Organization


@pytest.fixture
def org(db):
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def shop(org):
    site = Site.objects.create(organization=org, name="shop")
    site.b1 = Backend.objects.create(organization=org, site=site, address="10.0.0.1", port=80)
    site.b2 = Backend.objects.create(organization=org, site=site, address="10.0.0.2", port=80)
    return site


@pytest.fixture
def workers(db):
    now = timezone.now()
    return [Worker.objects.create(name=f"w{i}", last_heartbeat=now) for i in (1, 2, 3)]


def minute_of(at: dt.datetime) -> int:
    return int(at.timestamp()) // 60


def report(site, minute: int, *, process="p1", seq=1, requests=10, status=(0, 10, 0, 0, 0), latency=None,
           blocked=(), backends=None, cache=None, bytes_out=1000) -> dict:
    latency = latency if latency is not None else [0, requests] + [0] * 10
    return {
        "site": str(site.pk), "organization": str(site.organization_id), "minute": minute, "process": process,
        "seq": seq, "requests": requests, "status": list(status), "bytes_in": 0, "bytes_out": bytes_out,
        "cache": cache or {}, "blocked": [list(b) for b in blocked], "latency": latency,
        "latency_sum_ms": 7.0 * requests, "backends": backends or {},
    }
