"""ETag on detail answers, If-None-Match on reads, If-Match on writes: no lost updates."""

from __future__ import annotations

from edge.models import Backend, Site

from .conftest import client_for, url


def test_a_detail_answer_carries_an_etag(cast, world):
    response = client_for(cast.acme.read_token).get(url("acme", f"sites/{world.site.pk}/"))
    assert response.status_code == 200
    assert response["ETag"].startswith('"') and len(response["ETag"]) > 10


def test_the_etag_changes_when_the_object_does(cast, world):
    client = client_for(cast.acme.write_token)
    first = client.get(url("acme", f"sites/{world.site.pk}/"))["ETag"]
    assert client.get(url("acme", f"sites/{world.site.pk}/"))["ETag"] == first
    client.post(url("acme", f"sites/{world.site.pk}/hostnames/"), {"name": "api.acme.test"})
    assert client.get(url("acme", f"sites/{world.site.pk}/"))["ETag"] != first


def test_if_none_match_answers_304_while_current(cast, world):
    client = client_for(cast.acme.read_token)
    etag = client.get(url("acme", f"sites/{world.site.pk}/"))["ETag"]
    response = client.get(url("acme", f"sites/{world.site.pk}/"), HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert client.get(url("acme", f"sites/{world.site.pk}/"), HTTP_IF_NONE_MATCH='"old"').status_code == 200


def test_a_write_with_the_current_etag_succeeds(cast, world):
    client = client_for(cast.acme.write_token)
    path = url("acme", f"sites/{world.site.pk}/")
    etag = client.get(path)["ETag"]
    response = client.patch(path, {"name": "Shop 2"}, HTTP_IF_MATCH=etag)
    assert response.status_code == 200
    assert response["ETag"] != etag
    assert response["ETag"] == client.get(path)["ETag"]


def test_a_stale_write_gets_412_and_changes_nothing(cast, world):
    alice, bob = client_for(cast.acme.write_token), client_for(user=cast.acme.users["editor"])
    path = url("acme", f"sites/{world.site.pk}/backends/{world.backend.pk}/")
    etag = alice.get(path)["ETag"]
    assert bob.patch(path, {"weight": 7}, HTTP_IF_MATCH=etag).status_code == 200
    # Alice still holds the version before Bob's change.
    response = alice.patch(path, {"weight": 3}, HTTP_IF_MATCH=etag)
    assert response.status_code == 412
    assert "changed since you read it" in response.json()["detail"]
    assert Backend.objects.get(pk=world.backend.pk).weight == 7
    assert alice.put(path, {"address": "10.9.9.9", "port": 81}, HTTP_IF_MATCH=etag).status_code == 412
    assert alice.delete(path, HTTP_IF_MATCH=etag).status_code == 412
    assert Backend.objects.filter(pk=world.backend.pk, address="10.0.0.1").exists()


def test_a_weak_etag_never_matches_if_match(cast, world):
    client = client_for(cast.acme.write_token)
    path = url("acme", f"sites/{world.site.pk}/")
    etag = client.get(path)["ETag"]
    assert client.patch(path, {"name": "X"}, HTTP_IF_MATCH=f"W/{etag}").status_code == 412


def test_if_match_star_and_lists(cast, world):
    client = client_for(cast.acme.write_token)
    path = url("acme", f"sites/{world.site.pk}/")
    assert client.patch(path, {"name": "A"}, HTTP_IF_MATCH="*").status_code == 200
    etag = client.get(path)["ETag"]
    assert client.patch(path, {"name": "B"}, HTTP_IF_MATCH=f'"nope", {etag}').status_code == 200
    assert Site.objects.get(pk=world.site.pk).name == "B"


def test_a_delete_with_the_current_etag_deletes(cast, world):
    client = client_for(cast.acme.write_token)
    path = url("acme", f"sites/{world.other_site.pk}/")
    etag = client.get(path)["ETag"]
    assert client.delete(path, HTTP_IF_MATCH=etag).status_code == 204
    assert not Site.objects.filter(pk=world.other_site.pk).exists()


def test_without_if_match_the_write_is_unconditional(cast, world):
    client = client_for(cast.acme.write_token)
    assert client.patch(url("acme", f"sites/{world.site.pk}/"), {"name": "C"}).status_code == 200
