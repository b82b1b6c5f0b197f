"""The one list of workflow kinds, and the definitions ``oma worker`` runs for them.

Every workflow row's ``kind`` is one of :data:`ALL`. :func:`definitions` binds each kind's
steps to a worker's services; one engine and one runner run them all
(:mod:`oma.workflows.engine`, :mod:`oma.services.runner`).
"""

from __future__ import annotations

from typing import Any

REPLICATION = "replication"
"""Provision replica volumes and exports, then hand the job to the VMA (unwinds on failure)."""
CLEANUP = "cleanup"
"""Delete a VM's replica volumes and exports (and, when asked, the VM context)."""
FAILOVER_LIVE = "failover_live"
"""The source stops, its replicas boot in CloudStack (waits for its final sync; no unwinding)."""
FAILOVER_ROLLBACK = "failover_rollback"
"""Undo a live failover: remove the target VM, power the source on."""
FAILOVER_TEST = "failover_test"
"""Boot copies of the replicas (volumes from snapshots) as ``<vm>-test`` while the source runs
and syncs go on (no unwinding: a failed test is ended)."""
FAILOVER_TEST_END = "failover_test_end"
"""End a test failover: destroy the test VM, its volumes and snapshots."""
ALL = (REPLICATION, CLEANUP, FAILOVER_LIVE, FAILOVER_ROLLBACK, FAILOVER_TEST, FAILOVER_TEST_END)
FAILOVER_KINDS = (FAILOVER_LIVE, FAILOVER_ROLLBACK, FAILOVER_TEST, FAILOVER_TEST_END)
"""Kinds that act on a VM's replicas and source as a failover; one at a time per VM."""


def definitions(services: Any) -> list[Any]:
    """Every kind's :class:`~oma.workflows.engine.Definition` bound to ``services`` (a
    :class:`~oma.workflows.failover.live.FailoverServices`), replication first."""
    from .cleanup import CleanupWorkflow
    from .failover.live import FailoverWorkflow
    from .failover.rollback import RollbackWorkflow
    from .failover.test import TestEndWorkflow, TestFailoverWorkflow
    from .replication import ReplicationWorkflow

    built = [
        ReplicationWorkflow(services).definition,
        CleanupWorkflow(services).definition,
        FailoverWorkflow(services).definition,
        RollbackWorkflow(services).definition,
        TestFailoverWorkflow(services).definition,
        TestEndWorkflow(services).definition,
    ]
    assert tuple(d.kind for d in built) == ALL
    return built
