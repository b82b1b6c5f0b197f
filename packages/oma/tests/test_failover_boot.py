"""The failed-over VM boots as the source did, through the real processes: vcsim lab VMs
(EFI + secure boot, a SATA boot disk, two NICs, a guest OS without template), the real VMA API
server, `oma serve` + `oma worker` and the CloudStack simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.labvm import create_lab_vm, lab_disk_sha256
from labtest.oma import oma_services, register_lab
from labtest.procs import wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from oma.cloudstack import CloudStackClient
from oma.vma_client import VmaClient

pytestmark = pytest.mark.slow
MiB = 1 << 20


@dataclass
class Lab:
    vc: Any
    sim: Any
    vma: Any
    oma: Any
    vms: dict[str, dict[str, Any]]
    vma_id: str = ""

    def api(self, method: str, path: str, body: Any = None, expected: int = 200) -> Any:
        status, data = self.oma.api(method, path, body)
        assert status == expected, (method, path, status, data)
        return data

    def add(self, name: str) -> str:
        """Add a lab VM to the OMA through discovery → its context id."""
        vc = self.vc
        added = self.api(
            "POST",
            "discovery/add",
            {
                "vma_id": self.vma_id,
                "vcenter": f"{vc.host}:{vc.port}",
                "username": vc.username,
                "password": vc.password,
                "insecure": True,
                "vm_ids": [self.vms[name]["id"]],
            },
            201,
        )
        return added["added"][0]["id"]

    def failover_body(self, mappings: dict[str, str], **more: Any) -> dict[str, Any]:
        return {
            "type": "live",
            "network_mappings": mappings,
            "service_offering_id": self.sim.custom_service_offering_id,
            "keep_macs": True,
            "graceful_timeout_s": 5,
            "force": True,
            **more,
        }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("boot")
    images = tmp / "images"
    with vcsim(tmp / "vc") as vc, cloudstack_sim(tmp / "cs") as sim:
        vms = {
            "uefi-sata": create_lab_vm(
                vc,
                images,
                "uefi-sata",
                [8 * MiB, 4 * MiB],
                seed=5,
                guest_id="rhel8_64Guest",
                firmware="efi",
                secure_boot=True,
                controllers=["scsi", "sata"],
                networks=["VM Network"],
            ),
            "two-nics": create_lab_vm(
                vc,
                images,
                "two-nics",
                [MiB],
                fill="zero",
                guest_id="rhel8_64Guest",
                networks=["VM Network", "DC0_DVPG0"],
            ),
            "solaris": create_lab_vm(
                vc, images, "solaris", [MiB], fill="zero", guest_id="solaris11_64Guest"
            ),
        }
        with (
            vma_server(tmp / "vma", vcenter=vc, lab_dir=images) as vma,
            oma_services(tmp / "oma", cloudstack=sim) as oma,
        ):
            running = Lab(vc, sim, vma, oma, vms)
            running.vma_id = register_lab(oma, vma=vma, sim=sim)
            yield running


def _replicate(lab: Lab, context_id: str) -> dict:
    job_id = lab.api("POST", "replications", {"vm_context_id": context_id}, 202)["id"]
    wait_until(
        lambda: (
            lab.api("GET", f"replications/{job_id}")["status"] in ("completed", "failed", "stopped")
        ),
        timeout=120,
        interval=0.2,
        what=f"replication {job_id}",
    )
    return lab.api("GET", f"replications/{job_id}")


def test_uefi_source_with_a_sata_boot_disk_boots_uefi_from_that_disk(
    lab: Lab, sha256_head: Callable[[Path, int], str]
) -> None:
    vm = lab.vms["uefi-sata"]
    scsi, sata = vm["disks"]
    # the SATA disk is not the lowest key: a BIOS/UEFI tries SATA before SCSI
    assert int(sata["key"]) > int(scsi["key"]) and sata["controller_type"] == "sata"
    context_id = lab.add("uefi-sata")
    spec = lab.api("GET", f"vm-contexts/{context_id}")["spec"]
    assert (spec["firmware"], spec["secure_boot"]) == ("efi", True)
    assert [d["controller_type"] for d in spec["disks"]] == ["scsi", "sata"]
    with VmaClient(lab.vma.url, lab.vma.token, verify=str(lab.vma.ca_file)) as client:
        client.power_on(vm["id"])
    assert _replicate(lab, context_id)["status"] == "completed"

    # no template_id: the OMA picks the template whose OS type matches rhel8_64Guest
    body = lab.failover_body({"VM Network": lab.sim.network_id})
    started = lab.api("POST", f"vm-contexts/{context_id}/failover", body, 202)
    wait_until(
        lambda: lab.api("GET", f"failovers/{started['id']}")["status"] in ("completed", "failed"),
        timeout=180,
        interval=0.2,
        what="the failover",
    )
    done = lab.api("GET", f"failovers/{started['id']}")
    assert done["status"] == "completed", done
    assert done["result"]["target_vm_name"] == "uefi-sata"
    assert done["result"]["devices"] == {sata["key"]: 0, scsi["key"]: 1}

    cs = CloudStackClient(lab.sim.endpoint, lab.sim.api_key, lab.sim.secret_key, poll_interval=0.05)
    try:
        target = cs.get_vm(done["result"]["target_vm_id"])
        attached = {v["deviceid"]: v for v in cs.list_volumes(vm_id=target["id"])}
    finally:
        cs.close()
    assert target["state"] == "Running"
    assert (target["boottype"], target["bootmode"]) == ("Uefi", "secure")
    assert target["templateid"] == lab.sim.template_ids["rhel8-migrated"]
    assert target["osdisplayname"] == "Red Hat Enterprise Linux 8"
    assert [n["macaddress"] for n in target["nic"]] == [vm["nics"][0]["mac"]]
    assert sorted(attached) == [0, 1]
    root = attached[0]
    assert root["type"] == "ROOT" and root["name"] == f"oma-{context_id[:8]}-{sata['key']}"
    assert attached[1]["name"] == f"oma-{context_id[:8]}-{scsi['key']}"
    backing = lab.sim.state_dir / "volumes" / f"{root['id']}.img"
    size = int(sata["capacity_bytes"])
    assert sha256_head(backing, size) == lab_disk_sha256(vm["images"][sata["key"]], size=size)


def test_two_nics_mapped_to_one_network_are_refused_naming_both(lab: Lab) -> None:
    vm = lab.vms["two-nics"]
    context_id = lab.add("two-nics")
    first, second = vm["nics"]
    one = lab.sim.network_id
    body = lab.failover_body({"VM Network": one, "DC0_DVPG0": one})
    status, answer = lab.oma.api("POST", f"vm-contexts/{context_id}/failover", body)
    assert status == 422, answer  # fits the schema; the VM's NICs refuse it
    error = answer["error"]
    assert error["field"] == "network_mappings"
    assert f"NIC 1 {first['label']!r} MAC {first['mac']}" in error["message"]
    assert f"NIC 2 {second['label']!r} MAC {second['mac']}" in error["message"]
    assert f"both mapped to network {one}" in error["message"]
    assert lab.api("GET", f"vm-contexts/{context_id}/failovers")["items"] == []
    # on two networks the request passes this check (and meets the next: not replicated yet)
    other = next(i for n, i in lab.sim.network_ids.items() if i != one)
    body["network_mappings"] = {"VM Network": one, "DC0_DVPG0": other}
    status, answer = lab.oma.api("POST", f"vm-contexts/{context_id}/failover", body)
    assert status == 409 and "not ready_for_failover" in answer["error"]["message"], answer


def test_no_template_for_the_guest_os_and_none_named_is_refused(lab: Lab) -> None:
    context_id = lab.add("solaris")
    body = lab.failover_body({"VM Network": lab.sim.network_id})
    status, answer = lab.oma.api("POST", f"vm-contexts/{context_id}/failover", body)
    assert status == 422, answer
    error = answer["error"]
    assert error["field"] == "template_id"
    assert "guest OS (solaris11_64Guest) maps to no CloudStack OS type" in error["message"]
    for name, template_id in lab.sim.template_ids.items():
        assert f"{name} ({template_id}, " in error["message"]
    # a template that does not exist is refused the same way
    body["template_id"] = "no-such-template"
    status, answer = lab.oma.api("POST", f"vm-contexts/{context_id}/failover", body)
    assert status == 422 and answer["error"]["field"] == "template_id", answer
    assert "template no-such-template does not exist" in answer["error"]["message"]
    # naming an existing template passes the check (and meets the next one)
    body["template_id"] = lab.sim.template_ids["rhel8-migrated"]
    status, answer = lab.oma.api("POST", f"vm-contexts/{context_id}/failover", body)
    assert status == 409 and "not ready_for_failover" in answer["error"]["message"], answer
    assert lab.api("GET", f"vm-contexts/{context_id}/failovers")["items"] == []
