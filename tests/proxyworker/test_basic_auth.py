"""Basic auth per site and path prefix: 401 with a challenge, pbkdf2 hashes checked once and then
remembered, credentials consumed (not forwarded) where the platform checked them."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

from proxyworker import snapshot as snap
from proxyworker.basic_auth import Realm, VerificationCache, check_password, decoy_hash, parse_authorization
from tests.proxyworker.conftest import get, site, snapshot


def pbkdf2(password: str, iterations: int = 100_000, salt: str = "c2FsdA") -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_hash_check_and_header_parsing():
    stored = pbkdf2("s3cret", iterations=1000)
    assert check_password("s3cret", stored) and not check_password("s3cret ", stored)
    assert not check_password("s3cret", "md5$1$x$y") and not check_password("x", "garbage")
    assert parse_authorization(basic("ana", "pa:ss")["Authorization"]) == ("ana", "pa:ss")
    assert parse_authorization("Bearer abc") is None and parse_authorization("Basic !!!") is None
    cache = VerificationCache(size=2)
    keys = [cache.key(stored, f"Basic {i}") for i in range(3)]
    for k in keys:
        cache.remember(k, True)
    assert cache.lookup(keys[0]) is None and cache.lookup(keys[2]) is True  # bounded, oldest out


def test_unknown_names_are_checked_against_a_decoy_as_slow_as_the_realms_hashes():
    realm = Realm("/", "r", {"ana": pbkdf2("one", 1000), "bob": pbkdf2("two", 250_000)})
    assert realm.stored_hash("ana") == realm.users["ana"]
    assert realm.stored_hash("nobody") == realm.decoy == "pbkdf2_sha256$250000$decoy$!"  # the slowest count
    assert decoy_hash([]) == "pbkdf2_sha256$100000$decoy$!"
    assert not any(check_password(p, decoy_hash(["pbkdf2_sha256$1000$s$x"])) for p in ("", "!", "one", "decoy"))


def test_an_unknown_user_name_costs_what_a_wrong_password_costs(backend_factory, worker_factory):
    a = backend_factory()
    auth = snap.BasicAuth(users={"ana": pbkdf2("s3cret", iterations=600_000)})  # ~0.2 s of CPU per check
    w = worker_factory(snapshot(site("enum.test", [a], policies=snap.Policies(basic_auth=[auth]))))

    def seconds(user: str, password: str) -> float:
        started = time.monotonic()
        assert get(w, "enum.test", headers=basic(user, password)).status == 401
        return time.monotonic() - started

    wrong_password = seconds("ana", "guess-1")
    unknown_name = seconds("mallory", "guess-1")
    # Without the decoy an unknown name is refused at once (about a millisecond).
    assert unknown_name > wrong_password / 3, (wrong_password, unknown_name)
    # Repeated, both are remembered failures and equally fast.
    assert seconds("mallory", "guess-1") < unknown_name / 3


def test_protected_prefix_needs_valid_credentials(backend_factory, worker_factory):
    a = backend_factory()
    auth = snap.BasicAuth(users={"ana": pbkdf2("s3cret")}, realm='Staff "only"', path_prefix="/admin")
    w = worker_factory(snapshot(site("auth.test", [a], policies=snap.Policies(basic_auth=[auth]))))
    missing = get(w, "auth.test", "/admin/x")
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Basic realm="Staff \\"only\\"", charset="UTF-8"'
    assert get(w, "auth.test", "/admin/x", headers=basic("ana", "wrong")).status == 401
    assert get(w, "auth.test", "/admin/x", headers=basic("bob", "s3cret")).status == 401
    ok = get(w, "auth.test", "/admin/x", headers=basic("ana", "s3cret"))
    assert ok.status == 200
    assert "authorization" not in ok.json()["headers"]  # consumed by the platform, not forwarded
    # outside the prefix: open, and an Authorization meant for the origin passes through
    public = get(w, "auth.test", "/public", headers={"Authorization": "Bearer origin-token"})
    assert public.status == 200 and public.json()["headers"]["authorization"] == "Bearer origin-token"
    assert a.hits == 2


def test_verified_credentials_are_remembered(backend_factory, worker_factory):
    a = backend_factory()
    slow = pbkdf2("s3cret", iterations=600_000)  # ~0.3 s of CPU per check here
    auth = snap.BasicAuth(users={"ana": slow})
    w = worker_factory(snapshot(site("fast.test", [a], policies=snap.Policies(basic_auth=[auth]))))
    started = time.monotonic()
    assert get(w, "fast.test", headers=basic("ana", "s3cret")).status == 200
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(5):
        assert get(w, "fast.test", headers=basic("ana", "s3cret")).status == 200
    again = (time.monotonic() - started) / 5
    assert again < first / 3, (first, again)


def test_longest_prefix_policy_applies(backend_factory, worker_factory):
    a = backend_factory()
    site_wide = snap.BasicAuth(users={"ana": pbkdf2("one", 1000)}, path_prefix="/")
    ops = snap.BasicAuth(users={"ops": pbkdf2("two", 1000)}, realm="Ops", path_prefix="/ops")
    w = worker_factory(snapshot(site("nest.test", [a], policies=snap.Policies(basic_auth=[site_wide, ops]))))
    assert get(w, "nest.test", "/", headers=basic("ana", "one")).status == 200
    assert get(w, "nest.test", "/ops/x", headers=basic("ana", "one")).status == 401
    assert get(w, "nest.test", "/ops/x", headers=basic("ops", "two")).status == 200
    assert get(w, "nest.test", "/ops/x").headers["www-authenticate"].startswith('Basic realm="Ops"')


def test_a_slow_password_check_does_not_stall_other_requests(backend_factory, worker_factory):
    a = backend_factory()
    slow = snap.BasicAuth(users={"ana": pbkdf2("s3cret", iterations=3_000_000)})  # over a second of CPU
    w = worker_factory(snapshot(site("slowauth.test", [a], policies=snap.Policies(basic_auth=[slow])),
                                site("other.test", [a])))
    done = []
    t = threading.Thread(target=lambda: done.append(get(w, "slowauth.test", headers=basic("ana", "s3cret")).status))
    t.start()
    time.sleep(0.2)  # the check is running now
    started = time.monotonic()
    assert get(w, "other.test").status == 200
    assert time.monotonic() - started < 0.5 and not done  # answered while the check still ran
    t.join(30)
    assert done == [200]
