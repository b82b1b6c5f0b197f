"""The progress poller against real stub VMA HTTP servers and a real SQLite database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labtest.oma import StubVma, oma_database, progress_doc, seed_replicating_jobs
from migration_common import utcnow
from oma.database.db import database
from oma.database.models import JobDisk, JobEvent, ReplicationJob, VmContext, VmDisk
from oma.services.classify import Timeouts
from oma.services.poller import ProgressPoller

TIMEOUTS = Timeouts(vma_unreachable=120, job_lost=60, stale=900)


class Clock:
    """A settable clock so timeouts are tested without sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db(tmp_path):
    with oma_database(tmp_path / "oma.db") as handle:
        yield handle


@pytest.fixture
def vma():
    with StubVma() as stub:
        yield stub


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def poller(vma, clock):
    p = ProgressPoller(
        timeouts=TIMEOUTS, token_for=lambda _v: vma.token, clock=clock, vma_timeout=2.0
    )
    yield p
    p.close()


@pytest.fixture
def job_id(db, vma):
    ids = seed_replicating_jobs([("vma-1", vma.url)], 1, disks_per_job=2)
    return next(iter(ids.values()))[0]


def _job(job_id):
    with database.connection_context():
        return ReplicationJob.get_by_id(job_id)


def _disks(job_id):
    with database.connection_context():
        return {d.disk_key: d for d in JobDisk.select().where(JobDisk.job == job_id)}


def _events(job_id):
    with database.connection_context():
        return [
            (e.kind, e.message)
            for e in JobEvent.select().where(JobEvent.job == job_id).order_by(JobEvent.at)
        ]


def _context(job_id):
    with database.connection_context():
        job = ReplicationJob.get_by_id(job_id)
        ctx = VmContext.get_by_id(job.context_id)
        disks = {d.disk_key: d.change_id for d in VmDisk.select().where(VmDisk.context == ctx)}
        return ctx, disks


def test_running_progress_is_written_to_job_and_disk_rows(vma, poller, job_id):
    vma.set_progress(
        job_id,
        progress_doc(
            job_id,
            "running",
            [
                {
                    "disk_key": "2000",
                    "bytes_total": 1000,
                    "bytes_done": 250,
                    "throughput_bps": 50,
                    "seq": 3,
                },
                {
                    "disk_key": "2001",
                    "bytes_total": 1000,
                    "bytes_done": 750,
                    "throughput_bps": 70,
                    "seq": 5,
                },
            ],
        ),
    )
    result = poller.tick()
    assert (result.jobs, result.updated, result.vmas) == (1, 1, 1)
    job = _job(job_id)
    assert job.status == "replicating" and job.phase == "copy"
    assert (job.bytes_total, job.bytes_done, job.percent) == (2000, 1000, 50.0)
    assert job.throughput_bps == 120
    disks = _disks(job_id)
    assert (disks["2000"].bytes_done, disks["2000"].seq, disks["2000"].status) == (
        250,
        3,
        "running",
    )
    assert disks["2001"].bytes_done == 750
    assert ("phase", "phase copy") in _events(job_id)
    # the same answer again: no new phase event
    poller.tick()
    assert _events(job_id).count(("phase", "phase copy")) == 1


def test_completion_stores_change_ids_then_releases_the_vm(vma, poller, job_id):
    vma.set_progress(
        job_id,
        progress_doc(
            job_id,
            "completed",
            [
                {
                    "disk_key": "2000",
                    "status": "completed",
                    "phase": "done",
                    "bytes_total": 10,
                    "bytes_done": 10,
                    "change_id": "gen-1",
                },
                {
                    "disk_key": "2001",
                    "status": "completed",
                    "phase": "done",
                    "bytes_total": 20,
                    "bytes_done": 20,
                    "change_id": "gen-7",
                },
            ],
        ),
    )
    assert poller.tick().completed == 1
    job = _job(job_id)
    assert job.status == "completed" and job.percent == 100.0 and job.finished_at is not None
    assert job.active_context_id is None
    ctx, change_ids = _context(job_id)
    assert change_ids == {"2000": "gen-1", "2001": "gen-7"}
    assert ctx.state == "ready_for_failover" and ctx.ready_for_failover
    assert ctx.active_job_id is None and ctx.last_job_id == job_id
    assert _disks(job_id)["2001"].change_id == "gen-7"
    assert ("completed", "replication completed") in _events(job_id)
    # a terminal job is no longer polled
    assert poller.tick().jobs == 0


def test_completion_without_change_id_fails_and_keeps_old_change_ids(vma, poller, job_id):
    vma.set_progress(
        job_id,
        progress_doc(
            job_id,
            "completed",
            [
                {"disk_key": "2000", "status": "completed", "phase": "done", "change_id": "gen-1"},
                {"disk_key": "2001", "status": "completed", "phase": "done", "change_id": None},
            ],
        ),
    )
    assert poller.tick().failed == 1
    job = _job(job_id)
    assert job.status == "failed" and job.error_class == "vma_error"
    assert "disk 2001" in job.error_message
    ctx, change_ids = _context(job_id)
    assert change_ids == {"2000": None, "2001": None}
    assert ctx.active_job_id is None and ctx.state == "failed"


def test_vma_reported_failure_keeps_the_vma_error(vma, poller, job_id):
    vma.set_progress(
        job_id,
        progress_doc(
            job_id,
            "failed",
            [
                {"disk_key": "2000", "status": "failed", "error": "NBD write failed: ENOSPC"},
                {"disk_key": "2001", "status": "running"},
            ],
            error="migratekit exited with code 3",
        ),
    )
    assert poller.tick().failed == 1
    job = _job(job_id)
    assert (job.status, job.error_class) == ("failed", "vma_reported")
    assert job.error_message == "migratekit exited with code 3"
    assert _disks(job_id)["2000"].error == "NBD write failed: ENOSPC"
    assert _disks(job_id)["2001"].status == "failed"


def test_unknown_job_fails_as_job_lost_after_the_timeout(poller, clock, job_id):
    assert poller.tick().waiting == 1
    assert _job(job_id).status == "replicating"
    clock.advance(61)
    assert poller.tick().failed == 1
    job = _job(job_id)
    assert (job.status, job.error_class) == ("failed", "job_lost")


def test_unreachable_vma_fails_as_vma_unreachable_after_the_timeout(vma, poller, clock, job_id):
    vma.stop()
    clock.advance(100)
    assert poller.tick().waiting == 1
    assert _job(job_id).status == "replicating"
    clock.advance(30)
    assert poller.tick().failed == 1
    job = _job(job_id)
    assert (job.status, job.error_class) == ("failed", "vma_unreachable")
    assert "VMA unreachable" in job.error_message


def test_no_byte_progress_fails_as_stalled_and_stops_the_vma_job(vma, poller, clock, job_id):
    doc = progress_doc(
        job_id,
        "running",
        [
            {"disk_key": "2000", "bytes_total": 100, "bytes_done": 10},
            {"disk_key": "2001", "bytes_total": 100, "bytes_done": 10},
        ],
    )
    vma.set_progress(job_id, doc)
    poller.tick()
    clock.advance(600)
    assert poller.tick().updated == 1  # still within the stale timeout
    clock.advance(400)
    assert poller.tick().failed == 1
    job = _job(job_id)
    assert (job.status, job.error_class) == ("failed", "stalled")
    assert "bytes_done stuck at 20" in job.error_message
    assert vma.stop_calls == [job_id]


def test_a_long_verify_is_not_a_stall(vma, poller, clock, job_id):
    disks = [
        {"disk_key": key, "bytes_total": 100, "bytes_done": 100, "phase": "verify"}
        for key in ("2000", "2001")
    ]
    vma.set_progress(job_id, progress_doc(job_id, "running", disks))
    poller.tick()
    clock.advance(2000)
    assert poller.tick().updated == 1
    job = _job(job_id)
    assert (job.status, job.phase) == ("replicating", "verify")


def test_one_batched_request_per_vma_per_tick(db, clock):
    with StubVma() as a, StubVma() as b:
        ids = seed_replicating_jobs([("a", a.url), ("b", b.url)], 30, disks_per_job=1)
        tokens = {"token:a": a.token, "token:b": b.token}
        for stub, job_ids in zip((a, b), ids.values(), strict=True):
            for j in job_ids:
                stub.set_progress(
                    j,
                    progress_doc(
                        j, "running", [{"disk_key": "2000", "bytes_total": 10, "bytes_done": 5}]
                    ),
                )
        p = ProgressPoller(
            timeouts=TIMEOUTS, token_for=lambda v: tokens[v.token_encrypted], clock=clock
        )
        try:
            result = p.tick()
        finally:
            p.close()
        assert (result.jobs, result.vmas, result.updated) == (60, 2, 60)
        assert (a.requests, b.requests) == (1, 1)


def test_poller_writes_on_every_database(any_db, clock):
    """The poller's plain-SQL updates work on SQLite, PostgreSQL and MariaDB."""
    with StubVma() as stub:
        ids = seed_replicating_jobs([("db-vma", stub.url)], 2, disks_per_job=2)
        job_a, job_b = next(iter(ids.values()))
        stub.set_progress(
            job_a,
            progress_doc(
                job_a,
                "running",
                [
                    {"disk_key": "2000", "bytes_total": 100, "bytes_done": 60, "seq": 4},
                    {"disk_key": "2001", "bytes_total": 100, "bytes_done": 20, "seq": 2},
                ],
            ),
        )
        stub.set_progress(
            job_b,
            progress_doc(
                job_b,
                "completed",
                [
                    {
                        "disk_key": "2000",
                        "status": "completed",
                        "phase": "done",
                        "change_id": "g-1",
                    },
                    {
                        "disk_key": "2001",
                        "status": "completed",
                        "phase": "done",
                        "change_id": "g-2",
                    },
                ],
            ),
        )
        p = ProgressPoller(timeouts=TIMEOUTS, token_for=lambda _v: stub.token, clock=clock)
        try:
            result = p.tick()
        finally:
            p.close()
    assert (result.updated, result.completed, result.errors) == (1, 1, [])
    job = _job(job_a)
    assert (job.bytes_done, job.phase, job.last_progress_at is not None) == (80, "copy", True)
    assert _disks(job_a)["2000"].seq == 4
    assert _job(job_b).status == "completed"
    assert _context(job_b)[1] == {"2000": "g-1", "2001": "g-2"}


def test_a_restarted_poller_gives_an_unreachable_vma_the_full_timeout(vma, job_id):
    from oma.database.models import VmaAppliance

    late = Clock()
    late.advance(600)  # the worker was down for ten minutes; the job was last seen before
    vma.stop()
    p = ProgressPoller(timeouts=TIMEOUTS, token_for=lambda _v: vma.token, clock=late)
    try:
        assert p.tick().waiting == 1
        with database.connection_context():
            assert "VMA unreachable" in VmaAppliance.get().last_error
        late.advance(121)
        assert p.tick().failed == 1
    finally:
        p.close()
    assert _job(job_id).error_class == "vma_unreachable"


def test_vma_answers_are_recorded_on_the_appliance(vma, poller, job_id):
    from oma.database.models import VmaAppliance

    poller.tick()
    with database.connection_context():
        row = VmaAppliance.get()
    assert row.last_seen_at is not None and row.last_error is None


def test_a_job_queued_on_the_vma_does_not_stall(vma, poller, clock, job_id):
    vma.set_progress(
        job_id,
        progress_doc(
            job_id,
            "queued",
            [
                {"disk_key": "2000", "status": "queued", "phase": "snapshot"},
                {"disk_key": "2001", "status": "queued", "phase": "snapshot"},
            ],
        ),
    )
    for _ in range(3):
        clock.advance(800)
        assert poller.tick().updated == 1
    assert _job(job_id).status == "replicating"


def test_many_jobs_are_written_by_parallel_connections_on_server_databases(any_db, clock):
    with StubVma() as stub:
        ids = next(iter(seed_replicating_jobs([("many", stub.url)], 20, disks_per_job=1).values()))
        for n, j in enumerate(ids):
            stub.set_progress(
                j,
                progress_doc(
                    j,
                    "running",
                    [{"disk_key": "2000", "bytes_total": 100, "bytes_done": n + 1, "seq": 1}],
                ),
            )
        p = ProgressPoller(timeouts=TIMEOUTS, token_for=lambda _v: stub.token, clock=clock)
        try:
            result = p.tick()
        finally:
            p.close()
    assert (result.updated, result.errors) == (20, [])
    assert sorted(_job(j).bytes_done for j in ids) == list(range(1, 21))


def test_two_workers_never_poll_the_same_job_and_a_dead_ones_jobs_move(any_db, clock):
    with StubVma() as stub:
        ids = next(iter(seed_replicating_jobs([("shared", stub.url)], 3, disks_per_job=1).values()))
        for j in ids:
            stub.set_progress(
                j,
                progress_doc(
                    j, "running", [{"disk_key": "2000", "bytes_total": 10, "bytes_done": 1}]
                ),
            )
        a = ProgressPoller(
            timeouts=TIMEOUTS,
            token_for=lambda _v: stub.token,
            clock=clock,
            worker_id="worker-a",
            lease_seconds=15,
        )
        b = ProgressPoller(
            timeouts=TIMEOUTS,
            token_for=lambda _v: stub.token,
            clock=clock,
            worker_id="worker-b",
            lease_seconds=15,
        )
        try:
            assert a.tick().jobs == 3
            assert b.tick().jobs == 0  # all leased to worker-a
            clock.advance(10)
            assert a.tick().jobs == 3  # worker-a renews its lease every tick
            assert b.tick().jobs == 0
            clock.advance(16)  # worker-a died: its lease runs out
            assert b.tick().jobs == 3
            assert {_job(j).claimed_by for j in ids} == {"worker-b"}
        finally:
            a.close()
            b.close()
        assert stub.requests == 3


def test_a_progress_write_renews_the_lease_so_the_claim_rewrites_no_row(any_db, clock):
    """A tick's progress UPDATE carries the lease: the next tick's claim has nothing to renew
    (one job row write per tick, not two); a job with nothing new is renewed by the claim."""
    from oma.services import _queries as q

    with StubVma() as stub:
        ids = next(iter(seed_replicating_jobs([("lease", stub.url)], 2, disks_per_job=1).values()))
        moving, idle = ids
        poller = ProgressPoller(
            timeouts=TIMEOUTS,
            token_for=lambda _v: stub.token,
            clock=clock,
            worker_id="worker-a",
            lease_seconds=30,
        )
        try:
            for step in (1, 2):
                stub.set_progress(
                    moving,
                    progress_doc(
                        moving,
                        "running",
                        [{"disk_key": "2000", "bytes_total": 9, "bytes_done": step, "seq": step}],
                    ),
                )
                assert poller.tick().updated == 1
                clock.advance(10)
            # the moving job's lease was renewed by its write 10 s ago: still 20 s left
            assert q.claim_replicating("worker-a", clock(), 30) == 1  # only the idle one
            assert _job(moving).lease_until > clock() + timedelta(seconds=15)
            assert _job(idle).lease_until > clock() + timedelta(seconds=25)
        finally:
            poller.close()


def test_an_older_progress_answer_after_a_newer_one_changes_nothing(any_db, clock):
    """Out-of-order answers (lower ``seq``) never move a disk row or the job backwards."""
    with StubVma() as stub:
        ids = seed_replicating_jobs([("seq-vma", stub.url)], 1, disks_per_job=2)
        job_id = next(iter(ids.values()))[0]
        newer = [
            {"disk_key": "2000", "bytes_total": 100, "bytes_done": 60, "seq": 5},
            {"disk_key": "2001", "bytes_total": 100, "bytes_done": 40, "seq": 4},
        ]
        older = [
            {
                "disk_key": "2000",
                "bytes_total": 100,
                "bytes_done": 10,
                "seq": 3,
                "phase": "snapshot",
            },
            {"disk_key": "2001", "bytes_total": 100, "bytes_done": 40, "seq": 4},
        ]
        p = ProgressPoller(timeouts=TIMEOUTS, token_for=lambda _v: stub.token, clock=clock)
        try:
            stub.set_progress(job_id, progress_doc(job_id, "running", newer))
            assert p.tick().updated == 1
            job, disks = _job(job_id), _disks(job_id)
            stub.set_progress(job_id, progress_doc(job_id, "running", older))
            clock.advance(5)
            p.tick()
        finally:
            p.close()
    after, after_disks = _job(job_id), _disks(job_id)
    assert (disks["2000"].bytes_done, disks["2000"].seq) == (60, 5)
    for key in ("2000", "2001"):
        assert (after_disks[key].bytes_done, after_disks[key].seq, after_disks[key].phase) == (
            disks[key].bytes_done,
            disks[key].seq,
            disks[key].phase,
        )
    assert (job.bytes_done, job.percent, job.phase) == (100, 50.0, "copy")
    assert (after.bytes_done, after.percent, after.phase, after.last_progress_at) == (
        job.bytes_done,
        job.percent,
        job.phase,
        job.last_progress_at,
    )
    assert ("phase", "phase snapshot") not in _events(job_id)


def test_a_tick_writes_many_jobs_in_chunks_skips_an_older_answer_and_completes_one_once(
    any_db, clock, monkeypatch
):
    """The set-based write path on every database: several chunks (written side by side on
    PostgreSQL/MariaDB) in one tick, one answer older than the stored rows, one completion."""
    from oma.services import _queries as q

    monkeypatch.setattr(q, "WRITE_CHUNK", 4)  # 12 jobs: several chunks at a small size

    def running(job_id, done, seq, phase="copy"):
        return progress_doc(
            job_id,
            "running",
            [
                {
                    "disk_key": key,
                    "bytes_total": 100,
                    "bytes_done": done,
                    "seq": seq,
                    "phase": phase,
                }
                for key in ("2000", "2001")
            ],
        )

    with StubVma() as stub:
        ids = next(
            iter(seed_replicating_jobs([("chunks", stub.url)], 12, disks_per_job=2).values())
        )
        *moving, older, done = ids
        p = ProgressPoller(
            timeouts=TIMEOUTS, token_for=lambda _v: stub.token, clock=clock, worker_id="w"
        )
        try:
            for n, j in enumerate(ids):
                stub.set_progress(j, running(j, 10 + n, seq=5))
            first = p.tick()
            stub_docs = {j: running(j, 50 + n, seq=6) for n, j in enumerate(moving)}
            for j, doc in stub_docs.items():
                stub.set_progress(j, doc)
            stub.set_progress(older, running(older, 1, seq=3, phase="snapshot"))
            stub.set_progress(
                done,
                progress_doc(
                    done,
                    "completed",
                    [
                        {
                            "disk_key": key,
                            "status": "completed",
                            "phase": "done",
                            "bytes_total": 100,
                            "bytes_done": 100,
                            "change_id": f"gen-{key}",
                            "seq": 9,
                        }
                        for key in ("2000", "2001")
                    ],
                ),
            )
            clock.advance(5)
            second = p.tick()
            third = p.tick()  # the same answers again: the completed job is not polled
        finally:
            p.close()
    assert (first.jobs, first.updated, first.errors) == (12, 12, [])
    assert (second.updated, second.completed, second.failed, second.errors) == (11, 1, 0, [])
    assert (third.jobs, third.completed) == (11, 0)
    for n, j in enumerate(moving):
        job, disks = _job(j), _disks(j)
        assert (job.status, job.bytes_done, job.percent) == ("replicating", 2 * (50 + n), 50 + n)
        assert job.last_progress_at == clock.now.replace(tzinfo=job.last_progress_at.tzinfo)
        assert {(d.bytes_done, d.seq) for d in disks.values()} == {(50 + n, 6)}
        assert _events(j) == [("phase", "phase copy")]
    # the older answer moved nothing: the rows of the first tick stay
    job, disks = _job(older), _disks(older)
    assert (job.status, job.bytes_done, job.phase) == ("replicating", 2 * 20, "copy")
    assert {(d.bytes_done, d.seq, d.phase) for d in disks.values()} == {(20, 5, "copy")}
    assert ("phase", "phase snapshot") not in _events(older)
    # the completion: finished once, change ids stored on the VM's disks
    assert _job(done).status == "completed"
    assert _context(done)[1] == {"2000": "gen-2000", "2001": "gen-2001"}
    assert [e for e in _events(done) if e[0] == "completed"] == [
        ("completed", "replication completed")
    ]
    assert {(d.seq, d.change_id) for d in _disks(done).values()} == {
        (9, "gen-2000"),
        (9, "gen-2001"),
    }
