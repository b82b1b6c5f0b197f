"""Waves in the in-process lab: schedules fire against slow jobs, a group caps its jobs.

The worker's parts (schedule firer with an injected clock, admission and replication workflow,
progress poller) run in this process against the real CloudStack simulator, real qemu-nbd
exports and a stub VMA whose copies wait on a gate, so a job stays replicating as long as the
test wants.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.nbd import create_image, qemu_io
from labtest.oma import StubVma, oma_database
from labtest.procs import wait_until
from oma.cloudstack import CloudStackClient
from oma.database.db import database
from oma.database.models import (
    MachineGroup,
    ReplicationJob,
    Schedule,
    ScheduleRun,
    ScheduleRunVm,
    VmContext,
    VmDisk,
)
from oma.database.repos import groups
from oma.nbd import ExportManager
from oma.services.poller import ProgressPoller
from oma.services.runner import WorkflowRunner
from oma.services.schedules import ScheduleFirer
from oma.workflows.engine import WorkflowEngine
from oma.workflows.replication import ReplicationWorkflow

pytestmark = pytest.mark.slow

MiB = 1 << 20
ADMITTED = ("provisioning", "ready", "replicating")
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Clock:
    """The firer's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _lab(tmp_path, lab_context, lab_services, count: int):
    """``count`` single-disk VMs (1 MiB) on the simulator; the stub VMA's copies wait on a gate."""
    gate = threading.Event()
    stack = (
        cloudstack_sim(tmp_path / "cs"),
        StubVma(gate=gate),
        oma_database(tmp_path / "oma.db"),
    )
    sim, vma = stack[0].__enter__(), stack[1].__enter__()
    stack[2].__enter__()
    contexts: list[str] = []
    for i in range(count):
        vm_id = f"4205a841-0000-0000-0000-0000000000{i:02d}"
        img = create_image(tmp_path / f"src-{i}.qcow2", MiB)
        qemu_io(img, f"write -P {0x30 + i} 0 64k")
        vma.sources[(vm_id, "2000")] = img
        if i == 0:
            contexts.append(lab_context(sim, vma, vm_id, f"vm-{i:02d}", {"2000": MiB}))
            continue
        with database.connection_context():
            first = VmContext.get_by_id(contexts[0])
            ctx = VmContext.create(
                vma=first.vma_id,
                target=first.target_id,
                vcenter="vc.lab",
                vm_id=vm_id,
                name=f"vm-{i:02d}",
            )
            VmDisk.create(context=ctx.id, disk_key="2000", capacity_bytes=MiB)
        contexts.append(ctx.id)
    cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
    # the stub VMA has no certificate and writes with qemu-img in plaintext
    exports = ExportManager(
        port_range=(20700, 20799), state_dir=tmp_path / "exports", allow_plaintext=True
    )
    services = lab_services(sim, vma, cs, exports)
    runner = WorkflowRunner(
        WorkflowEngine("test-worker", lease_seconds=30),
        ReplicationWorkflow(services),
        services.vma_for,
    )
    poller = ProgressPoller(token_for=lambda _row: vma.token)
    clock = Clock(T0)

    def close() -> None:
        gate.set()
        poller.close()
        for info in exports.list_running():
            exports.stop(info.pid, info.volume_id)
        cs.close()
        for cm in reversed(stack):
            cm.__exit__(None, None, None)

    return SimpleNamespace(
        gate=gate,
        runner=runner,
        poller=poller,
        clock=clock,
        firer=ScheduleFirer(clock),
        contexts=contexts,
        close=close,
    )


@pytest.fixture
def one_vm(tmp_path, lab_context, lab_services):
    lab = _lab(tmp_path, lab_context, lab_services, 1)
    yield lab
    lab.close()


@pytest.fixture
def ten_vms(tmp_path, lab_context, lab_services):
    lab = _lab(tmp_path, lab_context, lab_services, 10)
    yield lab
    lab.close()


def _jobs() -> list[ReplicationJob]:
    with database.connection_context():
        return list(ReplicationJob.select().order_by(ReplicationJob.created_at))


def _tick_at(lab, when: datetime) -> dict[str, int]:
    lab.clock.now = when
    return lab.firer.tick()


def _work(lab) -> None:
    lab.runner.tick()
    lab.poller.tick()


def test_a_schedule_every_minute_never_duplicates_a_slow_job(one_vm):
    lab = one_vm
    with database.connection_context():
        schedule = Schedule.create(
            name="every minute", cron="* * * * *", context=lab.contexts[0], active_since=T0
        )
    assert _tick_at(lab, T0 + timedelta(seconds=30))["fired"] == 0  # 12:00 is not after T0
    assert _tick_at(lab, T0 + timedelta(minutes=1, seconds=2))["created"] == 1
    (job,) = _jobs()
    wait_until(
        lambda: (_work(lab), _jobs()[0].status)[1] == "replicating",
        timeout=60,
        interval=0.05,
        what="the job to replicate (held by the VMA's gate)",
    )
    # three more minutes while the job runs: each occurrence fires once and skips the VM
    for minute in (2, 3, 4):
        for second in (0, 20, 40):
            _tick_at(lab, T0 + timedelta(minutes=minute, seconds=second))
            _work(lab)
    assert [j.id for j in _jobs()] == [job.id]
    with database.connection_context():
        runs = list(ScheduleRun.select().order_by(ScheduleRun.occurrence))
        items = {i.run_id: i for i in ScheduleRunVm.select()}
    assert [r.occurrence for r in runs] == [T0 + timedelta(minutes=m) for m in (1, 2, 3, 4)]
    assert [(r.eligible, r.created, r.skipped) for r in runs] == [(1, 1, 0)] + [(1, 0, 1)] * 3
    assert items[runs[0].id].job_id == job.id
    for run in runs[1:]:
        assert items[run.id].reason == f"VM has an active job ({job.id})"
        assert run.finished_at is not None
    assert runs[0].finished_at is None  # its job has not finished

    lab.gate.set()
    wait_until(
        lambda: (_work(lab), _jobs()[0].status)[1] == "completed",
        timeout=60,
        interval=0.05,
        what="the job to complete",
    )
    _tick_at(lab, T0 + timedelta(minutes=4, seconds=50))
    with database.connection_context():
        first = ScheduleRun.get_by_id(runs[0].id)
        item = ScheduleRunVm.get(ScheduleRunVm.run == first.id)
    assert (item.outcome, first.finished_at is not None) == ("completed", True)
    # the VM is free again: the next occurrence creates its next job
    assert _tick_at(lab, T0 + timedelta(minutes=5, seconds=1))["created"] == 1
    assert len(_jobs()) == 2
    assert schedule.id == first.schedule_id


def test_ten_vms_in_a_group_of_three_never_run_more_than_three(ten_vms):
    lab = ten_vms
    with database.connection_context():
        group = MachineGroup.create(name="wave-1", max_concurrent=3)
        groups.add_members(group.id, lab.contexts)
        Schedule.create(name="wave-1 nightly", cron="0 14 * * *", group=group.id, active_since=T0)
    fired = _tick_at(lab, T0 + timedelta(hours=2, seconds=3))
    assert (fired["fired"], fired["created"]) == (1, 10)

    samples: list[int] = []

    def admitted() -> int:
        _work(lab)
        n = sum(j.status in ADMITTED for j in _jobs())
        samples.append(n)
        return n

    wait_until(
        lambda: (
            admitted() == 3
            and all(j.status == "replicating" for j in _jobs() if j.status in ADMITTED)
        ),
        timeout=60,
        interval=0.05,
        what="three jobs replicating",
    )
    for _ in range(5):  # the gate holds them: more ticks admit nobody else
        admitted()
    waiting = [j for j in _jobs() if j.status == "pending"]
    assert len(waiting) == 7
    assert {j.wait_reason for j in waiting} == {
        "waiting: group wave-1 allows 3 concurrent jobs, 3 running"
    }

    lab.gate.set()
    wait_until(
        lambda: (admitted(), all(j.status == "completed" for j in _jobs()))[1],
        timeout=180,
        interval=0.05,
        what="all ten jobs to complete",
    )
    assert max(samples) == 3, samples
    _tick_at(lab, T0 + timedelta(hours=2, minutes=1))
    with database.connection_context():
        run = ScheduleRun.get()
        outcomes = [i.outcome for i in ScheduleRunVm.select()]
    assert outcomes == ["completed"] * 10 and run.finished_at is not None
