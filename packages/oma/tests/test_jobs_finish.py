"""Ending a job — one implementation (``repos.jobs.finish_job``) behind every path.

The worker (poller, workflow runner, stop requests) and the repository helpers
(``complete_job``/``fail_job``/``stop_job``/``request_stop``) must leave the same rows: the job
terminal, the VM's "one active job" guard released, and the context in the state an operator
expects — after a failed or stopped sync, back to ``ready_for_failover`` when an earlier sync
succeeded (the failover's final sync starts from the last completed change IDs), else
``failed`` (or ``discovered`` when an operator stopped the very first sync).
On SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from oma.database.db import write_transaction
from oma.database.models import JobEvent, ReplicationJob, VmContext, VmDisk
from oma.database.repos import contexts, jobs
from oma.errors import InvalidStateError
from oma.workflows.failover import store as failover_store

PARAMS = {"type": "live", "network_mappings": {"VM Network": "n1"}, "service_offering_id": "s"}


def _context(vm_id: str = "vm-1") -> str:
    ctx = contexts.create_context(
        vcenter="vc",
        vm_id=vm_id,
        name=vm_id,
        disks=[{"disk_key": key, "capacity_bytes": 1} for key in ("2000", "2001")],
    )
    return ctx.id


def _worker_fail(job_id: str) -> None:
    with write_transaction():
        assert jobs.finish_job(
            job_id, jobs.JobStatus.FAILED, error_class="vma_reported", message="boom"
        )


def _repo_fail(job_id: str) -> None:
    jobs.fail_job(job_id, "vma_reported", "boom")


def _worker_stop(job_id: str) -> None:
    with write_transaction():
        assert jobs.finish_job(job_id, jobs.JobStatus.STOPPED, message="stopped by operator")


def _repo_stop(job_id: str) -> None:
    jobs.stop_job(job_id)


def _request_stop(job_id: str) -> None:
    assert jobs.request_stop(job_id).status == "stopped"  # pending, unclaimed: at once


ENDINGS: dict[str, tuple[Callable[[str], None], str]] = {
    "worker-fail": (_worker_fail, "failed"),
    "repo-fail": (_repo_fail, "failed"),
    "worker-stop": (_worker_stop, "stopped"),
    "repo-stop": (_repo_stop, "stopped"),
    "request-stop": (_request_stop, "stopped"),
}


def _row(context_id: str) -> VmContext:
    return VmContext.get_by_id(context_id)


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_failed_incremental_returns_to_ready_for_failover(any_db: str, ending: str) -> None:
    end, status = ENDINGS[ending]
    ctx = _context()
    first = jobs.create_job(ctx, requested_type="full")
    jobs.complete_job(first.id, {"2000": "52 aa/1", "2001": "52 bb/1"})
    success_at = _row(ctx).last_success_at
    second = jobs.create_job(ctx, requested_type="incremental")
    assert (_row(ctx).state, _row(ctx).ready_for_failover) == ("replicating", False)

    end(second.id)

    job = ReplicationJob.get_by_id(second.id)
    assert job.status == status and job.active_context_id is None and job.finished_at
    row = _row(ctx)
    assert (row.state, row.ready_for_failover, row.active_job_id) == (
        "ready_for_failover",
        True,
        None,
    )
    assert row.last_job_id == second.id and row.last_success_at == success_at
    # the change IDs of the last completed sync stay: the next sync starts from them
    assert {d.disk_key: d.change_id for d in VmDisk.select()} == {
        "2000": "52 aa/1",
        "2001": "52 bb/1",
    }
    kinds = JobEvent.select().where(JobEvent.job == second.id).order_by(JobEvent.at)
    assert [e.kind for e in kinds][-1] == status
    # and the VM can fail over (the failover's final sync repairs the partial incremental)
    wf, resumed = failover_store.start_failover(ctx, PARAMS)
    assert wf.kind == "failover_live" and not resumed
    # a second ending of the same job is refused everywhere
    with write_transaction():
        assert not jobs.finish_job(second.id, jobs.JobStatus.FAILED, message="again")
    with pytest.raises(InvalidStateError):
        jobs.fail_job(second.id, "x", "again")


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_first_sync_that_ends_badly(any_db: str, ending: str) -> None:
    end, status = ENDINGS[ending]
    ctx = _context()
    job = jobs.create_job(ctx)
    end(job.id)
    row = _row(ctx)
    expected = "failed" if status == "failed" else "discovered"
    assert (row.state, row.ready_for_failover, row.active_job_id) == (expected, False, None)
    assert row.last_success_at is None
    # the guard is released: a new job may start at once
    assert jobs.create_job(ctx).status == "pending"


def test_completion_stores_change_ids_only_when_the_job_moves(any_db: str) -> None:
    ctx = _context()
    job = jobs.create_job(ctx)
    with write_transaction():
        assert jobs.finish_job(job.id, jobs.JobStatus.COMPLETED, change_ids={"2000": "c1"})
    row = ReplicationJob.get_by_id(job.id)
    assert (row.status, row.percent, row.error_class, row.error_message) == (
        "completed",
        100.0,
        None,
        None,
    )
    assert {d.disk_key: d.change_id for d in VmDisk.select()} == {"2000": "c1", "2001": None}
    with write_transaction():  # already completed: nothing moves, nothing is overwritten
        assert not jobs.finish_job(job.id, jobs.JobStatus.COMPLETED, change_ids={"2000": "c2"})
    assert VmDisk.get(VmDisk.disk_key == "2000").change_id == "c1"
    ctx_row = _row(ctx)
    assert (ctx_row.state, ctx_row.ready_for_failover) == ("ready_for_failover", True)
    assert ctx_row.last_success_at is not None
