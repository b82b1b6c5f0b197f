"""Signatures: the Java-faithful verifier accepts what ``cs`` signs, except values with ``~``."""

from __future__ import annotations

import cs
import pytest
import requests

from cloudstack_sim.signing import java_urlencode, signature_for, verify

from .conftest import make_client


def test_java_urlencode_matches_urlencoder() -> None:
    assert java_urlencode("a b") == "a%20b"
    assert java_urlencode("é+&=*~._-") == "%C3%A9%2B%26%3D*%7E._-"


def test_verify_rejects_expired_and_wrong_key() -> None:
    params = {
        "command": "listZones",
        "apiKey": "k",
        "signatureVersion": "3",
        "expires": "2000-01-01T00:00:00+0000",
        "response": "json",
    }
    params["signature"] = signature_for(params, "s")
    assert not verify(params, "k", "s")  # expired
    params["expires"] = "2999-01-01T00:00:00+0000"
    params["signature"] = signature_for(params, "s")
    assert verify(params, "k", "s")
    assert not verify(params, "other", "s")
    assert not verify(params, "k", "wrong-secret")


def test_good_signature_get_and_post(sim, client) -> None:
    assert client.listZones(fetch_list=True)[0]["id"] == sim.zone_id
    post = make_client(sim, method="post")
    try:
        assert post.listZones(fetch_list=True)[0]["id"] == sim.zone_id
    finally:
        post.session.close()


def test_special_characters_are_signed_like_java(sim, client) -> None:
    vol = client.createVolume(
        name="d1 é+&=*", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )
    assert vol["volume"]["name"] == "d1 é+&=*"


def test_tilde_fails_like_a_java_server(sim, client) -> None:
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.createVolume(
            name="tilde~name",
            zoneid=sim.zone_id,
            diskofferingid=sim.custom_disk_offering_id,
            size=1,
        )
    assert exc.value.response.status_code == 401
    assert exc.value.error["errorcode"] == 401
    assert exc.value.error["errortext"] == (
        "unable to verify user credentials and/or request signature"
    )


def test_bad_secret_and_unknown_command_are_401(sim) -> None:
    bad = cs.CloudStack(endpoint=sim.endpoint, key=sim.api_key, secret="nope")
    good = make_client(sim)
    try:
        with pytest.raises(cs.CloudStackApiException) as exc:
            bad.listZones()
        assert exc.value.response.status_code == 401
        with pytest.raises(cs.CloudStackApiException) as exc:
            good.listBananas()
        assert exc.value.response.status_code == 401
        assert "listbananasresponse" in exc.value.response.json()
    finally:
        bad.session.close()
        good.session.close()


def test_unsigned_request_is_401(sim) -> None:
    resp = requests.get(
        sim.endpoint, params={"command": "listZones", "response": "json"}, timeout=10
    )
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert resp.json()["listzonesresponse"]["errorcode"] == 401
    resp.close()
