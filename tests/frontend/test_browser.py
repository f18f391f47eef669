"""A person's first visit, in a real browser: sign up, verify the email address from the mail the
platform wrote, create an organization and a site with a backend, watch a real worker apply it,
create an API token, and find it all in the audit log. Saves screenshots of the main pages for the
README."""

from __future__ import annotations

import re
import time
from email import message_from_string
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import broker, control_celery, node_factory, platform_env, wait_for  # noqa: F401  (fixtures)
from tests.proxyworker.conftest import Backend

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "a long and unusual passphrase 42"

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture
def mail_dir(settings, tmp_path) -> Path:
    """The file mail backend, as in the quick start, in a folder of the test's own."""
    folder = tmp_path / "mail"
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.filebased.EmailBackend", "OPTIONS": {"file_path": str(folder)}}}
    return folder


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def confirmation_link(mail_dir: Path, email: str) -> str:
    """The link in the confirmation mail to ``email``, decoded as a mail client would."""
    for file in sorted(mail_dir.glob("*.log")):
        # The file backend separates messages with a line of dashes.
        for raw in file.read_text().split("\n" + "-" * 79 + "\n"):
            message = message_from_string(raw.strip())
            if message["To"] != email:
                continue
            body = message.get_payload(decode=True).decode()
            match = re.search(r"https?://\S+/accounts/confirm-email/\S+/", body)
            if match:
                return match.group(0)
    return ""


def test_sign_up_to_an_applied_site_a_token_and_the_audit_log(page: Page, live_server, mail_dir, node_factory):  # noqa: F811
    node_factory("edge-1")  # a real agent: registers, receives versions, reports them applied
    email = "ada@example.test"
    page.set_viewport_size({"width": 1280, "height": 900})

    # Sign up
    page.goto(f"{live_server.url}/accounts/signup/")
    expect(page.get_by_role("heading", name="Sign Up")).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label(re.compile("Password \\(again\\)")).fill(PASSWORD)
    shoot(page, "sign-up")
    page.get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", name=re.compile("Verify Your Email Address"))).to_be_visible()

    # Verify the address with the link from the mail the platform wrote to a file
    link = wait_for(lambda: confirmation_link(mail_dir, email), what="the confirmation email")
    page.goto(link)
    page.get_by_role("button", name="Confirm").click()

    # No organization yet: the dashboard asks for one
    expect(page.get_by_role("heading", name="New organization")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Acme")
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name="Sites")).to_be_visible()

    # Create a site with its first backend, in one form
    page.get_by_role("link", name="Create a site").click()
    page.get_by_label("Name", exact=True).fill("Shop")
    page.get_by_label("Hostnames").fill("shop.example.test\nwww.shop.example.test")
    page.get_by_label("Certificates").select_option("off")
    page.get_by_label("Backend address").fill("127.0.0.1")
    page.get_by_label("Backend port").fill("8081")
    page.get_by_role("button", name="Create site").click()
    expect(page.get_by_role("heading", name=re.compile("Shop"))).to_be_visible()

    # See it applied: the page polls the rollout until the worker reports the new version
    expect(page.locator("#rollout")).to_contain_text("applied on 1 of 1 workers", timeout=30_000)
    expect(page.get_by_role("row", name=re.compile(r"127\.0\.0\.1:8081"))).to_be_visible()
    shoot(page, "site-detail")

    # A mistake is explained next to its field
    page.get_by_text("Add a backend").click()
    page.get_by_label("Address").fill("http://origin.example.test/")
    page.get_by_role("button", name="Add backend").click()
    expect(page.locator("#id_address_error")).to_contain_text("is not a host")

    page.get_by_role("link", name="Sites", exact=True).click()
    expect(page.get_by_role("row", name=re.compile("Shop"))).to_contain_text("shop.example.test")
    shoot(page, "sites")

    # An API token, shown once
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name", exact=True).fill("deploy bot")
    page.get_by_label("Scope").select_option("write")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("textbox", name="Token", exact=True)).to_have_value(re.compile(r"^pt_[0-9a-f]{12}_"))
    shoot(page, "tokens")

    # The audit log has every step, with who did it
    page.get_by_role("link", name="Audit log").click()
    for action in ("organization.create", "site.create", "token.create"):
        expect(page.get_by_role("cell", name=action, exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name=re.compile(email)).first).to_be_visible()
    page.get_by_role("row", name=re.compile("token.create")).locator("summary").click()
    shoot(page, "audit-log")

    page.get_by_role("link", name="Fleet").click()
    expect(page.get_by_role("row", name=re.compile("edge-1"))).to_contain_text("Online")
    shoot(page, "fleet")


def _reported_samples(site, backend) -> None:
    """Three requests as a worker reports them (secrets already masked), through the real ingest."""
    from traffic import services

    now = time.time()
    common = {"site": str(site.pk), "organization": str(site.organization_id), "host": "shop.example.test",
              "client_ip": "203.0.113.7", "request_id": "req-1"}
    services.ingest(worker="edge-1", samples=[
        {**common, "at": now - 30, "method": "GET", "path": "/products/42?ref=mail&token=***", "status": 200,
         "backend": str(backend.pk), "cache": "miss",
         "request_headers": [["Host", "shop.example.test"], ["Authorization", "***"], ["Cookie", "***"],
                             ["Accept", "text/html"], ["User-Agent", "Mozilla/5.0"]],
         "response_headers": [["Content-Type", "application/json"], ["Set-Cookie", "***"]],
         "timing": {"receive": 0.3, "connect": 1.1, "upstream_wait": 14.2, "send": 2.4, "total": 17.0}},
        {**common, "at": now - 20, "method": "POST", "path": "/wp-login.php", "status": 403,
         "blocked": {"reason": "waf", "rule": "wp-probe"}, "request_headers": [["Host", "shop.example.test"]],
         "timing": {"receive": 0.2, "total": 0.4}},
        {**common, "at": now - 10, "method": "GET", "path": "/checkout", "status": 502, "backend": str(backend.pk),
         "error": "Connection refused", "request_headers": [["Host", "shop.example.test"]],
         "timing": {"receive": 0.2, "connect": None, "total": 3.1}},
    ])


def test_the_inspector_shows_requests_and_replays_one(page: Page, live_server, transactional_db, no_publish, settings):
    """A site's recent requests, one request's masked headers and timing, and its replay against a
    real backend, from the page."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from edge import services as edge
    from tenancy.access import Actor
    from tenancy.models import Membership, Organization, Role

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    origin = Backend("origin-a", headers={"Cache-Control": "max-age=60"}).start()
    try:
        org = Organization.objects.create(name="Acme", slug="acme")
        user = get_user_model().objects.create_user(email="ada@example.test", password=PASSWORD)
        Membership.objects.create(organization=org, user=user, role=Role.OWNER)
        site = edge.site_create(actor=Actor.system("test"), org=org, name="Shop", hostnames=["shop.example.test"],
                                backends=[{"address": "127.0.0.1", "port": origin.port}], hc_enabled=False)
        backend = site.backends.get()
        _reported_samples(site, backend)

        signed_in = Client()
        signed_in.force_login(user)
        page.context.add_cookies([{"name": "sessionid", "value": signed_in.cookies["sessionid"].value, "url": live_server.url}])
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{live_server.url}/o/acme/sites/{site.pk}/")
        page.get_by_role("link", name="Request inspector").click()
        expect(page.get_by_role("heading", name="Request inspector")).to_be_visible()
        expect(page.get_by_role("row", name=re.compile("wp-login"))).to_contain_text("wp-probe")
        expect(page.get_by_role("row", name=re.compile("checkout"))).to_contain_text(str(backend))
        shoot(page, "inspector")

        page.get_by_label("Kind").select_option("blocked")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("row", name=re.compile("checkout"))).to_have_count(0)
        page.get_by_role("link", name="Clear").click()

        page.get_by_role("row", name=re.compile("products.42")).get_by_role("link").click()
        expect(page.get_by_role("row", name=re.compile("Authorization"))).to_contain_text("masked")
        expect(page.get_by_role("img", name=re.compile("upstream wait"))).to_be_visible()
        page.get_by_label("Backend").select_option(str(backend.pk))
        page.get_by_role("button", name="Replay GET").click()
        expect(page.get_by_role("status")).to_contain_text("200 X")
        expect(page.get_by_role("status")).to_contain_text("query parameter token")
        page.locator("#replay").scroll_into_view_if_needed()
        shoot(page, "inspector-replay")
    finally:
        origin.stop()
    method, target, headers = origin.requests[-1]
    assert (method, target, headers["host"]) == ("GET", "/products/42?ref=mail", "shop.example.test")
    assert "authorization" not in headers and "cookie" not in headers


# --- the observability pages, on traffic reported through the real ingest --------------------------


def _seed_traffic_world():
    """Acme with two sites, an hour and a day of traffic through two workers, some incidents, and
    alert settings; Globex with traffic of its own on the same workers, which Acme must not see."""
    import datetime as dt
    import math

    from django.utils import timezone
    from edge.models import Backend, Hostname, Site
    from fleet.models import Worker
    from tenancy.access import Actor
    from tenancy.models import Membership, Organization, Role, User
    from traffic.alert_settings import alert_settings_update
    from traffic.models import Alert
    from traffic.services import ingest

    from tests.traffic.conftest import minute_of, report

    user = User.objects.create_user(email="ada@example.test", password=PASSWORD)
    acme, globex = Organization.objects.create(name="Acme", slug="acme"), Organization.objects.create(name="Globex", slug="globex")
    Membership.objects.create(organization=acme, user=user, role=Role.OWNER)
    shop, blog = Site.objects.create(organization=acme, name="Shop"), Site.objects.create(organization=acme, name="Blog")
    other = Site.objects.create(organization=globex, name="Secret")
    for site, host in ((shop, "shop.example.test"), (blog, "blog.example.test"), (other, "secret.example.test")):
        Hostname.objects.create(organization=site.organization, site=site, name=host)
    backend = Backend.objects.create(organization=acme, site=shop, address="10.0.0.5", port=8080)
    now = timezone.now()
    Worker.objects.create(name="edge-1", version=4, last_heartbeat=now)
    Worker.objects.create(name="edge-2", version=4, last_heartbeat=now - dt.timedelta(minutes=7))
    current = minute_of(now)
    for worker, share in (("edge-1", 0.6), ("edge-2", 0.4)):
        minutes = []
        for i in range(24 * 60, 0, -3 if worker == "edge-1" else 5):  # a day, denser in the last hour below
            minutes.append(report(shop, current - i, process="p1", requests=int(40 * share),
                                  status=(0, int(36 * share), 0, int(4 * share), 0)))
        for i in range(60, -1, -1):
            wave = 1 + 0.6 * math.sin(i / 7)
            n = int(120 * share * wave)
            errors = int(n * 0.3) if 18 <= i <= 22 else int(n * 0.01)  # a short error spike
            client_errors, redirects = n // 12, n // 20
            ok = n - errors - client_errors - redirects
            fast = int(n * 0.7)
            latency = [0, fast, int(n * 0.2), n - fast - int(n * 0.2) - 2 if n > 10 else 0, 2 if n > 10 else 0] + [0] * 7
            blocked = [("waf", "no-env", 3), ("ratelimit", "api", 2)] if i % 9 == 0 else []
            minutes.append(report(shop, current - i, process="p2", seq=1, requests=n, status=(0, ok, redirects, client_errors, errors),
                                  latency=latency, blocked=blocked, cache={"hit": int(n * 0.55 * wave) // 2, "miss": n // 3},
                                  bytes_out=n * 18_000))
            minutes.append(report(blog, current - i, process="p2", requests=int(15 * share), status=(0, int(15 * share), 0, 0, 0)))
            minutes.append(report(other, current - i, process="p2", requests=999, status=(0, 0, 0, 0, 999)))
        ingest(worker=worker, minutes=minutes)
    Alert.objects.create(organization=acme, kind=Alert.Kind.ERROR_RATE, subject=str(shop.pk), site=shop,
                         summary="Shop: 30% of requests failed (5xx) in the last 5 minutes",
                         opened_at=now - dt.timedelta(minutes=22), resolved_at=now - dt.timedelta(minutes=17),
                         notified=[{"channel": "email", "event": "opened", "ok": True, "at": now.isoformat()},
                                   {"channel": "webhook", "event": "opened", "ok": True, "status": 200, "at": now.isoformat()},
                                   {"channel": "email", "event": "resolved", "ok": True, "at": now.isoformat()}])
    Alert.objects.create(organization=acme, kind=Alert.Kind.WORKER_OFFLINE, subject="edge-2",
                         summary="Worker edge-2 has been silent for 420 s", opened_at=now - dt.timedelta(minutes=6),
                         notified=[{"channel": "email", "event": "opened", "ok": True, "at": now.isoformat()},
                                   {"channel": "webhook", "event": "opened", "ok": False, "error": "timed out", "at": now.isoformat()}])
    Alert.objects.create(organization=acme, kind=Alert.Kind.BACKEND_DOWN, subject=str(backend.pk), site=shop,
                         summary="Backend 10.0.0.5 of Shop is down on all 2 workers", opened_at=now - dt.timedelta(hours=26),
                         resolved_at=now - dt.timedelta(hours=25, minutes=48))
    Alert.objects.create(organization=globex, kind=Alert.Kind.ERROR_RATE, subject=str(other.pk), site=other,
                         summary="Secret: 100% of requests failed")
    alert_settings_update(actor=Actor.for_user(user), org=acme, emails=["ops@example.test"],
                          webhook_url="https://hooks.example.test/portico", webhook_secret="whsec-browser-0123456789")
    return user, shop


def test_traffic_charts_fleet_overview_and_alerts(page: Page, live_server, settings):
    from django.test import Client

    user, shop = _seed_traffic_world()
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])
    problems: list[str] = []
    # The dashboard has no favicon; the browser's request for one is not the page's problem.
    page.on("console", lambda msg: problems.append(msg.text) if msg.type in ("error", "warning")
            and not msg.location.get("url", "").endswith("/favicon.ico") else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.set_viewport_size({"width": 1280, "height": 900})

    # The site page links to its traffic: four charts, readable totals, the rules that blocked
    page.goto(f"{live_server.url}/o/acme/sites/{shop.pk}/")
    page.get_by_role("link", name=re.compile("^Traffic")).click()
    expect(page.get_by_role("heading", name="Traffic of Shop")).to_be_visible()
    for title in ("Requests by status class", "Cache hit ratio", "Upstream latency", "Blocked requests"):
        expect(page.get_by_role("img", name=title)).to_be_visible()
    expect(page.get_by_role("cell", name="no-env")).to_be_visible()
    expect(page.locator("svg.chart rect.s5xx").first).to_be_attached()
    shoot(page, "traffic")
    page.get_by_role("link", name="7 days").click()
    expect(page.get_by_role("link", name="7 days")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("img", name="Requests by status class")).to_be_visible()

    # The fleet: Acme's share of each worker, its busiest sites, nothing of Globex
    page.get_by_role("link", name="Fleet").click()
    expect(page.get_by_role("row", name=re.compile("edge-1"))).to_contain_text("Online")
    expect(page.get_by_role("row", name=re.compile("edge-2"))).to_contain_text("Offline")
    expect(page.get_by_role("link", name="Shop")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Secret")

    # Alerts: open first, then resolved, with deliveries; the settings form keeps the secret to itself
    page.get_by_role("link", name="Alerts").click()
    rows = page.locator("table.alerts tbody tr")
    expect(rows.first).to_contain_text("Worker edge-2 has been silent")
    expect(rows.nth(1)).to_contain_text("Shop: 30% of requests failed")
    expect(page.get_by_text("webhook (opened): failed: timed out")).to_be_visible()
    expect(page.get_by_label("Webhook URL")).to_have_value("https://hooks.example.test/portico")
    expect(page.get_by_label("New webhook secret")).to_have_value("")
    expect(page.locator("main")).not_to_contain_text("Secret: 100%")
    shoot(page, "alerts")
    page.get_by_label("Minimum requests in 5 minutes").fill("0")
    page.get_by_role("button", name="Save alert settings").click()
    expect(page.locator("#id_min_requests_error")).to_have_text("Between 1 and 1000000.")
    page.get_by_label("Minimum requests in 5 minutes").fill("25")
    page.get_by_role("button", name="Save alert settings").click()
    expect(page.get_by_text("Alert settings saved.")).to_be_visible()
    assert page.content().count("whsec-browser") == 0
    assert not problems, problems  # no CSP violation, no script error
