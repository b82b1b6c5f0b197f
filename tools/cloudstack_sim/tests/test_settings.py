"""Global settings: command line, fixture, ``/sim/settings``, persistence, default.page.size."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import cs
import pytest

from labtest.cloudstack import cloudstack_sim, get_settings, set_settings
from labtest.procs import free_port

from .conftest import make_client


def _put(sim, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(f"{sim.admin_url}/settings", method="PUT", data=body)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_defaults_are_real_like(sim) -> None:
    settings = get_settings(sim)
    assert settings["custom.diskoffering.size.max"] == 1024
    assert settings["custom.diskoffering.size.min"] == 1
    assert settings["storage.max.volume.size"] == 2000
    assert settings["allow.user.expunge.recover.vm"] is False
    assert settings["default.page.size"] == 500
    assert settings["sim.account.type"] == "admin"
    assert settings["sim.kvm.max.data.volumes"] == 32
    assert settings["sim.attach.delay"] == 0


def test_put_validates_every_field_and_changes_nothing_on_error(sim) -> None:
    status, body = _put(sim, json.dumps({"default.page.size": 100, "no.such": 1}).encode())
    assert status == 400 and body["error"]["field"] == "no.such"
    status, body = _put(sim, json.dumps({"allow.user.expunge.recover.vm": "maybe"}).encode())
    assert status == 400 and body["error"]["field"] == "allow.user.expunge.recover.vm"
    status, body = _put(sim, json.dumps({"sim.account.type": "root"}).encode())
    assert status == 400 and body["error"]["field"] == "sim.account.type"
    status, body = _put(sim, b"[1]")
    assert status == 400 and body["error"]["field"] == "body"
    status, body = _put(sim, b"{nope")
    assert status == 400 and body["error"]["field"] == "body"
    assert get_settings(sim)["default.page.size"] == 500
    assert set_settings(sim, **{"default.page.size": 100})["default.page.size"] == 100


def test_settings_from_fixture_persist_across_restart(tmp_path) -> None:
    with cloudstack_sim(tmp_path, settings={"allow.user.expunge.recover.vm": True}) as sim:
        assert get_settings(sim)["allow.user.expunge.recover.vm"] is True
        set_settings(sim, **{"sim.attach.delay": 0.25})
    with cloudstack_sim(tmp_path) as sim:  # kept in the state, like CloudStack's database
        settings = get_settings(sim)
        assert settings["allow.user.expunge.recover.vm"] is True
        assert settings["sim.attach.delay"] == 0.25


def test_bad_setting_on_the_command_line_stops_startup(tmp_path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudstack_sim",
            "--port",
            str(free_port()),
            "--state-dir",
            str(tmp_path),
            "--setting",
            "default.page.size=lots",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "default.page.size" in res.stderr


def test_page_size_above_default_page_size_is_refused(tmp_path) -> None:
    """BaseListCmd.getPageSize: `cs` always asks for pagesize=500 in paged lists."""
    with cloudstack_sim(tmp_path, settings={"default.page.size": 100}) as sim:
        client = make_client(sim)
        try:
            with pytest.raises(cs.CloudStackApiException) as exc:
                client.listZones(fetch_list=True)
            assert exc.value.response.status_code == 431
            assert exc.value.error["errortext"] == (
                "Page size can't exceed max allowed page size value: 100"
            )
            assert client.listZones(page=1, pagesize=100)["count"] == 1
            with pytest.raises(cs.CloudStackApiException) as exc:
                client.listZones(pagesize=10)
            assert exc.value.error["errortext"] == (
                '"page" parameter is required when "pagesize" is specified'
            )
            set_settings(sim, **{"default.page.size": -1})  # unlimited
            assert len(client.listZones(fetch_list=True)) == 1
        finally:
            client.session.close()
