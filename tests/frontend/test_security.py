"""The Security page: open findings by severity with explanation and fix, acknowledged ones, Run
check-up for editors and up, Acknowledge for admins, the platform's policies; tenant isolation."""

from __future__ import annotations

from advisor.models import Finding
from audit.models import AuditEvent
from django.urls import reverse
from django.utils.html import escape
from edge.models import PlatformPolicy

URL = reverse("frontend:security", kwargs={"org_slug": "acme"})
RUN = reverse("frontend:security_run", kwargs={"org_slug": "acme"})


def _ack_url(finding: Finding) -> str:
    return reverse("frontend:finding_acknowledge", kwargs={"org_slug": "acme", "finding_id": finding.pk})


def test_an_editor_runs_the_check_up_and_sees_findings_by_severity_with_the_fix(cast):
    editor = cast.client("editor")
    page = editor.get(URL).content.decode()
    assert "has not run yet" in page and "Run check-up" in page and "Acknowledge</button>" not in page
    response = editor.post(RUN, follow=True)
    page = response.content.decode()
    assert "Check-up done" in page
    assert Finding.objects.filter(organization=cast.org).exists()
    for finding in Finding.objects.filter(organization=cast.org):
        assert escape(finding.title) in page and escape(finding.explanation) in page and escape(finding.fix) in page
    # severities are listed from the most to the least severe
    present = [label for label in ("High (", "Medium (", "Low (") if label in page]
    assert present == sorted(present, key=page.index) and present


def test_a_viewer_reads_the_page_but_cannot_run_or_acknowledge(cast):
    cast.client("editor").post(RUN)
    viewer = cast.client("viewer")
    page = viewer.get(URL).content.decode()
    assert "Run check-up</button>" not in page and "Acknowledge</button>" not in page
    assert viewer.post(RUN).status_code == 403
    finding = Finding.objects.filter(organization=cast.org).first()
    assert viewer.post(_ack_url(finding)).status_code == 403
    assert cast.client("editor").post(_ack_url(finding)).status_code == 403  # admins and owners only
    assert Finding.objects.get(pk=finding.pk).acknowledged_at is None


def test_an_owner_acknowledges_a_finding_which_moves_to_the_acknowledged_list(cast):
    cast.client("editor").post(RUN)
    finding = Finding.objects.filter(organization=cast.org).first()
    owner = cast.client("owner")
    assert "Acknowledge</button>" in owner.get(URL).content.decode()
    owner.post(_ack_url(finding))
    finding.refresh_from_db()
    assert finding.acknowledged_by == "owner@acme.test"
    assert AuditEvent.objects.filter(organization=cast.org, action="advisor.acknowledge").exists()
    page = owner.get(URL).content.decode()
    acknowledged = page.split('id="acknowledged"', 1)[1]
    assert escape(finding.title) in acknowledged and "owner@acme.test" in acknowledged


def test_platform_policies_are_shown_read_only(cast):
    PlatformPolicy.objects.create(kind="ip_blocklist", settings={"deny": ["198.51.100.0/24"]}, note="botnet")
    PlatformPolicy.objects.create(kind="min_tls", settings={"version": "1.3"}, enabled=False)
    page = cast.client("viewer").get(URL).content.decode().split('id="platform"', 1)[1]
    assert "198.51.100.0/24" in page and "botnet" in page and "TLS 1.3" not in page


def test_another_organizations_findings_are_404(cast):
    cast.client("outsider").post(reverse("frontend:security_run", kwargs={"org_slug": "globex"}))
    theirs = Finding.objects.filter(organization=cast.other_org).first()
    assert theirs is not None
    assert cast.client("owner").post(_ack_url(theirs)).status_code == 404
    assert cast.client("outsider").get(URL).status_code == 404
    assert escape(theirs.title) not in cast.client("owner").get(URL).content.decode()
