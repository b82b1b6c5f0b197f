"""Schema migrations and repositories on SQLite, PostgreSQL and MariaDB (real servers)."""

from __future__ import annotations

import orjson
import pytest

from oma.database import applied, database, pending, upgrade
from oma.database.fields import now
from oma.database.models import ReplicationJob, VmContext, VmDisk, WorkerHeartbeat
from oma.database.repos import _documents as docs
from oma.database.repos import contexts, events, heartbeats, jobs, tokens
from oma.errors import ConflictError, InvalidStateError, NotFoundError

VM = {
    "id": "42e1c6f0-0000-4000-8000-000000000001",
    "name": "web-01",
    "disks": [
        {"disk_key": 2000, "capacity_bytes": 8 << 20, "label": "Hard disk 1", "unit_number": 0},
        {"key": "2001", "capacity_bytes": 4 << 20, "label": "Hard disk 2", "unit_number": 1},
    ],
}


def _context(vm_id: str = VM["id"]) -> VmContext:
    return contexts.create_context(
        vcenter="vc.lab",
        vm_id=vm_id,
        name="web-01",
        spec={"cpus": 2},
        disks=contexts.disk_rows_from_vm(VM),
    )


def test_migrations_recorded_and_idempotent(any_db: str) -> None:
    from oma.database.migrate import MIGRATIONS_DIR

    files = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert files[0] == "0001_initial" and applied() == files
    assert pending() == []
    assert upgrade() == []
    tables = set(database.get_tables())
    for name in (
        "vm_contexts",
        "vm_disks",
        "replication_jobs",
        "job_disks",
        "replica_volumes",
        "nbd_exports",
        "vma_appliances",
        "vmware_credentials",
        "cloudstack_targets",
        "api_tokens",
        "job_events",
        "workflow_steps",
        "worker_heartbeats",
        "schema_migrations",
    ):
        assert name in tables


def test_context_with_disks_keyed_by_string(any_db: str) -> None:
    ctx = _context()
    disks = contexts.list_disks(ctx.id)
    assert [(d.disk_key, d.capacity_bytes) for d in disks] == [("2000", 8 << 20), ("2001", 4 << 20)]
    assert VmContext.get_by_id(ctx.id).spec == {"cpus": 2}
    with pytest.raises(ConflictError) as err:
        _context()
    assert err.value.field == "vm_id"


def test_upsert_keeps_disk_ids_and_resets_change_id_on_resize(any_db: str) -> None:
    ctx = _context()
    before = {d.disk_key: d.id for d in contexts.list_disks(ctx.id)}
    contexts.store_change_ids(ctx.id, {"2000": "52 aa/1", "2001": "52 bb/1"})
    contexts.upsert_disks(
        ctx.id,
        [
            {"disk_key": "2000", "capacity_bytes": 8 << 20},
            {"disk_key": "2001", "capacity_bytes": 16 << 20},
        ],
    )
    rows = {d.disk_key: d for d in contexts.list_disks(ctx.id)}
    assert {k: r.id for k, r in rows.items()} == before
    assert rows["2000"].change_id == "52 aa/1"
    assert rows["2001"].change_id is None


def test_second_active_job_is_a_conflict_enforced_by_the_database(any_db: str) -> None:
    ctx = _context()
    job = jobs.create_job(ctx.id, requested_type="full")
    with pytest.raises(ConflictError) as err:
        jobs.create_job(ctx.id)
    assert err.value.field == "vm_context_id"
    # The rule is the unique column, not application code: a raw insert fails too.
    from peewee import IntegrityError

    with pytest.raises(IntegrityError), database.atomic():
        ReplicationJob.create(context=ctx.id, active_context_id=ctx.id)
    assert VmContext.get_by_id(ctx.id).active_job_id == job.id
    jobs.fail_job(job.id, "test", "boom")
    second = jobs.create_job(ctx.id)
    assert second.status == "pending"


def test_complete_stores_change_ids_and_frees_the_vm(any_db: str) -> None:
    ctx = _context()
    job = jobs.create_job(ctx.id)
    assert VmContext.get_by_id(ctx.id).state == "replicating"
    done = jobs.complete_job(job.id, {"2000": "52 aa/7", "2001": "52 bb/9"})
    assert (done.status, done.active_context_id, done.percent) == ("completed", None, 100.0)
    ctx = VmContext.get_by_id(ctx.id)
    assert (ctx.state, ctx.ready_for_failover, ctx.active_job_id, ctx.last_job_id) == (
        "ready_for_failover",
        True,
        None,
        job.id,
    )
    assert {d.disk_key: d.change_id for d in VmDisk.select()} == {
        "2000": "52 aa/7",
        "2001": "52 bb/9",
    }
    kinds = [e.kind for e in events.list_events(job_id=job.id)]
    assert kinds == ["job_created", "completed"]
    with pytest.raises(InvalidStateError):
        jobs.complete_job(job.id)


def test_stop_delete_and_list(any_db: str) -> None:
    ctx = _context()
    job = jobs.create_job(ctx.id)
    with pytest.raises(InvalidStateError):
        jobs.delete_job(job.id)
    stopped = jobs.request_stop(job.id)
    assert stopped.status == "stopped"
    with pytest.raises(InvalidStateError):
        jobs.request_stop(job.id)
    second = jobs.create_job(ctx.id)
    # taken by a worker (as the workflow runner does): a stop request waits for the worker
    ReplicationJob.update(claimed_by="w1").where(ReplicationJob.id == second.id).execute()
    requested = jobs.request_stop(second.id)
    assert (requested.status, requested.stop_requested) == ("pending", True)
    jobs.stop_job(second.id)
    doc = docs.fields(ReplicationJob, (("id", "id"), ("created_at", "created_at")))
    page = jobs.list_jobs(doc, status="stopped", limit=1)
    items = orjson.loads(page.items.text)
    assert (page.total, page.total_exact, page.has_more, len(items)) == (2, True, True, 1)
    assert page.after == (items[0]["created_at"], items[0]["id"])
    rest = jobs.list_jobs(doc, status="stopped", limit=1, after=page.after)
    assert [j["id"] for j in items + orjson.loads(rest.items.text)] == [second.id, job.id]
    assert not rest.has_more and rest.after is None
    assert jobs.list_jobs(doc, active=True).items.text == "[]"
    jobs.delete_job(job.id)
    with pytest.raises(NotFoundError):
        jobs.get_job(job.id)


def test_tokens_are_hashed(any_db: str) -> None:
    row, plain = tokens.create_token("ci", "operator")
    assert plain.startswith("oma_") and plain not in row.token_hash
    assert tokens.verify_token(plain).id == row.id
    assert tokens.verify_token(plain + "x") is None
    with pytest.raises(ConflictError):
        tokens.create_token("ci", "viewer")
    assert tokens.revoke_token("ci")
    assert tokens.verify_token(plain) is None


def test_heartbeats(any_db: str) -> None:
    assert heartbeats.latest() is None
    heartbeats.beat("w1", version="0.1.0")
    heartbeats.beat("w1")
    assert heartbeats.latest().worker_id == "w1"
    assert WorkerHeartbeat.select().count() == 1  # one row per worker, refreshed


def test_timestamps_come_back_utc_aware(any_db: str) -> None:
    ctx = _context()
    job = jobs.create_job(ctx.id)
    created = jobs.get_job(job.id).created_at
    assert created.tzinfo is not None
    assert abs((now() - created).total_seconds()) < 300


def test_concurrent_job_creation_yields_exactly_one(any_db: str) -> None:
    """Eight threads race to start a job on one VM: the database lets exactly one through."""
    import threading

    ctx = _context()
    barrier = threading.Barrier(8)
    results: list[str] = []

    def attempt() -> None:
        with database.connection_context():
            barrier.wait()
            try:
                jobs.create_job(ctx.id)
                results.append("created")
            except ConflictError:
                results.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["created"], results
    assert ReplicationJob.select().where(ReplicationJob.context == ctx.id).count() == 1
