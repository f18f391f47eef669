"""audit/redact.py: secrets never reach the audit log, and nothing else is hidden by mistake."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from audit.models import AuditEvent
from audit.redact import REDACTED, redact
from django.core.exceptions import ValidationError
from edge import services as edge
from edge.models import Policy
from tenancy import services as tenancy
from tenancy.models import ApiToken, TokenScope


def _audit_text() -> str:
    """Every audit event, every field, as one string to search."""
    return json.dumps(list(AuditEvent.objects.values()), default=str)


def _check_pbkdf2(stored: str, password: str) -> bool:
    algorithm, iterations, salt, digest = stored.split("$")
    assert algorithm == "pbkdf2_sha256"
    expected = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations))
    return base64.b64decode(digest) == expected


def test_api_token_value_appears_in_no_audit_event_and_not_in_its_row(cast):
    row, raw = tenancy.token_create(actor=cast.admin, org=cast.org, name="ci", scope=TokenScope.WRITE)
    tenancy.token_revoke(actor=cast.admin, org=cast.org, token=row)
    secret = raw.split("_", 2)[2]
    assert AuditEvent.objects.filter(action__startswith="token.").count() == 2
    for text in (_audit_text(), json.dumps(list(ApiToken.objects.values()), default=str)):
        assert raw not in text and secret not in text


def test_basic_auth_password_is_stored_only_as_a_pbkdf2_hash(cast):
    policy = edge.policy_create(
        actor=cast.editor, org=cast.org, kind="basic_auth", name="staff", settings={"users": {"bob": "s3cret-pass"}}
    )
    stored = Policy.objects.get(pk=policy.pk).settings["users"]["bob"]
    assert stored.startswith("pbkdf2_sha256$")
    assert _check_pbkdf2(stored, "s3cret-pass")
    assert "s3cret-pass" not in json.dumps(list(Policy.objects.values()), default=str)


def test_basic_auth_password_and_its_hash_stay_out_of_the_audit_log(cast):
    policy = edge.policy_create(
        actor=cast.editor, org=cast.org, kind="basic_auth", name="staff", settings={"users": {"bob": "s3cret-pass"}, "realm": "Staff"}
    )
    first_hash = Policy.objects.get(pk=policy.pk).settings["users"]["bob"]
    edge.policy_update(actor=cast.editor, org=cast.org, policy=policy, settings={"users": {"bob": "n3w-pass", "amy": "amy-pass"}})
    policy.refresh_from_db()
    hashes = [first_hash, *policy.settings["users"].values()]
    edge.policy_delete(actor=cast.editor, org=cast.org, policy=policy)

    text = _audit_text()
    assert AuditEvent.objects.count() == 3
    for secret in ("s3cret-pass", "n3w-pass", "amy-pass", *hashes):
        assert secret not in text
    assert "pbkdf2" not in text
    created = AuditEvent.objects.get(action="policy.create")
    assert created.changes["settings"][1]["users"] == {"bob": REDACTED}
    assert created.changes["settings"][1]["realm"] == "Staff"  # the rest stays readable


def test_an_already_hashed_basic_auth_password_is_kept_as_is(cast):
    """Editing a policy sends back the hashes it read; they must not be hashed a second time."""
    policy = edge.policy_create(actor=cast.editor, org=cast.org, kind="basic_auth", name="staff", settings={"users": {"bob": "pw-1"}})
    stored = policy.settings["users"]["bob"]
    edge.policy_update(actor=cast.editor, org=cast.org, policy=policy, settings={"users": {"bob": stored}, "realm": "Staff"})
    policy.refresh_from_db()
    assert policy.settings["users"]["bob"] == stored


@pytest.mark.parametrize(
    "forged",
    ["pbkdf2_sha256$2000000000$salt$" + "A" * 43 + "=", "pbkdf2_sha256$oops", "pbkdf2_sha256$100000$salt$short="],
    ids=["billion_iterations", "malformed", "short_digest"],
)
def test_a_hand_made_hash_is_refused(forged, cast, db_state):
    """A tenant cannot make the shared worker run a billion PBKDF2 rounds per request."""
    before = db_state()
    with pytest.raises(ValidationError) as exc:
        edge.policy_create(actor=cast.editor, org=cast.org, kind="basic_auth", name="staff", settings={"users": {"bob": forged}})
    assert "users.bob" in exc.value.message_dict["settings"][0]
    assert db_state() == before


def test_a_header_rule_carrying_a_credential_is_redacted(cast):
    edge.policy_create(
        actor=cast.editor,
        org=cast.org,
        kind="headers",
        name="origin auth",
        settings=[
            {"direction": "request", "op": "set", "name": "Authorization", "value": "Bearer origin-secret-1"},
            {"direction": "request", "op": "set", "name": "X-Api-Key", "value": "origin-secret-2"},
            {"direction": "response", "op": "set", "name": "X-Frame-Options", "value": "DENY"},
        ],
    )
    text = _audit_text()
    assert "origin-secret-1" not in text and "origin-secret-2" not in text
    rules = AuditEvent.objects.get().changes["settings"][1]
    assert [r["value"] for r in rules] == [REDACTED, REDACTED, "DENY"]
    assert [r["name"] for r in rules] == ["Authorization", "X-Api-Key", "X-Frame-Options"]


def test_settings_that_merely_contain_pass_are_not_redacted(cast):
    """bypass_paths and bypass_on_cookie are cache settings, not passwords."""
    edge.policy_create(
        actor=cast.editor, org=cast.org, kind="cache", name="cache", settings={"bypass_paths": ["/admin"], "bypass_on_cookie": False}
    )
    settings = AuditEvent.objects.get().changes["settings"][1]
    assert settings["bypass_paths"] == ["/admin"]
    assert settings["bypass_on_cookie"] is False


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "passphrase",
        "client_secret",
        "access_token",
        "private_key",
        "key_pem",
        "key_encrypted",
        "api_key",
        "Proxy-Authorization",
    ],
)
def test_secret_looking_keys_are_redacted(key):
    assert redact({key: "hunter2"}) == {key: REDACTED}
    assert redact({"nested": [{key: "hunter2"}]}) == {"nested": [{key: REDACTED}]}


@pytest.mark.parametrize("key", ["name", "bypass_paths", "passive_failures", "compass", "tokenizer_version", "monkey"])
def test_ordinary_keys_are_kept(key):
    assert redact({key: "visible"}) == {key: "visible"}


def test_secret_values_are_redacted_under_any_key():
    pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    assert redact({"note": pem, "users": {"bob": "pbkdf2_sha256$1$salt$abc"}}) == {"note": REDACTED, "users": {"bob": REDACTED}}


def test_empty_secrets_stay_visibly_empty():
    assert redact({"password": "", "token": None}) == {"password": "", "token": None}
