"""Live failover through the real processes: `oma serve` + `oma worker`, the CloudStack
simulator, vcsim and the real VMA API server replicating a lab VM with migratekit — with a
kill -9 of the worker during the failover and an injected deployVirtualMachine failure."""

from __future__ import annotations

from typing import Any

import pytest

from labtest.cloudstack import cloudstack_sim, inject_fault
from labtest.labvm import create_lab_vm, lab_disk_sha256, write_lab_disk
from labtest.oma import oma_services
from labtest.procs import wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from oma.cloudstack import CloudStackClient
from oma.nbd import ExportManager
from oma.vma_client import VmaClient

pytestmark = pytest.mark.slow
MiB = 1 << 20
SIZES = [24 * MiB, 8 * MiB]


def _ok(status_body: tuple[int, Any], expected: int = 200) -> Any:
    status, body = status_body
    assert status == expected, body
    return body


@pytest.fixture
def stack(tmp_path):
    with vcsim(tmp_path / "vc") as vc, cloudstack_sim(tmp_path / "cs") as sim:
        vm = create_lab_vm(vc, tmp_path / "images", "db-1", SIZES, seed=7)
        with (
            vma_server(tmp_path / "vma", vcenter=vc, lab_dir=tmp_path / "images") as vma,
            oma_services(tmp_path / "oma", cloudstack=sim) as oma,
        ):
            yield vc, sim, vm, vma, oma


def _replicate(oma, context_id: str) -> dict:
    job_id = _ok(oma.api("POST", "replications", {"vm_context_id": context_id}), 202)["id"]

    def done() -> bool:
        return _ok(oma.api("GET", f"replications/{job_id}"))["status"] in (
            "completed",
            "failed",
            "stopped",
        )

    wait_until(done, timeout=120, interval=0.2, what=f"replication {job_id}")
    return _ok(oma.api("GET", f"replications/{job_id}"))


def _failover(oma, failover_id: str) -> dict:
    return _ok(oma.api("GET", f"failovers/{failover_id}"))


def _wait_settled(oma, failover_id: str) -> dict:
    wait_until(
        lambda: _failover(oma, failover_id)["status"] in ("completed", "failed"),
        timeout=180,
        interval=0.2,
        what=f"failover {failover_id}",
    )
    return _failover(oma, failover_id)


def test_live_failover_survives_a_worker_kill_and_a_deploy_failure(
    stack, tmp_path, register_lab_vm, sha256_head
):
    vc, sim, vm, vma, oma = stack
    context_id = register_lab_vm(vc, sim, vm, vma, oma)
    with VmaClient(vma.url, vma.token, verify=str(vma.ca_file) if vma.ca_file else True) as client:
        if client.power_state(vm["id"]) != "poweredOn":
            client.power_on(vm["id"])
        assert client.power_state(vm["id"]) == "poweredOn"
    full = _replicate(oma, context_id)
    assert full["status"] == "completed", full

    # the source keeps changing until it is powered off; the final sync carries the change
    key0 = str(vm["disks"][0]["key"])
    write_lab_disk(tmp_path / "images", vm["id"], key0, 3 * MiB, (0x3C, 128 * 1024))
    inject_fault(sim, "deployVirtualMachine", 530, errortext="Insufficient capacity in zone1")
    mappings = {n["network"]: sim.network_id for n in vm.get("nics") or []} or {
        "VM Network": sim.network_id
    }
    body = {
        "type": "live",
        "network_mappings": mappings,
        "service_offering_id": sim.custom_service_offering_id,
        "template_id": sim.template_id,
        "keep_macs": True,
        "graceful_timeout_s": 5,
        "force": True,
    }
    started = _ok(oma.api("POST", f"vm-contexts/{context_id}/failover", body), 202)
    fo_id = started["id"]

    def final_sync_running() -> bool:
        fo = _failover(oma, fo_id)
        steps = {s["name"]: s for s in fo["steps"]}
        return steps["final_sync"]["status"] == "running" and bool(fo["final_sync_job_id"])

    wait_until(final_sync_running, timeout=60, interval=0.1, what="the final sync to start")
    oma.kill_worker()  # kill -9 while the failover waits for its final sync
    oma.restart_worker()

    failed = _wait_settled(oma, fo_id)
    assert failed["status"] == "failed", failed
    steps = {s["name"]: s for s in failed["steps"]}
    assert steps["deploy_target"]["status"] == "failed"
    assert "Insufficient capacity in zone1" in steps["deploy_target"]["error"]
    assert "Insufficient capacity in zone1" in failed["error"]
    assert steps["final_sync"]["status"] == "done" and steps["final_sync"]["attempts"] == 1

    retried = _ok(oma.api("POST", f"failovers/{fo_id}/retry"), 202)
    assert retried["resumed"] is True
    done = _wait_settled(oma, fo_id)
    assert done["status"] == "completed", done
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["guest_conversion"]["status"] == "skipped"
    assert all(s["status"] in ("done", "skipped") for s in done["steps"])
    assert all(s["duration_seconds"] is not None for s in done["steps"])
    result = done["result"]
    assert result["downtime_seconds"] > 0
    assert result["final_sync_bytes"] > 0

    sync = _ok(oma.api("GET", f"replications/{result['final_sync_job_id']}"))
    assert sync["status"] == "completed" and sync["sync_type"] == "incremental"
    assert 0 < sync["bytes_total"] <= 2 * MiB  # only what changed since the full sync
    ctx = _ok(oma.api("GET", f"vm-contexts/{context_id}"))
    assert ctx["state"] == "failed_over_live"

    with VmaClient(vma.url, vma.token, verify=str(vma.ca_file) if vma.ca_file else True) as client:
        assert client.power_state(vm["id"]) == "poweredOff"
    cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
    try:
        target = cs.get_vm(result["target_vm_id"])
        assert target["state"] == "Running"
        attached = sorted(cs.list_volumes(vm_id=target["id"]), key=lambda v: v["deviceid"])
        assert [(v["type"], v["deviceid"]) for v in attached] == [("ROOT", 0), ("DATADISK", 1)]
        by_name = {v["name"]: v for v in attached}
        assert cs.list_volumes(vm_id=sim.oma_vm_id) == [
            v for v in cs.list_volumes(vm_id=sim.oma_vm_id) if v["type"] == "ROOT"
        ]
    finally:
        cs.close()
    for index, disk in enumerate(vm["disks"]):
        key, size = str(disk["key"]), int(disk["capacity_bytes"])
        vol = by_name[f"oma-{context_id[:8]}-{key}"]
        assert vol["deviceid"] == index  # boot disk (first key) is device 0
        backing = sim.state_dir / "volumes" / f"{vol['id']}.img"
        assert sha256_head(backing, size) == lab_disk_sha256(vm["images"][key], size=size)
    assert ExportManager(state_dir=oma.data_dir / "exports").list_running() == []
    assert list(sim.by_id_dir.iterdir()) == []
