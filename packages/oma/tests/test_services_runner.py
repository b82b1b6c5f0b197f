"""The workflow runner's database work on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import uuid

from oma.database.models import ReplicationJob, VmContext, Workflow, WorkflowStep
from oma.database.repos import jobs as jobs_repo
from oma.services.runner import WorkflowRunner
from oma.workflows.engine import Definition, Step, StepWaiting, WorkflowEngine
from oma.workflows.replication import ReplicationServices, ReplicationWorkflow


def _runner(worker_id: str = "w-1") -> WorkflowRunner:
    services = ReplicationServices(cloudstack_for=None, vma_for=None, exports=None, by_id_dir=None)
    return WorkflowRunner(WorkflowEngine(worker_id), ReplicationWorkflow(services), None)


def test_pending_jobs_get_one_workflow_each_on_every_database(any_db):
    ids = []
    for i in range(3):
        ctx = VmContext.create(vcenter="vc", vm_id=str(uuid.uuid4()), name=f"vm-{i}")
        ids.append(jobs_repo.create_job(ctx.id).id)
    runner = _runner()
    assert runner.create_workflows() == 3
    assert _runner("w-2").create_workflows() == 0  # already has its workflow
    rows = {w.job_id: w for w in Workflow.select()}
    assert set(rows) == set(ids)
    names = [
        s.name
        for s in WorkflowStep.select()
        .where(WorkflowStep.workflow == rows[ids[0]].id)
        .order_by(WorkflowStep.position)
    ]
    assert names == ["prepare", "volumes", "attach", "exports", "replicate"]
    assert {j.claimed_by for j in ReplicationJob.select()} == {"w-1"}


def test_stop_requests_without_a_vma_finish_the_job(any_db):
    ctx = VmContext.create(vcenter="vc", vm_id=str(uuid.uuid4()), name="vm")
    job = jobs_repo.create_job(ctx.id)
    ReplicationJob.update(status="replicating", stop_requested=True).where(
        ReplicationJob.id == job.id
    ).execute()
    assert _runner().handle_stop_requests() == 1
    assert ReplicationJob.get_by_id(job.id).status == "stopped"
    assert VmContext.get_by_id(ctx.id).active_job_id is None


def test_a_job_whose_workflow_ended_without_finishing_it_is_failed(any_db):
    ctx = VmContext.create(vcenter="vc", vm_id=str(uuid.uuid4()), name="vm")
    job = jobs_repo.create_job(ctx.id)
    runner = _runner()
    runner.create_workflows()
    ReplicationJob.update(status="provisioning").where(ReplicationJob.id == job.id).execute()
    Workflow.update(status="failed").where(Workflow.job == job.id).execute()
    assert runner.sweep_orphaned_jobs() == 1
    row = ReplicationJob.get_by_id(job.id)
    assert (row.status, row.error_class) == ("failed", "internal")
    assert VmContext.get_by_id(ctx.id).active_job_id is None
    assert runner.sweep_orphaned_jobs() == 0


def test_leases_of_dead_workers_on_this_host_are_released(any_db):
    from oma.services._queries import release_dead_local_leases

    ctx = VmContext.create(vcenter="vc", vm_id=str(uuid.uuid4()), name="vm")
    job = jobs_repo.create_job(ctx.id)
    runner = _runner("host-a-111")
    runner.create_workflows()
    assert runner.engine.claim(["replication"]) is not None
    ReplicationJob.update(
        status="replicating", claimed_by="host-a-222", lease_until=ReplicationJob.created_at
    ).where(ReplicationJob.id == job.id).execute()
    alive = {111: False, 222: True}
    assert release_dead_local_leases("host-a", alive=alive.__getitem__) == ["host-a-111"]
    assert Workflow.get(Workflow.job == job.id).lease_until is None
    assert ReplicationJob.get_by_id(job.id).lease_until is not None  # 222 still alive
    assert release_dead_local_leases("host-b", alive=lambda _pid: False) == []


def test_waiting_workflows_do_not_take_the_turn_of_younger_ones(any_db):
    """More older workflows waiting (failovers waiting for their final syncs) than a tick runs:
    the younger workflow still runs in the first tick."""
    ran: list[str] = []

    def wait(_ctx) -> None:
        raise StepWaiting("waiting for the final sync")

    waiting = Definition("failover_live", [Step("final_sync", wait)])
    working = Definition("cleanup", [Step("work", lambda _ctx: ran.append("work"))])
    runner = WorkflowRunner(
        WorkflowEngine("w-1"),
        ReplicationWorkflow(
            ReplicationServices(cloudstack_for=None, vma_for=None, exports=None, by_id_dir=None)
        ),
        None,
        others=(waiting, working),
        max_per_tick=2,
    )
    for _ in range(3):
        runner.engine.create(waiting, params={})
    young = runner.engine.create(working, params={})
    counts = runner.tick()
    assert ran == ["work"]
    assert (counts["ran"], counts["waiting"]) == (4, 3)
    assert Workflow.get_by_id(young.id).status == "done"
