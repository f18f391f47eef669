"""Each token (or person) has its own request budget; past it, 429 with Retry-After."""

from __future__ import annotations

from .conftest import client_for, url


def test_a_token_over_its_rate_gets_429_with_retry_after(cast, settings):
    settings.PORTICO_API_RATE = "3/min"
    client = client_for(cast.acme.read_token)
    codes = [client.get(url("acme", "sites/")).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    response = client.get(url("acme", "sites/"))
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"].lower()


def test_each_token_has_its_own_budget(cast, settings):
    settings.PORTICO_API_RATE = "2/min"
    first, second = client_for(cast.acme.read_token), client_for(cast.acme.write_token)
    for _ in range(2):
        first.get(url("acme", "sites/"))
    assert first.get(url("acme", "sites/")).status_code == 429
    assert second.get(url("acme", "sites/")).status_code == 200
    assert client_for(user=cast.acme.users["viewer"]).get(url("acme", "sites/")).status_code == 200


def test_the_throttle_comes_before_any_other_answer(cast, settings):
    settings.PORTICO_API_RATE = "1/min"
    client = client_for(cast.globex.read_token)
    assert client.get(url("acme", "sites/")).status_code == 404
    assert client.get(url("acme", "sites/")).status_code == 429


def test_guessing_tokens_is_throttled_by_address(cast, settings):
    settings.PORTICO_API_RATE = "2/min"
    codes = [client_for(f"pt_guess{i}_secret").get(url("acme", "sites/")).status_code for i in range(3)]
    assert codes == [401, 401, 429]
