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
    """FOR UPDATE SKIP LOCKED on PostgreSQL/MariaDB, plain transactions on SQLite."""
    d = Definition("test", [Step("a", lambda c: {"ok": True})])
    engine = WorkflowEngine("w-any")
    wf = engine.create(d)
    claimed = engine.claim(["test"])
    assert claimed is not None and claimed.id == wf.id
    assert WorkflowEngine("other").claim(["test"]) is None
    assert engine.run(claimed, d) == "done"
    assert _steps(wf.id) == [("a", "done", 1)]
