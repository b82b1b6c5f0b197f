"""The cleanup workflow: remove a VM context's replica volumes and their exports.

Requested with :func:`request_cleanup` (e.g. by the API before a context is deleted, or by an
operator after giving up on a VM); run by ``oma worker`` like any workflow. Steps:

1. ``check``   — refuse while the context has an active job, while a failover or rollback of
   it is active, or while it is failed over (its replicas are, or are about to become, the
   failed-over VM's disks: a cleanup between ``detach_replicas`` and ``deploy_target`` would
   delete them);
2. ``exports`` — stop every qemu-nbd export of the context's volumes (no export outlives
   its volume);
3. ``volumes`` — first the CloudStack snapshots the VM's failovers took of its replicas
   (:mod:`oma.workflows.replica_snapshots`; a rollback deletes its own); then per replica
   volume: detach it from the OMA VM, delete it in CloudStack, mark
   the row ``deleted`` and clear the disk's replica and change ID (the next sync is full).
   A volume attached to any other VM (a failed-over VM uses it) is left alone and reported;
4. ``forget``  — with ``params.delete_context`` the context row (and its history) goes too.

Every step is idempotent: a crashed cleanup resumes where it stopped.
"""

from __future__ import annotations

from typing import Any

from migration_common import get_logger

from ..database.models import (
    CloudStackTarget,
    ContextState,
    VmContext,
    Workflow,
)
from ..errors import ConflictError, InvalidStateError, OmaError
from ..services import _queries as q
from .engine import Definition, Step, StepContext, WorkflowEngine
from .kinds import CLEANUP
from .records import active_failover, describe, lock_context
from .replica_snapshots import delete_failover_snapshots, failovers_with_snapshots
from .replicas import delete_replica, live_replicas, stop_exports
from .replication import InvalidRequest, ReplicationServices, _target_for

log = get_logger(__name__)

KIND = CLEANUP
STEPS = ("check", "exports", "volumes", "forget")


def cleanup_refusal(context: VmContext) -> OmaError | None:
    """Why the replicas of ``context`` may not be removed now (None when they may).

    An active job, an active failover or rollback (:class:`ConflictError`), or a failed-over
    context (:class:`InvalidStateError`: roll the failover back, or end the test, first).
    """
    if context.active_job_id:
        return InvalidStateError(
            f"VM context {context.id} has an active job {context.active_job_id}; stop it first"
        )
    active = active_failover(context.id)
    if active is not None:
        return ConflictError(
            f"VM context {context.id} has an active {describe(active)} ({active.id}); "
            "its replicas must not be removed now",
            field="vm_context_id",
        )
    if context.state == ContextState.FAILED_OVER_LIVE.value:
        return InvalidStateError(
            f"VM context {context.id} is failed_over_live: its replicas are the failed-over "
            "VM's disks; roll the failover back first"
        )
    if context.state == ContextState.FAILED_OVER_TEST.value:
        return InvalidStateError(
            f"VM context {context.id} is failed_over_test: end the test failover first "
            "(its snapshots and volumes are made from these replicas)"
        )
    return None


def ensure_cleanup_allowed(context_id: str) -> VmContext:
    """The context, locked for this transaction, or the error of :func:`cleanup_refusal`.

    Call inside a write transaction: the lock orders this check with a failover's start,
    which takes the same lock and refuses while a cleanup is active.
    """
    context = lock_context(context_id)
    refusal = cleanup_refusal(context)
    if refusal is not None:
        raise refusal
    return context


def request_cleanup(context_id: str, *, delete_context: bool = False) -> Workflow:
    """Queue a cleanup of ``context_id``'s replicas (the worker runs it); returns the row.

    Refused (:func:`cleanup_refusal`) while a job, failover or rollback of the context is
    active, or while it is failed over.
    """
    names = Definition(KIND, [Step(n, lambda _c: None) for n in STEPS])
    with q.write_transaction():
        ensure_cleanup_allowed(context_id)
        return WorkflowEngine("api").create(
            names, context_id=context_id, params={"delete_context": delete_context}
        )


class CleanupWorkflow:
    """Builds the cleanup :class:`Definition` bound to a worker's services."""

    def __init__(self, services: ReplicationServices) -> None:
        self.s = services
        self.definition = Definition(
            KIND,
            [
                Step("check", self.check),
                Step("exports", self.exports),
                Step("volumes", self.volumes),
                Step("forget", self.forget),
            ],
        )

    def _context(self, ctx: StepContext) -> VmContext | None:
        return VmContext.get_or_none(VmContext.id == ctx.workflow.context_id)

    def check(self, ctx: StepContext) -> dict[str, Any]:
        """Refuse while a job, failover or rollback is active, or the VM is failed over."""
        context = self._context(ctx)
        if context is None:
            return {"gone": True}
        refusal = cleanup_refusal(context)
        if refusal is not None:
            raise InvalidRequest(str(refusal), step="check")
        if not live_replicas(context.id):
            return {"target_id": None}
        return {"target_id": _target_for(context).id}

    def exports(self, ctx: StepContext) -> dict[str, Any]:
        """Stop every running export of the context's volumes."""
        stopped = []
        for rv in live_replicas(ctx.workflow.context_id):
            if stop_exports(self.s.exports, rv):
                stopped.append(rv.cloudstack_volume_id)
        return {"stopped": stopped}

    def volumes(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the failovers' replica snapshots, then detach from the OMA and delete each
        replica volume; keep ones used elsewhere."""
        if not ctx.data["check"].get("target_id"):
            return {"deleted": [], "kept": []}
        target = CloudStackTarget.get_by_id(ctx.data["check"]["target_id"])
        cs = self.s.cloudstack_for(target)
        snapshots = [
            *(ctx.data["volumes"].get("snapshots_deleted") or []),
            *(
                snap
                for fo in failovers_with_snapshots(ctx.workflow.context_id)
                for snap in delete_failover_snapshots(cs, fo, renew=ctx.renew_lease)
            ),
        ]
        ctx.record(snapshots_deleted=snapshots)
        deleted, kept = [], []
        for rv in live_replicas(ctx.workflow.context_id):
            ctx.renew_lease()
            if delete_replica(self.s.exports, cs, target, rv, why="cleanup"):
                deleted.append(rv.cloudstack_volume_id)
                continue
            kept.append(rv.cloudstack_volume_id)
            q.append_event(
                None,
                rv.context_id,
                "volume_kept",
                f"replica volume {rv.cloudstack_volume_id} is attached to another VM; not deleted",
            )
        return {"deleted": deleted, "kept": kept, "snapshots_deleted": snapshots}

    def forget(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the context row when asked to (and nothing was kept)."""
        if not ctx.params.get("delete_context") or ctx.data["volumes"].get("kept"):
            return {"deleted_context": False}
        context = self._context(ctx)
        if context is not None:
            from ..database.repos import contexts

            # keep this workflow's row (and its history) when the context goes
            Workflow.update(context=None).where(Workflow.id == ctx.workflow.id).execute()
            contexts.delete_context(context.id)
        return {"deleted_context": True}
