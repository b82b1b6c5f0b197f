"""The replication workflow in-process against the real CloudStack simulator, real qemu-nbd
exports and a stub VMA that copies real bytes with qemu-img into the exports."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from labtest.cloudstack import cloudstack_sim, inject_fault
from labtest.nbd import create_image, qemu_img, qemu_io
from labtest.oma import StubVma, oma_database
from labtest.procs import wait_until
from oma.cloudstack import CloudStackClient
from oma.database.db import database
from oma.database.models import (
    JobDisk,
    JobEvent,
    NbdExport,
    ReplicationJob,
    ReplicaVolume,
    VmContext,
    VmDisk,
)
from oma.database.repos import jobs as jobs_repo
from oma.nbd import ExportManager
from oma.services.poller import ProgressPoller
from oma.services.runner import WorkflowRunner
from oma.workflows.cleanup import CleanupWorkflow, request_cleanup
from oma.workflows.engine import WorkflowEngine
from oma.workflows.replication import ReplicationWorkflow

pytestmark = pytest.mark.slow

MiB = 1 << 20
DISKS = {"2000": 8 * MiB, "2001": 4 * MiB}


@dataclass
class Lab:
    sim: object
    vma: StubVma
    cs: CloudStackClient
    exports: ExportManager
    runner: WorkflowRunner
    poller: ProgressPoller
    context_id: str
    vm_id: str
    sources: dict[str, Path]


def _raw(src: Path, tmp: Path) -> Path:
    out = tmp / f"{src.stem}.raw"
    qemu_img("convert", "-O", "raw", str(src), str(out))
    return out


@pytest.fixture
def lab(tmp_path, lab_context, lab_services):
    vm_id = "4205a841-0265-f4bd-39a6-39fd92196f53"
    sources = {}
    for i, (key, size) in enumerate(DISKS.items()):
        img = create_image(tmp_path / f"src-{key}.qcow2", size)
        qemu_io(img, f"write -P {0x11 + i} 0 1M", f"write -P {0x61 + i} {size - MiB} 512k")
        sources[key] = img
    with (
        cloudstack_sim(tmp_path / "cs") as sim,
        StubVma() as vma,
        oma_database(tmp_path / "oma.db"),
    ):
        vma.sources = {(vm_id, k): p for k, p in sources.items()}
        cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
        # the stub VMA has no certificate and writes with qemu-img in plaintext
        exports = ExportManager(
            port_range=(20100, 20199), state_dir=tmp_path / "exports", allow_plaintext=True
        )
        context_id = lab_context(sim, vma, vm_id, "web-1", DISKS)
        services = lab_services(sim, vma, cs, exports)
        engine = WorkflowEngine("test-worker", lease_seconds=30)
        runner = WorkflowRunner(
            engine,
            ReplicationWorkflow(services),
            services.vma_for,
            others=(CleanupWorkflow(services).definition,),
        )
        poller = ProgressPoller(token_for=lambda _row: vma.token)
        try:
            yield Lab(sim, vma, cs, exports, runner, poller, context_id, vm_id, sources)
        finally:
            poller.close()
            for info in exports.list_running():
                exports.stop(info.pid, info.volume_id)
            cs.close()


def _create_job(lab: Lab, requested: str = "auto") -> str:
    with database.connection_context():
        return jobs_repo.create_job(lab.context_id, requested_type=requested).id


def _job(job_id: str) -> ReplicationJob:
    with database.connection_context():
        return ReplicationJob.get_by_id(job_id)


def _run_to_end(lab: Lab, job_id: str) -> ReplicationJob:
    lab.runner.tick()

    def finished() -> bool:
        lab.poller.tick()
        return _job(job_id).status in ("completed", "failed", "stopped")

    wait_until(finished, timeout=60, interval=0.1, what=f"job {job_id} to finish")
    return _job(job_id)


def test_full_then_incremental_replication(lab, tmp_path, sha256_head):
    job_id = _create_job(lab)
    job = _run_to_end(lab, job_id)
    assert job.status == "completed", job.error_message
    assert job.effective_type == "full"
    with database.connection_context():
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
        disks = {d.disk_key: d for d in VmDisk.select()}
        job_disks = {d.disk_key: d for d in JobDisk.select().where(JobDisk.job == job_id)}
        exports_rows = list(NbdExport.select().where(NbdExport.state == "running"))
        ctx = VmContext.get_by_id(lab.context_id)
        kinds = [
            e.kind for e in JobEvent.select().where(JobEvent.job == job_id).order_by(JobEvent.at)
        ]
    assert set(volumes) == set(DISKS)
    for key, size in DISKS.items():
        vol = volumes[key]
        assert vol.size_bytes >= size and vol.attached_vm_id == lab.sim.oma_vm_id
        assert disks[key].change_id and disks[key].change_id == job_disks[key].change_id
        assert job_disks[key].previous_change_id is None
        assert job_disks[key].target_uri.endswith(f"/vol-{vol.cloudstack_volume_id}")
        raw = _raw(lab.sources[key], tmp_path)
        assert sha256_head(Path(vol.device_path), size) == sha256_head(raw, size)
        cs_vol = lab.cs.get_volume(vol.cloudstack_volume_id)
        assert cs_vol["virtualmachineid"] == lab.sim.oma_vm_id
    assert len(exports_rows) == 2
    assert ctx.ready_for_failover and ctx.active_job_id is None
    for kind in (
        "job_created",
        "status",
        "volume_created",
        "volume_attached",
        "export_started",
        "completed",
    ):
        assert kind in kinds
    first_ids = {k: d.change_id for k, d in disks.items()}
    first_pids = sorted(r.pid for r in exports_rows)

    # second sync: same volumes, same exports, previous change IDs sent per disk
    qemu_io(lab.sources["2000"], "write -P 0x99 2M 64k")
    job2 = _run_to_end(lab, _create_job(lab))
    assert job2.status == "completed", job2.error_message
    assert job2.effective_type == "incremental"
    call = lab.vma.replicate_calls[-1]
    assert {d["disk_key"]: d["previous_change_id"] for d in call["disks"]} == first_ids
    assert call["options"]["target_is_zero"] is False
    with database.connection_context():
        assert {v.disk_key: v.cloudstack_volume_id for v in ReplicaVolume.select()} == {
            k: v.cloudstack_volume_id for k, v in volumes.items()
        }
        assert (
            sorted(r.pid for r in NbdExport.select().where(NbdExport.state == "running"))
            == first_pids
        )
        new_ids = {d.disk_key: d.change_id for d in VmDisk.select()}
    assert all(new_ids[k] != first_ids[k] for k in DISKS)
    raw = _raw(lab.sources["2000"], tmp_path)
    assert sha256_head(Path(volumes["2000"].device_path), DISKS["2000"]) == sha256_head(
        raw, DISKS["2000"]
    )


def test_attach_failure_fails_the_job_with_cloudstacks_text_and_leaks_no_volume(lab):
    inject_fault(lab.sim, "attachVolume", 530, errortext="Failed to attach volume: host down")
    job = _run_to_end(lab, _create_job(lab))
    assert job.status == "failed"
    assert job.error_class == "cloudstack"
    assert "Failed to attach volume: host down" in job.error_message
    assert lab.vma.replicate_calls == []
    with database.connection_context():
        states = {v.state for v in ReplicaVolume.select()}
        ctx = VmContext.get_by_id(lab.context_id)
    assert states <= {"deleted"}
    assert [v for v in lab.cs.list_volumes() if v.get("type") != "ROOT"] == []
    assert list(lab.sim.by_id_dir.iterdir()) == []
    assert lab.exports.list_running() == []
    assert ctx.active_job_id is None
    # the next attempt succeeds from scratch
    job2 = _run_to_end(lab, _create_job(lab))
    assert job2.status == "completed", job2.error_message


def test_stop_request_while_replicating(lab):
    import threading

    lab.vma.gate = threading.Event()
    job_id = _create_job(lab)
    lab.runner.tick()
    assert _job(job_id).status == "replicating"
    with database.connection_context():
        jobs_repo.request_stop(job_id)
    lab.runner.tick()
    job = _job(job_id)
    assert job.status == "stopped"
    assert lab.vma.stop_calls == [job_id]
    with database.connection_context():
        assert VmContext.get_by_id(lab.context_id).active_job_id is None
    lab.vma.gate.set()


def test_one_workflow_per_job_however_often_the_runner_ticks(lab):
    from oma.database.models import Workflow

    lab.vma.stop()  # the replicate call fails: the workflow ends at its last step
    job_id = _create_job(lab)
    for _ in range(3):
        lab.runner.tick()
    with database.connection_context():
        assert Workflow.select().where(Workflow.job == job_id).count() == 1


def test_unreachable_vma_fails_the_job_and_removes_the_fresh_volumes(lab):
    lab.vma.stop()
    job = _run_to_end(lab, _create_job(lab))
    assert (job.status, job.error_class) == ("failed", "vma_unreachable")
    assert job.error_message.startswith("replicate: VMA unreachable")
    with database.connection_context():
        assert {v.state for v in ReplicaVolume.select()} == {"deleted"}
        assert NbdExport.select().where(NbdExport.state == "running").count() == 0
        assert {d.status for d in JobDisk.select().where(JobDisk.job == job.id)} == {"failed"}
    assert [v for v in lab.cs.list_volumes() if v.get("type") != "ROOT"] == []
    assert lab.exports.list_running() == []


def test_stop_requested_during_provisioning(lab):
    job_id = _create_job(lab)
    with database.connection_context():
        lab.runner.create_workflows()
    with database.connection_context():
        stopped = jobs_repo.request_stop(job_id)
    assert stopped.status == "pending" and stopped.stop_requested  # claimed: worker stops it
    lab.runner.tick()
    job = _job(job_id)
    assert job.status == "stopped"
    assert lab.vma.replicate_calls == []
    with database.connection_context():
        assert VmContext.get_by_id(lab.context_id).active_job_id is None


def test_incremental_without_a_previous_sync_is_refused(lab):
    with database.connection_context():
        job_id = jobs_repo.create_job(lab.context_id, requested_type="incremental").id
    job = _run_to_end(lab, job_id)
    assert (job.status, job.error_class) == ("failed", "invalid_request")
    assert "run a full replication" in job.error_message


def test_cleanup_removes_volumes_and_exports(lab):
    from oma.database.models import Workflow

    job = _run_to_end(lab, _create_job(lab))
    assert job.status == "completed", job.error_message
    assert len(lab.exports.list_running()) == 2
    with database.connection_context():
        wf = request_cleanup(lab.context_id)
    lab.runner.tick()
    with database.connection_context():
        assert Workflow.get_by_id(wf.id).status == "done"
        assert {v.state for v in ReplicaVolume.select()} == {"deleted"}
        assert {d.change_id for d in VmDisk.select()} == {None}
        assert VmContext.get_or_none(VmContext.id == lab.context_id) is not None
    assert [v for v in lab.cs.list_volumes() if v.get("type") != "ROOT"] == []
    assert lab.exports.list_running() == []
    assert list(lab.sim.by_id_dir.iterdir()) == []
    # the next replication starts over with fresh volumes and a full copy
    job2 = _run_to_end(lab, _create_job(lab))
    assert (job2.status, job2.effective_type) == ("completed", "full")
    with database.connection_context():
        wf = request_cleanup(lab.context_id, delete_context=True)
    lab.runner.tick()
    with database.connection_context():
        assert Workflow.get_by_id(wf.id).status == "done"
        assert VmContext.get_or_none(VmContext.id == lab.context_id) is None


def test_cleanup_is_refused_while_a_job_is_active(lab):
    from oma.database.models import Workflow
    from oma.errors import InvalidStateError

    lab.vma.gate = threading.Event()
    job_id = _create_job(lab)
    lab.runner.tick()
    with database.connection_context(), pytest.raises(InvalidStateError, match="active job"):
        request_cleanup(lab.context_id)
    wf = _queue_cleanup_unchecked(lab.context_id)  # the worker's check refuses it too
    lab.runner.tick()
    with database.connection_context():
        row = Workflow.get_by_id(wf.id)
    assert row.status == "failed" and "has an active job" in row.error
    assert _job(job_id).status == "replicating"
    lab.vma.gate.set()


def _queue_cleanup_unchecked(context_id: str):
    """A cleanup row as an older API (or a race) could have queued it: no request checks."""
    from oma.workflows.cleanup import KIND, STEPS
    from oma.workflows.engine import Definition, Step

    names = Definition(KIND, [Step(n, lambda _c: None) for n in STEPS])
    with database.connection_context():
        return WorkflowEngine("old-api").create(names, context_id=context_id)


def test_cleanup_is_refused_during_a_failover_and_while_failed_over(lab):
    from oma.database.models import Workflow

    job = _run_to_end(lab, _create_job(lab))
    assert job.status == "completed", job.error_message
    with database.connection_context():
        # a live failover between detach_replicas and deploy_target
        failover = Workflow.create(kind="failover_live", context=lab.context_id, status="running")
    wf = _queue_cleanup_unchecked(lab.context_id)
    lab.runner.tick()
    with database.connection_context():
        row = Workflow.get_by_id(wf.id)
        assert row.status == "failed" and f"active failover ({failover.id})" in row.error
        assert {v.state for v in ReplicaVolume.select()} == {"attached"}
        assert all(d.change_id for d in VmDisk.select())
        # the failover finished: the replicas are the failed-over VM's disks now
        Workflow.update(status="done").where(Workflow.id == failover.id).execute()
        VmContext.update(state="failed_over_live").where(VmContext.id == lab.context_id).execute()
    wf = _queue_cleanup_unchecked(lab.context_id)
    lab.runner.tick()
    with database.connection_context():
        row = Workflow.get_by_id(wf.id)
        assert row.status == "failed" and "failed_over_live" in row.error
        assert {v.state for v in ReplicaVolume.select()} == {"attached"}
    assert len(lab.exports.list_running()) == 2
    assert len([v for v in lab.cs.list_volumes() if v.get("type") != "ROOT"]) == 2
