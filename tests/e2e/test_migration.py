"""The lab migration end to end, as the demo runs it: full sync, guest writes, incremental
sync, live failover — with byte equality and API/CloudStack/vCenter state asserted after each
step, and no leftovers (qemu-nbd processes, source snapshots, misattached replicas)."""

from __future__ import annotations

import pytest

from labtest.procs import wait_until

pytestmark = pytest.mark.slow
MiB = 1 << 20
FAILOVER_DONE = ("completed", "failed")


def _full_and_incremental(lab) -> dict[str, dict]:
    """Register, full sync, guest writes, incremental sync; returns the two jobs."""
    lab.register()
    ctx = lab.context()
    assert ctx["state"] == "discovered" and ctx["active_job_id"] is None
    assert sorted(d["disk_key"] for d in ctx["disks"]) == sorted(
        str(d["key"]) for d in lab.vm["disks"]
    )

    full_id = lab.replicate("auto")
    full = lab.wait_job(full_id)
    assert full["status"] == "completed", full
    assert full["sync_type"] == "full"
    assert 0 < full["bytes_done"] <= sum(int(d["capacity_bytes"]) for d in lab.vm["disks"])
    ctx = lab.context()
    assert ctx["state"] == "ready_for_failover" and ctx["ready_for_failover"] is True
    assert ctx["active_job_id"] is None and ctx["last_job_id"] == full_id
    assert all(d["change_id"] for d in ctx["disks"]), ctx["disks"]
    lab.assert_replicas_equal()
    volumes = lab.volumes()
    assert {v["virtualmachineid"] for v in volumes.values()} == {lab.sim.oma_vm_id}
    assert len(lab.oma_export_pids()) == len(lab.vm["disks"])
    assert lab.source_snapshots() == []  # the VMA removed its sync snapshot

    # the guest writes 1 MiB into disk 0 and 512 KiB into disk 1
    lab.write(0, 7 * MiB, MiB, seed=1)
    lab.write(1, 3 * MiB, 512 * 1024, seed=2)
    incr_id = lab.replicate("incremental")
    incr = lab.wait_job(incr_id)
    assert incr["status"] == "completed", incr
    assert incr["sync_type"] == "incremental"
    # only the changed blocks move (bitmap granularity 64 KiB; the writes are aligned)
    assert incr["bytes_done"] == MiB + 512 * 1024, incr
    lab.assert_replicas_equal()
    ctx2 = lab.context()
    old = {d["disk_key"]: d["change_id"] for d in ctx["disks"]}
    assert all(d["change_id"] and d["change_id"] != old[d["disk_key"]] for d in ctx2["disks"])
    assert lab.volumes() == volumes or {k: v["id"] for k, v in lab.volumes().items()} == {
        k: v["id"] for k, v in volumes.items()
    }
    assert lab.source_snapshots() == []
    return {"full": full, "incremental": incr}


def failover_body(lab) -> dict:
    """A live failover request mapping the VM's network to the simulator's network."""
    return {
        "type": "live",
        "network_mappings": {"VM Network": lab.sim.network_id},
        "service_offering_id": lab.sim.custom_service_offering_id,
        "template_id": lab.sim.template_id,
        "keep_macs": True,
        "graceful_timeout_s": 2,
        "force": True,
    }


def start_failover(lab) -> dict:
    """POST the failover (skips the test while the OMA has no failover endpoint)."""
    status, body = lab.oma.api("POST", f"vm-contexts/{lab.context_id}/failover", failover_body(lab))
    if (
        status == 404
        and (body or {}).get("error", {}).get("code") == "not_found"
        and not (body["error"].get("field"))
    ):
        pytest.skip("this OMA has no live failover endpoint yet (issue #6, F1)")
    assert status == 202, body
    return body


def wait_failover(lab, failover_id: str, timeout: float = 180) -> dict:
    """Poll ``GET /failovers/{id}`` until it is completed or failed."""
    wait_until(
        lambda: lab.ok("GET", f"failovers/{failover_id}")["status"] in FAILOVER_DONE,
        timeout=timeout,
        interval=0.2,
        what=f"failover {failover_id}",
    )
    return lab.ok("GET", f"failovers/{failover_id}")


def assert_failed_over(lab, rec: dict) -> None:
    """State after a completed live failover: target running on the replicas, bytes equal."""
    from oma.cloudstack import CloudStackClient

    assert rec["status"] == "completed", rec
    steps = rec["steps"]
    assert steps and all(s["status"] in ("done", "completed", "skipped") for s in steps), steps
    result = rec["result"]
    assert result["downtime_seconds"] > 0, rec
    assert rec["final_sync_job_id"] == result["final_sync_job_id"], rec
    ctx = lab.context()
    assert ctx["state"] == "failed_over_live", ctx
    assert lab.power_state() == "poweredOff"
    assert lab.source_snapshots() == []

    volumes = lab.volumes()
    vm_ids = {v.get("virtualmachineid") for v in volumes.values()}
    # every replica is attached to the new VM, none to the OMA or anywhere else
    assert vm_ids == {result["target_vm_id"]} and lab.sim.oma_vm_id not in vm_ids, volumes
    target_vm_id = result["target_vm_id"]
    api_volumes = {v["disk_key"]: v for v in ctx["volumes"]}
    assert {k: v["attached_vm_id"] for k, v in api_volumes.items()} == {
        k: target_vm_id for k in volumes
    }
    cs = CloudStackClient(lab.sim.endpoint, lab.sim.api_key, lab.sim.secret_key, poll_interval=0.05)
    try:
        (target,) = [v for v in cs.list_vms() if v["id"] == target_vm_id]
        attached = cs.list_volumes(vm_id=target_vm_id)
    finally:
        cs.close()
    assert target["state"] == "Running", target
    keys = sorted((str(d["key"]) for d in lab.vm["disks"]), key=int)
    by_device = {int(v["deviceid"]): v["id"] for v in attached}
    assert by_device[0] == volumes[keys[0]]["id"]  # the boot disk's replica is the ROOT
    assert sorted(by_device) == list(range(len(keys)))  # the template's ROOT is gone
    assert [by_device[i] for i in range(1, len(keys))] == [volumes[k]["id"] for k in keys[1:]]
    nic_macs = {n["mac"] for n in lab.vm.get("nics", [])}
    if nic_macs:
        assert {n.get("macaddress") for n in target.get("nic", [])} == nic_macs
    lab.assert_replicas_equal()
    assert lab.oma_export_pids() == set()  # exports of the replicas were stopped


def test_full_incremental_and_live_failover(lab) -> None:
    jobs = _full_and_incremental(lab)
    # more guest writes: the failover's final sync must carry them
    lab.write(0, 20 * MiB, 256 * 1024, seed=3)
    rec = start_failover(lab)
    assert rec["steps"] and rec["status"] in ("pending", "running", "completed"), rec
    # a second failover for the same VM while one runs is refused
    status, body = lab.oma.api("POST", f"vm-contexts/{lab.context_id}/failover", failover_body(lab))
    assert status == 409, body
    done = wait_failover(lab, rec["id"])
    assert_failed_over(lab, done)
    final = [
        j
        for j in lab.ok("GET", f"replications?vm_context_id={lab.context_id}")["items"]
        if j["id"] not in (jobs["full"]["id"], jobs["incremental"]["id"])
    ]
    assert len(final) == 1 and final[0]["status"] == "completed", final
    assert final[0]["id"] == done["final_sync_job_id"]
    assert final[0]["sync_type"] == "incremental" and final[0]["bytes_done"] == 256 * 1024
    assert done["result"]["final_sync_bytes"] == 256 * 1024
