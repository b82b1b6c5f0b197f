"""Test failover in-process against the real CloudStack simulator, real qemu-nbd exports and
the stub VMA (a real HTTP server copying real bytes with qemu-img): started while an
incremental sync runs, ended with nothing left in CloudStack, resumed after a crash, and a
live failover that ends the test first."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.nbd import create_image, qemu_img, qemu_io
from labtest.oma import StubVma, oma_database
from labtest.procs import wait_until
from oma.cloudstack import CloudStackClient
from oma.database.db import database
from oma.database.models import ReplicationJob, ReplicaVolume, VmContext, Workflow, WorkflowStep
from oma.database.repos import jobs as jobs_repo
from oma.errors import ConflictError, InvalidStateError
from oma.nbd import ExportManager
from oma.services.poller import ProgressPoller
from oma.services.runner import WorkflowRunner
from oma.workflows import kinds, records
from oma.workflows.engine import StepContext, WorkflowEngine
from oma.workflows.failover import store
from oma.workflows.failover import test as tests_repo
from oma.workflows.replication import ReplicationWorkflow

pytestmark = pytest.mark.slow

MiB = 1 << 20
DISKS = {"2000": 8 * MiB, "2001": 4 * MiB}
VM_ID = "4205a841-0265-f4bd-39a6-39fd92196f53"
SPEC = {
    "cpus": 2,
    "memory_mb": 2048,
    "nics": [{"label": "Network adapter 1", "network": "VM Network", "mac": "00:50:56:aa:bb:01"}],
}


@dataclass
class Lab:
    sim: Any
    vma: StubVma
    cs: CloudStackClient
    exports: ExportManager
    runner: WorkflowRunner
    poller: ProgressPoller
    context_id: str
    sources: dict[str, Path]


@pytest.fixture
def lab(tmp_path, lab_context, lab_services):
    sources = {}
    for i, (key, size) in enumerate(DISKS.items()):
        img = create_image(tmp_path / f"src-{key}.qcow2", size)
        qemu_io(img, f"write -P {0x31 + i} 0 1M", f"write -P {0x61 + i} {size - MiB} 512k")
        sources[key] = img
    with (
        cloudstack_sim(tmp_path / "cs") as sim,
        StubVma() as vma,
        oma_database(tmp_path / "oma.db"),
    ):
        vma.sources = {(VM_ID, k): p for k, p in sources.items()}
        cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
        # the stub VMA has no certificate and writes with qemu-img in plaintext
        exports = ExportManager(
            port_range=(20300, 20399), state_dir=tmp_path / "exports", allow_plaintext=True
        )
        context_id = lab_context(sim, vma, VM_ID, "web_1.lab", DISKS, spec=SPEC)
        services = lab_services(sim, vma, cs, exports)
        engine = WorkflowEngine("test-worker", lease_seconds=30)
        others = tuple(d for d in kinds.definitions(services) if d.kind != kinds.REPLICATION)
        runner = WorkflowRunner(
            engine, ReplicationWorkflow(services), services.vma_for, others=others
        )
        poller = ProgressPoller(token_for=lambda _row: vma.token)
        try:
            yield Lab(sim, vma, cs, exports, runner, poller, context_id, sources)
        finally:
            if vma.gate is not None:
                vma.gate.set()
            poller.close()
            for info in exports.list_running():
                exports.stop(info.pid, info.volume_id)
            cs.close()


def _tick(lab: Lab) -> None:
    lab.runner.tick()
    lab.poller.tick()


def _job(job_id: str) -> ReplicationJob:
    with database.connection_context():
        return ReplicationJob.get_by_id(job_id)


def _wf(wf_id: str) -> Workflow:
    with database.connection_context():
        return Workflow.get_by_id(wf_id)


def _context(lab: Lab) -> VmContext:
    with database.connection_context():
        return VmContext.get_by_id(lab.context_id)


def _steps(wf_id: str) -> dict[str, WorkflowStep]:
    with database.connection_context():
        return {s.name: s for s in records.steps_of(wf_id)}


def _request_sync(lab: Lab, kind: str = "auto") -> str:
    with database.connection_context():
        return jobs_repo.create_job(lab.context_id, requested_type=kind).id


def _until(lab: Lab, check: Any, what: str) -> None:
    def done() -> bool:
        _tick(lab)
        return bool(check())

    wait_until(done, timeout=90, interval=0.05, what=what)


def _replicate(lab: Lab, kind: str = "auto") -> ReplicationJob:
    job_id = _request_sync(lab, kind)
    _until(lab, lambda: _job(job_id).status in ("completed", "failed", "stopped"), job_id)
    return _job(job_id)


def _drive(lab: Lab, wf_id: str, until: tuple[str, ...] = ("done", "failed")) -> Workflow:
    _until(lab, lambda: _wf(wf_id).status in until, f"workflow {wf_id}")
    return _wf(wf_id)


def _params(lab: Lab, **over: Any) -> dict[str, Any]:
    params = {
        "type": "test",
        "network_mappings": {"VM Network": lab.sim.network_ids["guest-net-2"]},
        "service_offering_id": lab.sim.custom_service_offering_id,
        "template_id": lab.sim.template_id,
        "keep_macs": False,
        "vm_name": None,
        "boot_disk_key": None,
        "auto_end_after": None,
    }
    params.update(over)
    return params


def _start_test(lab: Lab, **over: Any) -> str:
    with database.connection_context():
        return tests_repo.start_test(lab.context_id, _params(lab, **over)).id


def _end_test(lab: Lab) -> str:
    with database.connection_context():
        return tests_repo.end_test(lab.context_id).id


def inventory(cs: CloudStackClient) -> dict[str, Any]:
    """What CloudStack holds: VMs that are not Destroyed/expunged, volumes (with their VM) and
    snapshots."""
    return {
        "vms": sorted((v["id"], v["name"], v["state"]) for v in cs.list_vms()),
        "volumes": sorted(v["id"] for v in cs.list_volumes()),
        "snapshots": sorted(s["id"] for s in cs.list_snapshots()),
    }


def _raw(src: Path, tmp: Path) -> Path:
    out = tmp / f"{src.stem}.raw"
    qemu_img("convert", "-O", "raw", str(src), str(out))
    return out


def _backing(lab: Lab, volume_id: str) -> Path:
    return lab.sim.state_dir / "volumes" / f"{volume_id}.img"


def test_a_test_failover_during_an_incremental_then_end_leaves_cloudstack_as_before(
    lab, tmp_path, sha256_head
):
    assert _replicate(lab).status == "completed"
    before = inventory(lab.cs)
    qemu_io(lab.sources["2000"], "write -P 0x5A 3M 256k")  # the incremental's change

    # an incremental sync runs (the VMA holds it) when the test is asked for
    lab.vma.gate = threading.Event()
    job_id = _request_sync(lab)
    _until(lab, lambda: _job(job_id).status == "replicating", "the sync replicating")
    assert _context(lab).state == "replicating"
    test_id = _start_test(lab)
    _until(lab, lambda: _steps(test_id)["snapshot_replicas"].status == "running", "snapshots")
    waiting = _steps(test_id)["snapshot_replicas"].data["_waiting"]
    assert waiting.startswith(f"waiting for replication job {job_id} to finish")
    assert _context(lab).state == "failed_over_test"
    assert lab.cs.list_snapshots() == []  # nothing is snapshotted under a running sync

    lab.vma.gate.set()
    test = _drive(lab, test_id)
    assert test.status == "done", test.error
    job = _job(job_id)
    assert job.status == "completed" and job.effective_type == "incremental"
    ctx = _context(lab)
    assert ctx.state == "failed_over_test" and ctx.ready_for_failover  # the sync completed
    assert [s.status for s in _steps(test_id).values()] == ["done"] * 6

    # the test VM runs on copies of the replicas as of the snapshot (the completed sync)
    result = test.result
    vm = lab.cs.get_vm(result["test_vm_id"])
    assert (vm["name"], vm["state"]) == ("web-1-lab-test", "Running")
    assert [n["networkid"] for n in vm["nic"]] == [lab.sim.network_ids["guest-net-2"]]
    assert vm["nic"][0]["macaddress"] != SPEC["nics"][0]["mac"]  # the source's MAC stays its own
    on_vm = {v["id"]: v for v in lab.cs.list_volumes(vm_id=vm["id"])}
    copies = result["volumes"]
    assert set(on_vm) == set(copies.values())
    assert (on_vm[copies["2000"]]["type"], on_vm[copies["2000"]]["deviceid"]) == ("ROOT", 0)
    with database.connection_context():
        replica_ids = {r.disk_key: r.cloudstack_volume_id for r in ReplicaVolume.select()}
    assert not set(copies.values()) & set(replica_ids.values())
    raws = {k: _raw(lab.sources[k], tmp_path) for k in DISKS}
    for key, size in DISKS.items():
        assert sha256_head(_backing(lab, copies[key]), size) == sha256_head(raws[key], size)

    # syncs go on while the test runs: the replica moves on, the test VM's copy does not
    qemu_io(lab.sources["2000"], "write -P 0x6B 5M 128k")
    later = _replicate(lab)
    assert later.status == "completed" and later.effective_type == "incremental"
    assert _context(lab).state == "failed_over_test"
    (tmp_path / "later").mkdir()
    changed = _raw(lab.sources["2000"], tmp_path / "later")
    size = DISKS["2000"]
    assert sha256_head(_backing(lab, replica_ids["2000"]), size) == sha256_head(changed, size)
    assert sha256_head(_backing(lab, copies["2000"]), size) == sha256_head(raws["2000"], size)

    # a second test and a live failover are refused while this one is in place
    with database.connection_context():
        with pytest.raises(ConflictError, match="already has a test failover in place"):
            tests_repo.start_test(lab.context_id, _params(lab))
        with pytest.raises(InvalidStateError, match="failed_over_test"):
            store.start_failover(lab.context_id, {"type": "live"})

    end_id = _end_test(lab)
    end = _drive(lab, end_id)
    assert end.status == "done", end.error
    assert inventory(lab.cs) == before
    ctx = _context(lab)
    assert (ctx.state, ctx.ready_for_failover) == ("ready_for_failover", True)
    assert _wf(test_id).status == "ended" and _wf(test_id).result["end_id"] == end_id
    # the replicas are whole: the next sync is incremental
    assert _replicate(lab).effective_type == "incremental"


def test_a_worker_crash_mid_test_resumes_without_duplicates(lab, monkeypatch):
    assert _replicate(lab).status == "completed"
    before = inventory(lab.cs)
    real_record = StepContext.record

    def dies_after_creating_a_volume(self, **values):
        if "volumes" in values:
            raise RuntimeError("worker killed")
        return real_record(self, **values)

    monkeypatch.setattr(StepContext, "record", dies_after_creating_a_volume)
    test_id = _start_test(lab)
    test = _drive(lab, test_id)
    assert test.status == "failed" and "worker killed" in test.error
    monkeypatch.setattr(StepContext, "record", real_record)
    # what a kill -9 at that moment leaves: the step running without the volume's id, the
    # workflow running under a lease nobody renews
    with database.connection_context():
        WorkflowStep.update(status="running", error=None).where(
            WorkflowStep.workflow == test_id, WorkflowStep.name == "create_volumes"
        ).execute()
        Workflow.update(status="running", error=None, claimed_by="dead-worker").where(
            Workflow.id == test_id
        ).execute()
    test = _drive(lab, test_id)
    assert test.status == "done", test.error
    assert _steps(test_id)["create_volumes"].attempts == 2
    after = inventory(lab.cs)
    assert len(after["volumes"]) == len(before["volumes"]) + len(DISKS)  # one copy per disk
    assert len(after["snapshots"]) == len(DISKS)
    assert [v[1:] for v in after["vms"] if v not in before["vms"]] == [
        ("web-1-lab-test", "Running")
    ]

    # the end crashes too, after destroying the VM; ending again resumes and cleans up
    inject = {"count": 0}
    real_delete = CloudStackClient.delete_volume

    def fails_once(self, volume_id, **kw):
        if inject["count"] == 0:
            inject["count"] += 1
            raise RuntimeError("worker killed")
        return real_delete(self, volume_id, **kw)

    monkeypatch.setattr(CloudStackClient, "delete_volume", fails_once)
    end_id = _end_test(lab)
    assert _drive(lab, end_id).status == "failed"
    assert _context(lab).state == "failed_over_test"
    assert _end_test(lab) == end_id  # the failed end is resumed
    assert _drive(lab, end_id).status == "done"
    assert inventory(lab.cs) == before
    assert _context(lab).state == "ready_for_failover"


def test_auto_end_after_ends_the_test_by_itself(lab):
    assert _replicate(lab).status == "completed"
    before = inventory(lab.cs)
    test_id = _start_test(lab, auto_end_after=1)
    test = _drive(lab, test_id)
    assert test.status == "done", test.error
    assert test.result["auto_end_at"] is not None
    _until(lab, lambda: _wf(test_id).status == "ended", "the automatic end")
    with database.connection_context():
        end = tests_repo.end_of(test_id)
    assert end.status == "done" and end.params["reason"] == "auto_end_after 1 s"
    assert inventory(lab.cs) == before
    assert _context(lab).state == "ready_for_failover"


def test_a_live_failover_with_end_test_ends_the_test_first(lab):
    assert _replicate(lab).status == "completed"
    test_id = _start_test(lab)
    assert _drive(lab, test_id).status == "done"
    test_vm = _wf(test_id).result["test_vm_id"]
    live = {
        "type": "live",
        "network_mappings": {"VM Network": lab.sim.network_id},
        "service_offering_id": lab.sim.custom_service_offering_id,
        "template_id": lab.sim.template_id,
        "keep_macs": True,
        "graceful_timeout_s": 30,
        "force": True,
        "vm_name": None,
        "boot_disk_key": None,
    }
    with database.connection_context():
        end, failover = tests_repo.failover_after_test_end(lab.context_id, live)
    failover = _drive(lab, failover.id)
    assert failover.status == "done", failover.error
    assert _wf(end.id).status == "done" and _wf(test_id).status == "ended"
    assert lab.cs.get_vm(test_vm) is None  # expunged
    assert not [s for s in lab.cs.list_snapshots() if s["name"].startswith("web-1-lab-test")]
    vm = lab.cs.get_vm(failover.result["target_vm_id"])
    assert (vm["name"], vm["state"]) == ("web-1-lab", "Running")
    assert _context(lab).state == "failed_over_live"
