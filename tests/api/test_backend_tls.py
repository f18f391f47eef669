"""End-to-end encryption: with "require TLS to backends" on (site or organization), the API
refuses plain-HTTP backends with a 400 that names the backend."""

from __future__ import annotations

from audit.models import AuditEvent
from edge.models import Backend, Site

from .conftest import client_for, url


def _site(client, **fields) -> dict:
    response = client.post(url("acme", "sites/"), {"name": "Shop", "hostnames": ["shop.acme.test"], **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_site_requiring_tls_refuses_a_plain_backend_naming_it(cast):
    client = client_for(cast.acme.write_token)
    site = _site(client, require_backend_tls=True)
    assert site["require_backend_tls"] is True
    response = client.post(url("acme", f"sites/{site['id']}/backends/"), {"address": "10.0.0.7", "port": 8080, "scheme": "http"})
    assert response.status_code == 400
    assert "http://10.0.0.7:8080" in response.json()["scheme"][0]
    assert not Backend.objects.exists()
    https = client.post(url("acme", f"sites/{site['id']}/backends/"), {"address": "10.0.0.7", "port": 8443, "scheme": "https"})
    assert https.status_code == 201, https.json()
    downgrade = client.patch(url("acme", f"sites/{site['id']}/backends/{https.json()['id']}/"), {"scheme": "http"})
    assert downgrade.status_code == 400 and "http://10.0.0.7:8443" in downgrade.json()["scheme"][0]
    assert Backend.objects.get().scheme == "https"


def test_a_site_created_with_the_setting_and_a_plain_inline_backend_is_refused(cast):
    body = {"name": "Shop", "hostnames": ["shop.acme.test"], "require_backend_tls": True,
            "backends": [{"address": "origin.acme.test", "port": 80}]}
    response = client_for(cast.acme.write_token).post(url("acme", "sites/"), body, format="json")
    assert response.status_code == 400
    assert "http://origin.acme.test:80" in str(response.json())
    assert not Site.objects.exists()


def test_turning_the_setting_on_with_a_plain_backend_is_refused_naming_it(cast):
    client = client_for(cast.acme.write_token)
    site = _site(client, backends=[{"address": "10.0.0.9", "port": 8080}])
    response = client.patch(url("acme", f"sites/{site['id']}/"), {"require_backend_tls": True}, format="json")
    assert response.status_code == 400
    assert "http://10.0.0.9:8080" in response.json()["require_backend_tls"][0]
    assert Site.objects.get().require_backend_tls is False
    backend = Backend.objects.get()
    assert client.patch(url("acme", f"sites/{site['id']}/backends/{backend.pk}/"), {"scheme": "https", "port": 443}).status_code == 200
    assert client.patch(url("acme", f"sites/{site['id']}/"), {"require_backend_tls": True}, format="json").status_code == 200


def test_the_organization_setting_covers_every_site_and_needs_an_admin(cast):
    writer = client_for(cast.acme.write_token)
    site = _site(writer, backends=[{"address": "10.0.0.9", "port": 8080}])
    admin = client_for(user=cast.acme.users["admin"])
    editor = client_for(user=cast.acme.users["editor"])
    assert editor.patch(url("acme"), {"require_backend_tls": True}, format="json").status_code == 403

    refused = admin.patch(url("acme"), {"require_backend_tls": True}, format="json")
    assert refused.status_code == 400
    assert "http://10.0.0.9:8080 (Shop)" in refused.json()["require_backend_tls"][0]

    backend = Backend.objects.get()
    writer.patch(url("acme", f"sites/{site['id']}/backends/{backend.pk}/"), {"scheme": "https", "port": 443})
    turned_on = admin.patch(url("acme"), {"require_backend_tls": True}, format="json")
    assert turned_on.status_code == 200 and turned_on.json()["require_backend_tls"] is True
    assert AuditEvent.objects.filter(action="organization.require_backend_tls").count() == 1

    plain = writer.post(url("acme", f"sites/{site['id']}/backends/"), {"address": "10.0.0.10", "port": 80, "scheme": "http"})
    assert plain.status_code == 400
    assert "organization requires TLS" in plain.json()["scheme"][0] and "http://10.0.0.10:80" in plain.json()["scheme"][0]
    # another tenant is not affected
    globex = client_for(cast.globex.write_token)
    other = globex.post(url("globex", "sites/"), {"name": "G", "hostnames": ["g.globex.test"],
                                                   "backends": [{"address": "10.0.0.1", "port": 80}]}, format="json")
    assert other.status_code == 201
