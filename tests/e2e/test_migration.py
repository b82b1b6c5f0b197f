"""The lab migration end to end, as the demo runs it: full sync, guest writes, incremental
sync, live failover — with byte equality and API/CloudStack/vCenter state asserted after each
step, and no leftovers (qemu-nbd processes, source snapshots, misattached replicas)."""

from __future__ import annotations

import pytest

from labtest.procs import wait_until

pytestmark = pytest.mark.slow
MiB = 1 << 20


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
    exports = lab.oma_export_pids()
    assert len(exports) == len(lab.vm["disks"])
    lab.settled(exports)  # the VMA stopped its source servers and removed its snapshot
    # the database: the job finished and released the VM; the change IDs are stored
    assert lab.db(
        "SELECT status, effective_type, active_context_id FROM replication_jobs WHERE id = ?",
        full_id,
    ) == [("completed", "full", None)]
    assert lab.db("SELECT state, active_job_id FROM vm_contexts") == [("ready_for_failover", None)]
    assert lab.db("SELECT COUNT(*) FROM vm_disks WHERE change_id IS NULL") == [(0,)]
    assert lab.db("SELECT COUNT(*) FROM nbd_exports WHERE state = 'running'") == [(2,)]

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
    # the same volumes, still attached to the OMA only, still exported
    assert {k: (v["id"], v["virtualmachineid"]) for k, v in lab.volumes().items()} == {
        k: (v["id"], lab.sim.oma_vm_id) for k, v in volumes.items()
    }
    exports = lab.oma_export_pids()
    assert len(exports) == len(volumes)  # idle replicas stay attached and exported
    lab.settled(exports)
    return {"full": full, "incremental": incr}


def test_full_incremental_and_live_failover(lab) -> None:
    jobs = _full_and_incremental(lab)
    # more guest writes: the failover's final sync must carry them
    lab.write(0, 20 * MiB, 256 * 1024, seed=3)
    rec = lab.start_failover()
    assert rec["steps"] and rec["status"] in ("pending", "running", "completed"), rec
    # a second failover for the same VM while one runs is refused
    status, body = lab.oma.api(
        "POST", f"vm-contexts/{lab.context_id}/failover", lab.failover_body()
    )
    assert status == 409, body
    done = lab.wait_failover(rec["id"])
    lab.assert_failed_over(done)
    final = [
        j
        for j in lab.ok("GET", f"replications?vm_context_id={lab.context_id}")["items"]
        if j["id"] not in (jobs["full"]["id"], jobs["incremental"]["id"])
    ]
    assert len(final) == 1 and final[0]["status"] == "completed", final
    assert final[0]["id"] == done["final_sync_job_id"]
    assert final[0]["sync_type"] == "incremental" and final[0]["bytes_done"] == 256 * 1024
    assert done["result"]["final_sync_bytes"] == 256 * 1024
    # the database after the failover
    assert lab.db("SELECT status FROM workflows WHERE id = ?", rec["id"]) == [("done",)]
    steps = lab.db(
        "SELECT name, status FROM workflow_steps WHERE workflow_id = ? ORDER BY position",
        rec["id"],
    )
    assert [n for n, _ in steps] == [s["name"] for s in done["steps"]]
    assert {st for _, st in steps} == {"done"}
    assert lab.db("SELECT state, active_job_id FROM vm_contexts") == [("failed_over_live", None)]
    assert lab.db("SELECT COUNT(*) FROM replication_jobs WHERE active_context_id IS NOT NULL") == [
        (0,)
    ]
    assert lab.db("SELECT COUNT(*) FROM nbd_exports WHERE state = 'running'") == [(0,)]
    # every sync went over NBD with TLS, to exports only this VMA's certificate opens
    uris = [u for (u,) in lab.db("SELECT target_uri FROM job_disks")]
    assert uris and all(u.startswith("nbds://127.0.0.1:") for u in uris), uris
    assert {tls for (tls,) in lab.db("SELECT tls FROM nbd_exports")} == {1}


def test_rollback_after_live_failover_then_replicate_again(lab) -> None:
    _full_and_incremental(lab)
    rec = lab.start_failover()
    done = lab.wait_failover(rec["id"])
    assert done["status"] == "completed", done
    target_vm_id = done["result"]["target_vm_id"]
    ctx = lab.context()
    change_ids = {d["disk_key"]: d["change_id"] for d in ctx["disks"]}
    assert lab.db(
        "SELECT status FROM workflow_steps WHERE workflow_id = ? AND name = 'snapshot_replicas'",
        rec["id"],
    ) == [("done",)]

    # the target VM "runs": its guest writes into every replica while attached to it
    volumes = lab.volumes()
    assert {v.get("virtualmachineid") for v in volumes.values()} == {target_vm_id}
    for vol in volumes.values():
        with open(lab.sim.state_dir / "volumes" / f"{vol['id']}.img", "r+b") as f:
            for offset in (0, 5 * MiB):
                f.seek(offset)
                f.write(b"\xee" * (256 * 1024))

    lab.ok("POST", f"failovers/{rec['id']}/rollback", {}, 202)
    wait_until(
        lambda: lab.ok("GET", f"failovers/{rec['id']}")["status"] in ("rolled_back", "failed"),
        timeout=120,
        interval=0.2,
        what="the rollback",
    )
    rolled = lab.ok("GET", f"failovers/{rec['id']}")
    assert rolled["status"] == "rolled_back", rolled
    assert {s["status"] for s in rolled["rollback"]["steps"]} <= {"completed", "done", "skipped"}
    # the replicas were reverted to their snapshots of the final sync: the chain is kept
    ctx = lab.context()
    assert ctx["state"] == "ready_for_failover"
    assert {d["disk_key"]: d["change_id"] for d in ctx["disks"]} == change_ids
    outcome = rolled["result"]["rollback"]
    assert outcome["chain_kept"] is True and outcome["full_sync"] == {}, outcome
    assert sorted(outcome["reverted"]) == sorted(change_ids)
    assert lab.power_state() == "poweredOn"  # the source runs again
    volumes = lab.volumes()
    # the replicas wait detached: the next sync attaches them to the OMA on demand
    assert {v.get("virtualmachineid") for v in volumes.values()} == {None}
    from oma.cloudstack import CloudStackClient

    cs = CloudStackClient(lab.sim.endpoint, lab.sim.api_key, lab.sim.secret_key, poll_interval=0.05)
    try:
        assert target_vm_id not in {v["id"] for v in cs.list_vms()}  # destroyed
        assert cs.list_snapshots() == []  # the rollback deleted its snapshots
    finally:
        cs.close()
    assert lab.oma_export_pids() == set()  # exports follow the attachment

    # the guest writes again; the next sync moves exactly those bytes, not the target's
    lab.write(0, 9 * MiB, 512 * 1024, seed=4)
    lab.write(1, MiB, 256 * 1024, seed=5)
    again = lab.wait_job(lab.replicate("auto"))
    assert again["status"] == "completed" and again["sync_type"] == "incremental", again
    assert again["bytes_done"] == 512 * 1024 + 256 * 1024, again
    lab.assert_replicas_equal()
    lab.settled(lab.oma_export_pids())
    assert lab.context()["state"] == "ready_for_failover"
