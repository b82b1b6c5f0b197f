"""Replicas attach on demand within the OMA VM's attach budget.

In-process worker parts (admission, replication workflow, poller) against the real CloudStack
simulator, real qemu-nbd exports and a stub VMA that copies real bytes: what is attached to the
OMA VM is read from the simulator, never from our own rows.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.nbd import create_image, qemu_img, qemu_io
from labtest.oma import StubVma, oma_database
from labtest.procs import wait_until
from migration_common import utcnow
from oma.cloudstack import CloudStackClient
from oma.database.db import database
from oma.database.models import (
    CloudStackTarget,
    JobEvent,
    ReplicationJob,
    ReplicaVolume,
    VmaAppliance,
    VmContext,
    VmDisk,
)
from oma.database.repos import jobs as jobs_repo
from oma.nbd import ExportManager
from oma.services.poller import ProgressPoller
from oma.services.runner import WorkflowRunner
from oma.workflows.cleanup import CleanupWorkflow
from oma.workflows.engine import Definition, Step, WorkflowEngine
from oma.workflows.replicas import reconcile_attachments
from oma.workflows.replication import ReplicationWorkflow

pytestmark = pytest.mark.slow

MiB = 1 << 20
SIZE = 2 * MiB


@pytest.fixture
def budget_lab(tmp_path, lab_context, lab_services):
    """Five single-disk VMs on one OMA VM whose attach budget is 2."""
    with (
        cloudstack_sim(tmp_path / "cs") as sim,
        StubVma() as vma,
        oma_database(tmp_path / "oma.db"),
    ):
        contexts: dict[str, str] = {}
        for i in range(5):
            vm_id = f"4205a841-0000-0000-0000-00000000000{i}"
            img = create_image(tmp_path / f"src-{i}.qcow2", SIZE)
            qemu_io(img, f"write -P {0x21 + i} 0 1M")
            vma.sources[(vm_id, "2000")] = img
            if i == 0:
                contexts[vm_id] = lab_context(sim, vma, vm_id, f"vm-{i}", {"2000": SIZE})
            else:
                with database.connection_context():
                    first = VmContext.get_by_id(next(iter(contexts.values())))
                    ctx = VmContext.create(
                        vma=first.vma_id,
                        target=first.target_id,
                        vcenter="vc.lab",
                        vm_id=vm_id,
                        name=f"vm-{i}",
                    )
                    VmDisk.create(context=ctx.id, disk_key="2000", capacity_bytes=SIZE)
                contexts[vm_id] = ctx.id
        cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
        # the stub VMA has no certificate and writes with qemu-img in plaintext
        exports = ExportManager(
            port_range=(20300, 20399), state_dir=tmp_path / "exports", allow_plaintext=True
        )
        services = dataclasses.replace(lab_services(sim, vma, cs, exports), attach_budget=2)
        runner = WorkflowRunner(
            WorkflowEngine("test-worker", lease_seconds=30),
            ReplicationWorkflow(services),
            services.vma_for,
            others=(CleanupWorkflow(services).definition,),
        )
        poller = ProgressPoller(token_for=lambda _row: vma.token)
        try:
            yield SimpleNamespace(
                sim=sim, vma=vma, cs=cs, runner=runner, poller=poller, contexts=contexts
            )
        finally:
            poller.close()
            for info in exports.list_running():
                exports.stop(info.pid, info.volume_id)
            cs.close()


def _attached(cs: CloudStackClient, oma_vm_id: str) -> list[str]:
    """Data volumes CloudStack (the simulator) has on the OMA VM now."""
    return [v["id"] for v in cs.list_volumes(vm_id=oma_vm_id) if v["type"] == "DATADISK"]


def _jobs(ids: list[str]) -> dict[str, ReplicationJob]:
    with database.connection_context():
        return {j.id: j for j in ReplicationJob.select().where(ReplicationJob.id.in_(ids))}


def _drive(runner, poller, cs, sim, ids: list[str], peak: list[int]) -> dict[str, ReplicationJob]:
    """Run worker ticks until every job ended; record the most volumes ever on the OMA VM."""

    def ended() -> bool:
        runner.tick()
        peak.append(len(_attached(cs, sim.oma_vm_id)))
        poller.tick()
        peak.append(len(_attached(cs, sim.oma_vm_id)))
        return all(j.status in ("completed", "failed", "stopped") for j in _jobs(ids).values())

    wait_until(ended, timeout=120, interval=0.05, what="every job to end")
    return _jobs(ids)


def test_jobs_wait_for_room_and_evict_idle_replicas(budget_lab, tmp_path, sha256_head):
    sim, vma, cs, runner, poller = (
        budget_lab.sim,
        budget_lab.vma,
        budget_lab.cs,
        budget_lab.runner,
        budget_lab.poller,
    )
    contexts = budget_lab.contexts
    with database.connection_context():
        ids = [jobs_repo.create_job(c).id for c in contexts.values()]
    runner.tick()  # admission: two jobs fit, three wait
    jobs = _jobs(ids)
    waiting = [j for j in jobs.values() if j.status == "pending"]
    assert len(waiting) == 3
    first = min(waiting, key=lambda j: j.created_at)
    assert "waiting for room on the OMA VM" in first.wait_reason
    assert "OMA_ATTACH_BUDGET=2" in first.wait_reason
    assert all(
        j.wait_reason.startswith(f"queued behind job {first.id}") for j in waiting if j is not first
    )

    peak: list[int] = []
    jobs = _drive(runner, poller, cs, sim, ids, peak)
    assert {j.status for j in jobs.values()} == {"completed"}, [
        j.error_message for j in jobs.values()
    ]
    assert max(peak) <= 2
    assert len(_attached(cs, sim.oma_vm_id)) == 2  # the two synced last stay attached, idle
    with database.connection_context():
        evictions = [
            e.message
            for e in JobEvent.select().where(JobEvent.kind == "volume_detached")
            if "to make room" in e.message
        ]
        assert len(evictions) == 3
        assert all(j.wait_reason is None for j in ReplicationJob.select())
        replicas = {rv.context_id: rv for rv in ReplicaVolume.select()}
    # every replica holds its source's bytes: detached ones read back from their backing file
    for vm_id, ctx_id in contexts.items():
        rv = replicas[ctx_id]
        raw = tmp_path / f"{ctx_id}.raw"
        qemu_img("convert", "-O", "raw", str(vma.sources[(vm_id, "2000")]), str(raw))
        backing = sim.state_dir / "volumes" / f"{rv.cloudstack_volume_id}.img"
        assert sha256_head(backing, SIZE) == sha256_head(raw, SIZE)

    # a second round: every VM syncs incrementally again, re-attaching on demand
    with database.connection_context():
        again = [jobs_repo.create_job(c).id for c in contexts.values()]
    peak = []
    jobs = _drive(runner, poller, cs, sim, again, peak)
    assert {(j.status, j.effective_type) for j in jobs.values()} == {("completed", "incremental")}
    assert max(peak) <= 2


def test_a_vm_with_more_disks_than_the_budget_fails_at_once(budget_lab):
    sim, cs, runner = budget_lab.sim, budget_lab.cs, budget_lab.runner
    ctx_id = next(iter(budget_lab.contexts.values()))
    with database.connection_context():
        for key in ("2001", "2002"):
            VmDisk.create(context=ctx_id, disk_key=key, capacity_bytes=SIZE)
        job_id = jobs_repo.create_job(ctx_id).id
    runner.tick()
    job = _jobs([job_id])[job_id]
    assert job.status == "failed" and job.error_class == "invalid_request"
    assert "has 3 disks but the OMA VM can attach at most 2" in job.error_message
    assert _attached(cs, sim.oma_vm_id) == []


def test_reconcile_settles_rows_with_what_cloudstack_shows(budget_lab, tmp_path):
    sim, cs = budget_lab.sim, budget_lab.cs
    ids = list(budget_lab.contexts.values())
    with database.connection_context():
        target = CloudStackTarget.get()
        VmaAppliance.get()  # the lab's one VMA exists
        vols = [
            cs.create_volume(
                f"oma-test-{i}",
                zone_id=sim.zone_id,
                disk_offering_id=sim.custom_disk_offering_id,
                size_bytes=SIZE,
            )
            for i in range(2)
        ]
        old = utcnow() - timedelta(hours=1)
        # a crash after booking the slot, before CloudStack attached: row attaching, volume free
        stale = ReplicaVolume.create(
            context=ids[0],
            disk_key="2000",
            cloudstack_volume_id=vols[0]["id"],
            size_bytes=SIZE,
            state="attaching",
            attached_vm_id=sim.oma_vm_id,
            updated_at=old,
        )
        # a crash after CloudStack attached, before the row said so
        cs.attach_volume(vols[1]["id"], sim.oma_vm_id)
        adopted = ReplicaVolume.create(
            context=ids[1],
            disk_key="2000",
            cloudstack_volume_id=vols[1]["id"],
            size_bytes=SIZE,
            state="detached",
        )
        counts = reconcile_attachments(cs, target, sim.by_id_dir)
        stale, adopted = ReplicaVolume.get_by_id(stale.id), ReplicaVolume.get_by_id(adopted.id)
    assert counts == {"detached": 1, "attached": 1}
    assert stale.state == "detached" and stale.attached_vm_id is None
    assert adopted.state == "attached" and adopted.attached_vm_id == sim.oma_vm_id
    assert Path(adopted.device_path).exists()


def test_a_failovers_final_sync_is_not_blocked_by_its_own_replicas(budget_lab):
    """A failover holds its VM's attached replicas; its final sync needs exactly those."""
    sim, cs, runner, poller = budget_lab.sim, budget_lab.cs, budget_lab.runner, budget_lab.poller
    runner.admission.budget = runner.replication.s.attach_budget = 1
    ctx_id = next(iter(budget_lab.contexts.values()))
    with database.connection_context():
        first = jobs_repo.create_job(ctx_id).id
    jobs = _drive(runner, poller, cs, sim, [first], [])
    assert jobs[first].status == "completed"
    assert len(_attached(cs, sim.oma_vm_id)) == 1  # its replica stays attached, idle
    with database.connection_context():
        steps = Definition("failover_live", [Step("final_sync", lambda _c: None)])
        WorkflowEngine("api").create(steps, context_id=ctx_id, params={})  # a failover runs
        final = jobs_repo.create_job(ctx_id, requested_type="incremental").id
    runner.tick()
    job = _jobs([final])[final]
    assert job.status != "pending" and job.wait_reason is None, job.wait_reason
    jobs = _drive(runner, poller, cs, sim, [final], [])
    assert jobs[final].status == "completed" and jobs[final].effective_type == "incremental"


def test_a_failovers_final_sync_is_not_queued_behind_a_job_waiting_for_its_replicas(budget_lab):
    """Two failovers, room for one replica: the VM whose replica is attached (held by its
    failover) syncs first, although the other VM's job is older and waits for that room."""
    sim, cs, runner, poller = budget_lab.sim, budget_lab.cs, budget_lab.runner, budget_lab.poller
    runner.admission.budget = runner.replication.s.attach_budget = 1
    holder, other = list(budget_lab.contexts.values())[:2]
    with database.connection_context():
        first = jobs_repo.create_job(holder).id
    assert _drive(runner, poller, cs, sim, [first], [])[first].status == "completed"
    with database.connection_context():
        steps = Definition("failover_live", [Step("final_sync", lambda _c: None)])
        for ctx_id in (holder, other):
            WorkflowEngine("api").create(steps, context_id=ctx_id, params={})
        older = jobs_repo.create_job(other).id
        final = jobs_repo.create_job(holder, requested_type="incremental").id
    runner.tick()
    jobs = _jobs([older, final])
    assert jobs[older].status == "pending"
    assert "waiting for room on the OMA VM" in jobs[older].wait_reason
    assert jobs[final].status != "pending" and jobs[final].wait_reason is None, jobs[final]
    jobs = _drive(runner, poller, cs, sim, [final], [])
    assert jobs[final].status == "completed" and jobs[final].effective_type == "incremental"
