"""The security check-up through the API: run it (editor), list findings with filters, acknowledge
one (admin, audited)."""

from __future__ import annotations

from advisor.models import Finding
from audit.models import AuditEvent
from edge import services as edge

from .conftest import client_for, url


def _plain_site(cast):
    return edge.site_create(actor=cast.acme.actor("editor"), org=cast.acme.org, name="Shop", hostnames=["shop.acme.test"],
                            backends=[{"address": "93.184.216.34", "port": 80}], tls_mode="off")


def test_an_editor_runs_the_check_up_and_a_viewer_may_not(cast):
    site = _plain_site(cast)
    assert client_for(cast.acme.read_token).post(url("acme", "findings/run/")).status_code == 403
    assert not Finding.objects.exists()
    ran = client_for(cast.acme.write_token).post(url("acme", "findings/run/"))
    assert ran.status_code == 200
    assert ran.json()["opened"] == ran.json()["open"] > 0
    listed = client_for(cast.acme.read_token).get(url("acme", "findings/"), {"open": "true", "site": str(site.pk)}).json()
    rules = {f["rule"] for f in listed["results"]}
    assert {"tls-off", "backend-plain-http"} <= rules
    tls = next(f for f in listed["results"] if f["rule"] == "tls-off")
    assert tls["severity"] == "high" and tls["status"] == "open" and tls["explanation"] and tls["fix"]

    edge.site_update(actor=cast.acme.actor("editor"), org=cast.acme.org, site=site, tls_mode="acme")
    again = client_for(cast.acme.write_token).post(url("acme", "findings/run/")).json()
    assert again["resolved"] >= 1
    resolved = client_for(cast.acme.read_token).get(url("acme", "findings/"), {"open": "false"}).json()["results"]
    assert [f["rule"] for f in resolved] == ["tls-off"] and resolved[0]["status"] == "resolved"


def test_filters_by_severity_and_rule(cast):
    _plain_site(cast)
    client_for(cast.acme.write_token).post(url("acme", "findings/run/"))
    reader = client_for(cast.acme.read_token)
    high = reader.get(url("acme", "findings/"), {"severity": "high"}).json()["results"]
    assert high and {f["severity"] for f in high} == {"high"}
    both = reader.get(url("acme", "findings/") + "?severity=high&severity=medium").json()["results"]
    assert {f["severity"] for f in both} == {"high", "medium"}
    assert {f["rule"] for f in reader.get(url("acme", "findings/"), {"rule": "tls-off"}).json()["results"]} == {"tls-off"}
    assert reader.get(url("acme", "findings/"), {"severity": "bogus"}).status_code == 400


def test_an_admin_acknowledges_a_finding_and_it_is_audited(cast):
    _plain_site(cast)
    client_for(cast.acme.write_token).post(url("acme", "findings/run/"))
    finding = Finding.objects.get(rule="tls-off")
    path = url("acme", f"findings/{finding.pk}/acknowledge/")
    assert client_for(cast.acme.write_token).post(path).status_code == 403  # a token acts as an editor at most
    assert client_for(user=cast.acme.users["editor"]).post(path).status_code == 403
    done = client_for(user=cast.acme.users["admin"]).post(path)
    assert done.status_code == 200
    assert done.json()["status"] == "acknowledged" and done.json()["acknowledged_by"] == "admin@acme.test"
    assert AuditEvent.objects.filter(organization=cast.acme.org, action="advisor.acknowledge").count() == 1
    reader = client_for(cast.acme.read_token)
    assert [f["rule"] for f in reader.get(url("acme", "findings/"), {"acknowledged": "true"}).json()["results"]] == ["tls-off"]
    assert "tls-off" not in {f["rule"] for f in reader.get(url("acme", "findings/"), {"acknowledged": "false"}).json()["results"]}


def test_another_organizations_findings_are_404(cast):
    _plain_site(cast)
    client_for(cast.acme.write_token).post(url("acme", "findings/run/"))
    finding = Finding.objects.first()
    outsider = client_for(user=cast.globex.users["owner"])
    assert outsider.get(url("acme", "findings/")).status_code == 404
    assert outsider.get(url("globex", f"findings/{finding.pk}/")).status_code == 404
    assert outsider.post(url("globex", f"findings/{finding.pk}/acknowledge/")).status_code == 404
    assert outsider.post(url("acme", "findings/run/")).status_code == 404
