"""Schedule firing on SQLite, PostgreSQL and MariaDB: the database decides, once per occurrence.

Two firers tick at the same moment on two connections (two threads, as two workers would);
a worker that was down fires the latest missed occurrence once; ``skip_if_running`` false
defers a busy VM until its job ends. The cron module's day-of-week and day-of-month rules are
checked against cron's meaning.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from oma.database.db import database
from oma.database.models import (
    JobStatus,
    MachineGroup,
    ReplicationJob,
    Schedule,
    ScheduleRun,
    ScheduleRunVm,
    VmaAppliance,
    VmContext,
    VmDisk,
)
from oma.database.repos import groups, jobs
from oma.services import cron
from oma.services.schedules import ScheduleFirer, run_now

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


def _vms(n: int) -> list[str]:
    vma = VmaAppliance.create(name="vma-1", url="http://vma.lab", token_encrypted="x")
    ids = []
    for i in range(n):
        ctx = VmContext.create(vma=vma.id, vcenter="vc.lab", vm_id=f"id-{i}", name=f"vm-{i}")
        VmDisk.create(context=ctx.id, disk_key="2000", capacity_bytes=1 << 20)
        ids.append(ctx.id)
    return ids


def _finish_all() -> None:
    for job in ReplicationJob.select().where(ReplicationJob.status == "pending"):
        jobs.finish_job(job.id, JobStatus.COMPLETED, from_statuses=[JobStatus.PENDING])


def _at(when: datetime) -> ScheduleFirer:
    return ScheduleFirer(lambda: when)


def test_two_workers_fire_each_occurrence_once(any_db: str) -> None:
    group = MachineGroup.create(name="wave-1")
    groups.add_members(group.id, _vms(3))
    Schedule.create(name="every minute", cron="* * * * *", group=group.id, active_since=T0)
    for minute in range(1, 6):
        now = T0 + timedelta(minutes=minute, seconds=1)
        barrier = threading.Barrier(2)
        results: list[dict[str, int]] = []
        errors: list[BaseException] = []

        def worker(
            now: datetime = now,
            barrier: threading.Barrier = barrier,
            results: list[dict[str, int]] = results,
            errors: list[BaseException] = errors,
        ) -> None:
            firer = _at(now)
            try:
                with database.connection_context():  # this thread's own connection
                    barrier.wait()
                    results.append(firer.tick())
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(r["fired"] for r in results) == [0, 1], results
        assert sum(r["created"] for r in results) == 3
        _finish_all()
    runs = list(ScheduleRun.select().order_by(ScheduleRun.occurrence))
    assert [r.occurrence for r in runs] == [T0 + timedelta(minutes=m) for m in range(1, 6)]
    assert ReplicationJob.select().count() == 15
    assert ScheduleRunVm.select().where(ScheduleRunVm.result == "created").count() == 15


CHILD = """
import json, sys
from datetime import datetime
from oma.database.db import database, init_db
from oma.services.schedules import ScheduleFirer

init_db(sys.argv[1])
when = datetime.fromisoformat(sys.argv[2])
with database.connection_context():
    database.execute_sql("SELECT 1")
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(ScheduleFirer(lambda: when).tick()), flush=True)
"""


def test_two_worker_processes_fire_each_occurrence_once(any_db: str) -> None:
    """The same race between two processes, each with its own connection, released at once."""
    import json
    import subprocess
    import sys

    (ctx,) = _vms(1)
    Schedule.create(name="every minute", cron="* * * * *", context=ctx, active_since=T0)
    for minute in range(1, 4):
        when = (T0 + timedelta(minutes=minute, seconds=1)).isoformat()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, any_db, when],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            results = [json.loads(p.stdout.readline()) for p in procs]
        finally:
            for p in procs:
                p.stdin.close()
                p.wait(60)
        assert sorted(r["fired"] for r in results) == [0, 1], results
        _finish_all()
    runs = list(ScheduleRun.select().order_by(ScheduleRun.occurrence))
    assert [r.occurrence for r in runs] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    assert ReplicationJob.select().count() == 3


def test_a_missed_occurrence_fires_once(any_db: str) -> None:
    (ctx,) = _vms(1)
    # the worker was down for three hours of a five-minute schedule
    Schedule.create(
        name="5 min", cron="*/5 * * * *", context=ctx, active_since=T0 - timedelta(hours=3)
    )
    assert _at(T0 + timedelta(seconds=7)).tick()["fired"] == 1
    assert _at(T0 + timedelta(minutes=2)).tick()["fired"] == 0
    assert [r.occurrence for r in ScheduleRun.select()] == [T0]
    _finish_all()
    assert _at(T0 + timedelta(minutes=11)).tick()["fired"] == 1  # 12:05 and 12:10 missed
    assert sorted(r.occurrence for r in ScheduleRun.select()) == [
        T0,
        T0 + timedelta(minutes=10),
    ]
    assert ReplicationJob.select().count() == 2


def test_disabled_and_re_enabled_schedules_fire_nothing_missed(any_db: str) -> None:
    from oma.database.repos import schedules

    (ctx,) = _vms(1)
    s = Schedule.create(
        name="hourly", cron="0 * * * *", context=ctx, enabled=False, active_since=T0
    )
    assert _at(T0 + timedelta(hours=3)).tick()["fired"] == 0
    schedules.update_schedule(s.id, {"enabled": True})  # active from the real now on
    assert _at(T0 + timedelta(hours=3)).tick()["fired"] == 0
    run = run_now(s.id)  # manual runs go regardless
    assert (run.trigger, run.created) == ("manual", 1)


def test_a_busy_vm_is_deferred_until_its_job_ends(any_db: str) -> None:
    a, b = _vms(2)
    group = MachineGroup.create(name="wave-1")
    groups.add_members(group.id, [a, b])
    s = Schedule.create(
        name="hourly", cron="0 * * * *", group=group.id, skip_if_running=False, active_since=T0
    )
    busy = jobs.create_job(a)  # an operator's job runs on vm-0
    _at(T0 + timedelta(hours=1, seconds=1)).tick()
    run = ScheduleRun.get()
    items = {i.vm_name: i for i in ScheduleRunVm.select()}
    assert (run.created, run.skipped, run.finished_at) == (1, 0, None)
    assert items["vm-0"].result == "deferred"
    assert items["vm-0"].reason == f"waits for the VM's active job ({busy.id}) to end"

    jobs.finish_job(busy.id, JobStatus.COMPLETED, from_statuses=[JobStatus.PENDING])
    assert _at(T0 + timedelta(hours=1, minutes=1)).tick()["settled"] == 1
    item = ScheduleRunVm.get(ScheduleRunVm.vm_name == "vm-0")
    assert item.result == "created" and item.job_id not in (None, busy.id)
    assert ScheduleRun.get().created == 2

    _finish_all()
    _at(T0 + timedelta(hours=1, minutes=2)).tick()
    run = ScheduleRun.get()
    assert run.finished_at is not None
    assert {i.outcome for i in ScheduleRunVm.select()} == {"completed"}

    # a VM still busy at the next occurrence: the later run takes it over
    busy = jobs.create_job(b)
    _at(T0 + timedelta(hours=2, seconds=1)).tick()
    _at(T0 + timedelta(hours=3, seconds=1)).tick()
    older, newer = (
        ScheduleRun.select()
        .where(ScheduleRun.occurrence > T0 + timedelta(hours=1))
        .order_by(ScheduleRun.occurrence)
    )
    stale = ScheduleRunVm.get(ScheduleRunVm.run == older.id, ScheduleRunVm.vm_name == "vm-1")
    assert stale.result == "skipped"
    assert stale.reason == f"superseded by the run of {newer.occurrence.isoformat()}"
    assert s.id == older.schedule_id


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 0 and 7 are Sunday in cron (APScheduler 3.x alone would read 0 as Monday)
        ("0 3 * * 0", T0, datetime(2026, 3, 8, 3, 0, tzinfo=UTC)),
        ("0 3 * * 7", T0, datetime(2026, 3, 8, 3, 0, tzinfo=UTC)),
        ("0 3 * * 1-5", T0, datetime(2026, 3, 3, 3, 0, tzinfo=UTC)),
        ("0 3 * * */2", T0, datetime(2026, 3, 3, 3, 0, tzinfo=UTC)),  # sun, tue, thu, sat
        # both day fields restricted: either matches (the 15th, or any Friday)
        ("0 0 15 * 5", T0, datetime(2026, 3, 6, 0, 0, tzinfo=UTC)),
        ("0 0 15 * 5", datetime(2026, 3, 13, 1, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC)),
        # a day-of-month step with a weekday: both must match (cron's "*" rule)
        ("0 0 */2 * 1", T0, datetime(2026, 3, 9, 0, 0, tzinfo=UTC)),
    ],
)
def test_cron_days_mean_what_cron_means(expression, after, expected) -> None:
    assert cron.parse(expression).next_after(after) == expected


def test_cron_in_a_timezone_across_dst() -> None:
    """02:30 in Paris: 01:30 UTC in winter, 00:30 UTC in summer; on the night the clocks
    jump from 02:00 to 03:00 it fires once, an hour after 01:30 local."""
    paris = cron.parse("30 2 * * *", "Europe/Paris")
    fired, t = [], datetime(2026, 3, 27, 12, tzinfo=UTC)
    for _ in range(3):
        t = paris.next_after(t)
        fired.append(t.astimezone(UTC))
    assert fired == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]


def test_removing_a_vm_takes_its_membership_and_schedule_keeps_run_history(any_db: str) -> None:
    from oma.database.models import GroupMember
    from oma.database.repos import contexts

    a, b = _vms(2)
    group = MachineGroup.create(name="wave-1")
    groups.add_members(group.id, [a, b])
    Schedule.create(name="vm-0 only", cron="0 * * * *", context=a, active_since=T0)
    by_group = Schedule.create(name="wave", cron="0 * * * *", group=group.id, active_since=T0)
    run_now(by_group.id)
    _finish_all()
    contexts.delete_context(a)
    assert [m.context_id for m in GroupMember.select()] == [b]
    assert [s.name for s in Schedule.select()] == ["wave"]
    rows = {r.vm_name: r.context_id for r in ScheduleRunVm.select()}
    assert rows == {"vm-0": None, "vm-1": b}
