"""Accounts through django-allauth: sign-up with a verified email address, throttled sign-in,
TOTP two-factor authentication with recovery codes."""

from __future__ import annotations

import re

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value, yield_hotp_counters_from_time
from django.core.cache import cache
from django.test import Client
from tenancy.models import User

PASSWORD = "a long and unusual passphrase 42"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()  # allauth counts attempts in the cache
    yield
    cache.clear()


def verified_user(email: str) -> User:
    from allauth.account.models import EmailAddress

    user = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


def test_sign_up_needs_the_emailed_link_before_signing_in(db, mailoutbox):
    client = Client()
    response = client.post("/accounts/signup/", {"email": "ada@example.test", "password1": PASSWORD, "password2": PASSWORD})
    assert response["Location"] == "/accounts/confirm-email/"
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["ada@example.test"]
    link = re.search(r"http://testserver(/accounts/confirm-email/\S+/)", mailoutbox[0].body).group(1)

    # Not verified yet: signing in only asks again for verification
    other = Client()
    response = other.post("/accounts/login/", {"login": "ada@example.test", "password": PASSWORD})
    assert response["Location"] == "/accounts/confirm-email/"
    assert other.get("/").status_code == 302 and "/accounts/login/" in other.get("/")["Location"]

    response = client.post(link)
    assert response["Location"] == "/"
    assert client.get("/")["Location"] == "/orgs/new/"


def test_a_weak_password_is_refused(db):
    response = Client().post("/accounts/signup/", {"email": "ada@example.test", "password1": "password", "password2": "password"})
    assert response.status_code == 200
    assert "too common" in response.content.decode()
    assert not User.objects.exists()


def test_failed_sign_ins_are_throttled(db):
    verified_user("ada@example.test")
    client = Client()
    for _ in range(5):
        response = client.post("/accounts/login/", {"login": "ada@example.test", "password": "wrong guess"})
        assert "Too many failed" not in response.content.decode()
    # From the sixth try on, even the right password is refused for a while
    response = client.post("/accounts/login/", {"login": "ada@example.test", "password": PASSWORD})
    assert response.status_code in (200, 429)
    assert "Too many failed login attempts" in response.content.decode()
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_password_reset_sends_a_link(db, mailoutbox):
    verified_user("ada@example.test")
    Client().post("/accounts/password/reset/", {"email": "ada@example.test"})
    assert "/accounts/password/reset/key/" in mailoutbox[0].body


def current_code(secret: str) -> str:
    counters = list(yield_hotp_counters_from_time())
    return format_hotp_value(hotp_value(secret, counters[len(counters) // 2]))


def test_totp_two_factor_with_recovery_codes(db):
    user = verified_user("ada@example.test")
    client = Client()
    assert client.post("/accounts/login/", {"login": "ada@example.test", "password": PASSWORD})["Location"] == "/"

    # Security changes ask for the password again
    assert client.get("/accounts/2fa/totp/activate/")["Location"].startswith("/accounts/reauthenticate/")
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200 and 'src="data:image/svg+xml' in page.content.decode()
    secret = client.session[SECRET_SESSION_KEY]
    response = client.post("/accounts/2fa/totp/activate/", {"code": current_code(secret)})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    codes = client.get("/accounts/2fa/recovery-codes/").content.decode()
    recovery = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES).wrap().get_unused_codes()
    assert recovery[0] in codes

    # Signing in now takes the password and then a second factor
    fresh = Client()
    response = fresh.post("/accounts/login/", {"login": "ada@example.test", "password": PASSWORD})
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert fresh.get("/")["Location"].startswith("/accounts/login/")
    assert fresh.post("/accounts/2fa/authenticate/", {"code": "000000"}).status_code == 200  # wrong: asked again
    response = fresh.post("/accounts/2fa/authenticate/", {"code": recovery[0]})
    assert response["Location"] == "/"
    assert fresh.get("/")["Location"] == "/orgs/new/"


def test_account_pages_carry_the_content_security_policy(db):
    response = Client().get("/accounts/login/")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
