"""vCenter routes through the real server against a real vcsim: discovery, VM, power, CBT."""

from __future__ import annotations

import json
import stat

import pytest

from labtest.vcsim import vcsim
from labtest.vma import vma_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with vcsim(tmp_path_factory.mktemp("vcsim")) as info:
        yield info


def _discover_body(sim, **extra):
    return {
        "vcenter": f"{sim.host}:{sim.port}",
        "username": sim.username,
        "password": sim.password,
        "insecure": True,
        **extra,
    }


def test_discover_remembers_credentials_for_vm_operations(sim, tmp_path):
    with vma_server(tmp_path) as vma:  # no vCenter configured
        status, err = vma.request("GET", "vms/whatever/power")
        assert status == 409 and err["error"]["code"] == "vcenter_not_configured"

        vms = vma.post("discover", _discover_body(sim))["vms"]
        assert vms, "vcsim serves VMs"
        vm = next(v for v in vms if v["disks"] and v["nics"])
        assert {"id", "name", "path", "power_state", "disks", "nics"} <= set(vm)

        stored = vma.data_dir / "vcenter.json"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert json.loads(stored.read_text())["username"] == sim.username
        assert sim.password.encode() not in stored.read_bytes()  # encrypted at rest
        log = (tmp_path / "vma-api-1.log").read_text()
        assert sim.password not in log

        assert vma.get(f"vms/{vm['id']}")["id"] == vm["id"]
        status, err = vma.request("GET", "vms/no-such-vm")
        assert status == 404 and err["error"]["code"] == "vm_not_found"


def test_discover_bad_input_and_bad_login(sim, tmp_path):
    with vma_server(tmp_path) as vma:
        body = _discover_body(sim)
        body.pop("password")
        status, err = vma.request("POST", "discover", body)
        assert status == 422 and err["error"]["field"] == "password"
        status, err = vma.request("POST", "discover", _discover_body(sim, vcenter="h:99999"))
        assert status == 422 and err["error"]["field"] == "vcenter"
        status, err = vma.request("POST", "discover", dict(_discover_body(sim), password="wrong"))
        assert status == 502 and err["error"]["code"] == "vcenter_unreachable"
        assert not (vma.data_dir / "vcenter.json").exists()


def test_power_and_cbt(sim, tmp_path):
    with vma_server(tmp_path, vcenter=sim) as vma:
        vm = vma.post("discover", _discover_body(sim))["vms"][0]
        vm_id = vm["id"]
        vma.post(f"vms/{vm_id}/power-on")
        assert vma.get(f"vms/{vm_id}/power") == {"vm_id": vm_id, "power_state": "poweredOn"}
        off = vma.post(f"vms/{vm_id}/power-off", {"graceful": True, "timeout_s": 2, "force": True})
        assert off["power_state"] == "poweredOff"
        assert off["method"] in ("graceful", "forced")
        again = vma.post(f"vms/{vm_id}/power-off", {"graceful": True, "timeout_s": 2})
        assert again["method"] == "already_off"
        on = vma.post(f"vms/{vm_id}/power-on")
        assert on["power_state"] == "poweredOn"
        status, err = vma.request("POST", f"vms/{vm_id}/power-off", {"timeout_s": -1})
        assert status == 422 and err["error"]["field"] == "timeout_s"

        assert vma.get(f"vms/{vm_id}/cbt")["vm_id"] == vm_id
        enabled = vma.post(f"vms/{vm_id}/cbt/enable")
        assert enabled["enabled"] is True
        assert vma.get(f"vms/{vm_id}/cbt")["enabled"] is True
