"""Crashes in the middle of the work, through the real processes: kill -9 of ``oma worker``
during a full copy and during a live failover, of the VMA API server during an incremental,
and of migratekit (the job fails with the reason; a retry moves only the changed bytes).

The lab runs migratekit throttled by its own settings (one connection, one 64 KiB request in
flight), and each test first waits until the VMA reports the copy under way — bytes done but
not all — so the kill provably lands mid-copy.
"""

from __future__ import annotations

import os
import signal

import pytest

from labtest.procs import wait_until

pytestmark = pytest.mark.slow
MiB = 1 << 20
SLOW_LINK_RATE = 4 * MiB  # bytes/s while a test waits to act mid-copy


def _assert_clean_replication(lab, job: dict) -> None:
    """Completed job, bytes equal, one volume per disk on the OMA, one export per volume."""
    assert job["status"] == "completed", job
    lab.assert_replicas_equal()
    volumes = lab.volumes()  # exactly one CloudStack volume per disk (no duplicate after resume)
    assert {v["virtualmachineid"] for v in volumes.values()} == {lab.sim.oma_vm_id}
    exports = lab.oma_export_pids()
    assert len(exports) == len(volumes)
    # the only qemu-nbd processes left serving the test's files are the replica exports: the
    # VMA's source servers of this job (and of any killed attempt) are gone
    lab.settled(exports)
    ctx = lab.context()
    assert ctx["state"] == "ready_for_failover" and ctx["active_job_id"] is None, ctx


def test_worker_killed_during_full_copy_completes(throttled_lab) -> None:
    lab = throttled_lab
    lab.register()
    job_id = lab.replicate("full")
    lab.wait_copying(job_id)
    lab.oma.kill_worker()  # kill -9 while migratekit copies
    assert not lab.oma.worker_process.alive()
    vma_job = lab.vma_job(job_id)
    assert vma_job["status"] == "running"  # the data path does not depend on the worker
    lab.oma.restart_worker()
    job = lab.wait_job(job_id)
    _assert_clean_replication(lab, job)
    assert job["sync_type"] == "full"


def test_vma_killed_during_incremental_completes(throttled_lab) -> None:
    lab = throttled_lab
    lab.register()
    lab.link.rate = None  # set-up sync at full speed
    assert lab.wait_job(lab.replicate("full"))["status"] == "completed"
    lab.link.rate = SLOW_LINK_RATE
    changed = lab.write(0, 4 * MiB, 12 * MiB, seed=5) + lab.write(1, MiB, 2 * MiB, seed=6)
    job_id = lab.replicate("incremental")
    migratekit_pid = lab.wait_copying(job_id)["pid"]
    lab.vma.process.kill()  # kill -9 of the VMA API server's process group
    assert os.path.exists(f"/proc/{migratekit_pid}")  # its own process group: still copying
    lab.vma.starts += 1
    lab.vma.start()  # same port, same data directory
    job = lab.wait_job(job_id)
    _assert_clean_replication(lab, job)
    assert job["sync_type"] == "incremental" and job["bytes_done"] == changed, job


def test_migratekit_killed_fails_with_reason_and_retry_moves_only_changes(throttled_lab) -> None:
    lab = throttled_lab
    lab.register()
    lab.link.rate = None  # set-up sync at full speed
    assert lab.wait_job(lab.replicate("full"))["status"] == "completed"
    lab.link.rate = SLOW_LINK_RATE
    before = {d["disk_key"]: d["change_id"] for d in lab.context()["disks"]}
    changed = lab.write(0, 8 * MiB, 12 * MiB, seed=7) + lab.write(1, 2 * MiB, MiB, seed=8)
    job_id = lab.replicate("incremental")
    pid = lab.wait_copying(job_id)["pid"]
    os.kill(pid, signal.SIGKILL)  # a process the test's VMA started for this job
    failed = lab.wait_job(job_id)
    assert failed["status"] == "failed", failed
    assert "signal 9" in (failed["error_message"] or ""), failed
    ctx = lab.context()
    assert ctx["active_job_id"] is None  # the VM is free for a retry
    # the change IDs stay those of the last completed sync: the retry is still incremental
    assert {d["disk_key"]: d["change_id"] for d in ctx["disks"]} == before

    lab.link.rate = None
    retry = lab.wait_job(lab.replicate("auto"))
    _assert_clean_replication(lab, retry)
    assert retry["sync_type"] == "incremental"
    assert retry["bytes_done"] == changed, retry  # only the changed blocks, not the disks


def test_worker_killed_during_failover_completes(throttled_lab) -> None:
    lab = throttled_lab
    lab.register()
    lab.link.rate = None  # set-up sync at full speed
    assert lab.wait_job(lab.replicate("full"))["status"] == "completed"
    lab.link.rate = SLOW_LINK_RATE
    changed = lab.write(0, 16 * MiB, 16 * MiB, seed=9)
    rec = lab.start_failover()

    def final_sync_copying() -> bool:
        now = lab.ok("GET", f"failovers/{rec['id']}")
        job_id = now.get("final_sync_job_id")
        if not job_id:
            return False
        vma_job = lab.vma_job(job_id)
        p = (vma_job or {}).get("progress") or {}
        return p.get("phase") == "copy" and 0 < p.get("bytes_done", 0) < p.get("bytes_total", 0)

    wait_until(final_sync_copying, timeout=60, interval=0.02, what="the final sync mid-copy")
    lab.oma.kill_worker()  # kill -9 in the middle of the failover's final sync
    steps = {s["name"]: s["status"] for s in lab.ok("GET", f"failovers/{rec['id']}")["steps"]}
    assert steps["power_off_source"] == "done" and steps["final_sync"] == "running", steps
    lab.link.rate = None
    lab.oma.restart_worker()
    done = lab.wait_failover(rec["id"])
    lab.assert_failed_over(done)
    assert done["result"]["final_sync_bytes"] == changed


def test_worker_killed_while_cloudstack_deploys_the_target_completes_without_duplicates(
    lab,
) -> None:
    from labtest.cloudstack import clear_faults, inject_fault
    from oma.cloudstack import CloudStackClient

    lab.register()
    assert lab.wait_job(lab.replicate("full"))["status"] == "completed"
    inject_fault(lab.sim, "deployVirtualMachine", None, once=False, delay=3.0)
    rec = lab.start_failover()
    cs = CloudStackClient(lab.sim.endpoint, lab.sim.api_key, lab.sim.secret_key, poll_interval=0.05)
    try:

        def deploying() -> bool:
            return any(v["id"] != lab.sim.oma_vm_id for v in cs.list_vms())

        wait_until(deploying, timeout=60, interval=0.05, what="deployVirtualMachine to be called")
        lab.oma.kill_worker()  # dies while CloudStack's deploy job is still pending
        steps = {s["name"]: s["status"] for s in lab.ok("GET", f"failovers/{rec['id']}")["steps"]}
        assert steps["deploy_target"] == "running", steps
        clear_faults(lab.sim)
        lab.oma.restart_worker()
        done = lab.wait_failover(rec["id"])
        lab.assert_failed_over(done)
        others = [v for v in cs.list_vms() if v["id"] != lab.sim.oma_vm_id]
    finally:
        cs.close()
    assert [v["id"] for v in others] == [done["result"]["target_vm_id"]]  # adopted, not redeployed
