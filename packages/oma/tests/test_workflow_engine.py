"""The step engine on a real SQLite database: order, data, compensation, crash resume."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labtest.oma import oma_database
from migration_common import utcnow
from oma.database.db import database
from oma.database.models import Workflow, WorkflowStep
from oma.workflows.engine import Definition, Step, WorkflowEngine


@pytest.fixture
def db(tmp_path):
    with oma_database(tmp_path / "oma.db") as handle, database.connection_context():
        yield handle


def _steps(wf_id):
    return [
        (s.name, s.status, s.attempts)
        for s in WorkflowStep.select()
        .where(WorkflowStep.workflow == wf_id)
        .order_by(WorkflowStep.position)
    ]


def test_steps_run_in_order_and_pass_data(db):
    calls = []

    def one(ctx):
        calls.append("one")
        return {"volume": "v-1"}

    def two(ctx):
        calls.append(("two", ctx.data["one"]["volume"], ctx.params["x"]))

    d = Definition("test", [Step("one", one), Step("two", two)])
    engine = WorkflowEngine("w1")
    wf = engine.create(d, params={"x": 7})
    claimed = engine.claim(["test"])
    assert claimed.id == wf.id and claimed.claimed_by == "w1"
    assert engine.run(claimed, d) == "done"
    assert calls == ["one", ("two", "v-1", 7)]
    assert _steps(wf.id) == [("one", "done", 1), ("two", "done", 1)]
    assert Workflow.get_by_id(wf.id).status == "done"
    assert engine.claim(["test"]) is None


def test_failure_compensates_done_steps_in_reverse(db):
    undone, failures = [], []

    def boom(ctx):
        raise RuntimeError("attach refused")

    d = Definition(
        "test",
        [
            Step("a", lambda c: None, lambda c: undone.append("a")),
            Step("b", lambda c: None, None),
            Step("c", boom, lambda c: undone.append("c")),
            Step("d", lambda c: pytest.fail("must not run")),
        ],
        on_failure=lambda ctx, exc: failures.append((ctx.step, str(exc))),
    )
    engine = WorkflowEngine("w1")
    wf = engine.create(d)
    assert engine.run(engine.claim(["test"]), d) == "failed"
    assert undone == ["c", "a"]
    assert _steps(wf.id) == [
        ("a", "compensated", 1),
        ("b", "done", 1),
        ("c", "failed", 1),
        ("d", "pending", 0),
    ]
    row = Workflow.get_by_id(wf.id)
    assert row.status == "failed" and row.error == "c: attach refused"
    assert failures == [("c", "attach refused")]
    step_c = WorkflowStep.get(WorkflowStep.workflow == wf.id, WorkflowStep.name == "c")
    assert step_c.error == "attach refused"


def test_a_dead_workers_workflow_resumes_after_its_lease(db):
    runs = []
    d = Definition(
        "test",
        [Step("a", lambda c: runs.append("a") or {"n": 1}), Step("b", lambda c: runs.append("b"))],
    )
    first = WorkflowEngine("dead-worker", lease_seconds=30)
    wf = first.create(d)
    claimed = first.claim(["test"])
    # the first worker finished step a, started b, then died
    WorkflowStep.update(status="done", data={"n": 1}, attempts=1).where(
        WorkflowStep.workflow == wf.id, WorkflowStep.name == "a"
    ).execute()
    WorkflowStep.update(status="running", attempts=1).where(
        WorkflowStep.workflow == wf.id, WorkflowStep.name == "b"
    ).execute()
    assert claimed is not None
    second = WorkflowEngine("second")
    assert second.claim(["test"]) is None  # lease still held
    later = WorkflowEngine("second", clock=lambda: utcnow() + timedelta(seconds=31))
    resumed = later.claim(["test"])
    assert resumed is not None and resumed.claimed_by == "second"
    assert later.run(resumed, d) == "done"
    assert runs == ["b"]
    assert _steps(wf.id) == [("a", "done", 1), ("b", "done", 2)]


def test_a_restarted_worker_with_the_same_id_reclaims_at_once(db):
    d = Definition("test", [Step("a", lambda c: None)])
    engine = WorkflowEngine("fixed-id", lease_seconds=300)
    wf = engine.create(d)
    assert engine.claim(["test"]) is not None
    again = WorkflowEngine("fixed-id", lease_seconds=300)
    assert again.release_own() == 1
    assert WorkflowEngine("other").claim(["test"]).id == wf.id


def test_claim_uses_row_locks_on_every_database(any_db):
    """A worker's claim skips a workflow whose row another worker's open claim transaction
    holds (``FOR UPDATE SKIP LOCKED`` on PostgreSQL/MariaDB: it neither waits nor takes it).
    SQLite has no row locks: the claim waits for the other transaction's database write lock
    (``BEGIN IMMEDIATE``) and then sees its lease."""
    import threading

    from oma.database.db import is_sqlite, write_transaction

    d = Definition("test", [Step("a", lambda c: {"ok": True})])
    first = WorkflowEngine("w-any").create(d)
    second = WorkflowEngine("w-any").create(d)
    # the first is the oldest: a claim that ignored the lock would pick it
    Workflow.update(created_at=utcnow() - timedelta(minutes=5)).where(
        Workflow.id == first.id
    ).execute()
    holding, release, wants_lock = threading.Event(), threading.Event(), threading.Event()
    got = {}

    def hold() -> None:  # worker w-any: claims inside a transaction that stays open
        with database.connection_context(), write_transaction():
            got["holder"] = WorkflowEngine("w-any").claim(["test"])
            holding.set()
            release.wait(60)

    def claim() -> None:  # worker "other", on its own connection
        with database.connection_context():
            if is_sqlite():  # tell when it first needs the write lock (and may wait for it)
                database.connection().set_trace_callback(
                    lambda sql: sql.startswith(("BEGIN IMMEDIATE", "UPDATE")) and wants_lock.set()
                )
            got["other"] = WorkflowEngine("other").claim(["test"])

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    claimer = threading.Thread(target=claim)
    claimer.start()
    if is_sqlite():
        assert wants_lock.wait(30)
        release.set()  # the claim waits for this commit
        claimer.join(30)
        blocked = claimer.is_alive()
    else:
        claimer.join(30)  # generous: SKIP LOCKED answers at once
        blocked = claimer.is_alive()
        release.set()
        claimer.join(60)
    holder.join(30)
    assert not blocked, "the claim waited for the row another worker holds"
    assert got["holder"].id == first.id and got["holder"].claimed_by == "w-any"
    if any_db.startswith("mysql"):
        # InnoDB's locking read (repeatable read) also locks the rows the claim scanned and
        # did not take, so a concurrent claim may skip every row: it never waits and never
        # takes the held one, and the worker claims again on its next tick
        assert got["other"] is None or got["other"].id == second.id
        got["other"] = got["other"] or WorkflowEngine("other").claim(["test"])
    assert got["other"] is not None and got["other"].id == second.id
    assert {w.id: w.claimed_by for w in Workflow.select()} == {
        first.id: "w-any",
        second.id: "other",
    }
    assert WorkflowEngine("w-any").run(got["holder"], d) == "done"
    assert _steps(first.id) == [("a", "done", 1)]
