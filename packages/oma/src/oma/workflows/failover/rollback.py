"""Rollback of a live failover: back to replicating from a powered-on source.

Steps (a ``failover_rollback`` workflow; each idempotent and driven by the real state, so it
undoes whatever part of the failover happened — a completed one, or one that failed midway):

1. ``remove_target``     — stop the target VM (forced), detach the replica volumes from it, then
   destroy it (expunged when the API key may expunge). Replica volumes are never deleted (a
   template root volume still on the VM goes with it), and they are not attached to the OMA
   again here: the next sync attaches them on demand, within the OMA VM's attach budget.
2. ``power_on_source``   — power the source VM back on through the VMA when the failover
   found it powered on (or was told nothing); confirm ``poweredOn``.
3. ``finish``            — the failover → ``rolled_back``; the context → ``ready_for_failover``
   when the target VM never started, else → ``discovered`` with its disks' change IDs
   cleared: a VM that ran on the replicas changed them, so only a full sync makes them a
   copy of the source again.

A failed step leaves the rollback ``failed``; ``POST /failovers/{id}/rollback`` again resumes it.
"""

from __future__ import annotations

from typing import Any

from migration_common import get_logger, utcnow

from ...cloudstack.client import is_removed
from ...database.models import (
    CloudStackTarget,
    ContextState,
    VmContext,
    VmDisk,
    Workflow,
)
from ...errors import WorkflowError
from ...services import _queries as q
from ..engine import Definition, Step, StepContext
from ..records import step_data, step_status
from .live import FailoverServices, replicas, target_of, vma_of
from .store import ROLLBACK_KIND, ROLLBACK_STEPS, ROLLED_BACK

log = get_logger(__name__)


class RollbackWorkflow:
    """Builds the rollback :class:`Definition` bound to a worker's services."""

    def __init__(self, services: FailoverServices) -> None:
        self.s = services
        steps = {
            "remove_target": self.remove_target,
            "power_on_source": self.power_on_source,
            "finish": self.finish,
        }
        self.definition = Definition(
            ROLLBACK_KIND,
            [Step(name, steps[name]) for name in ROLLBACK_STEPS],
            on_failure=self.on_failure,
            unwind=False,
        )

    # -- helpers --------------------------------------------------------------------------

    def _failover_id(self, ctx: StepContext) -> str:
        return str(ctx.params["failover_id"])

    def _cloudstack(self, ctx: StepContext) -> tuple[Any, CloudStackTarget]:
        validated = step_data(self._failover_id(ctx), "validate")
        target = None
        if validated.get("target_id"):
            target = CloudStackTarget.get_or_none(CloudStackTarget.id == validated["target_id"])
        if target is None:
            target = target_of(VmContext.get_by_id(ctx.workflow.context_id))
        return self.s.cloudstack_for(target), target

    def _event(self, ctx: StepContext, kind: str, message: str) -> None:
        q.append_event(
            None,
            ctx.workflow.context_id,
            kind,
            message,
            data={"rollback_id": ctx.workflow.id, "failover_id": self._failover_id(ctx)},
        )

    # -- steps ----------------------------------------------------------------------------

    def remove_target(self, ctx: StepContext) -> dict[str, Any]:
        """Stop, strip and destroy the failover's target VM (replica volumes kept)."""
        cs, _ = self._cloudstack(ctx)
        fo = self._failover_id(ctx)
        vm_id = step_data(fo, "deploy_target").get("vm_id")
        name = step_data(fo, "validate").get("vm_name")
        if not vm_id and name and step_status(fo, "deploy_target") not in (None, "pending"):
            found = cs.list_vms(name=name)  # deployed just before a crash, never recorded
            vm_id = found[0]["id"] if found else None
        if not vm_id:
            return {"vm_id": None, "destroyed": False}
        vm = cs.get_vm(vm_id)
        if vm is None or is_removed(vm):  # never act on a Destroyed or Expunging VM
            return {"vm_id": vm_id, "destroyed": True}
        if vm.get("state") == "Running":
            ctx.renew_lease()
            cs.stop_vm(vm_id, forced=True)
        mine = {rv.cloudstack_volume_id: rv for rv in replicas(ctx.workflow.context_id)}
        detached = []
        for vol in cs.list_volumes(vm_id=vm_id):
            rv = mine.get(vol["id"])
            if rv is None:
                continue  # the template's root volume goes with the VM
            ctx.renew_lease()
            cs.detach_volume(vol["id"])
            rv.attached_vm_id, rv.device_id, rv.device_path = None, None, None
            rv.state, rv.updated_at = "detached", utcnow()
            rv.save()
            detached.append(rv.disk_key)
        ctx.renew_lease()
        gone = cs.destroy_vm(vm_id, expunge=True)
        expunged = gone.get("expunged", True)
        self._event(
            ctx,
            "target_destroyed",
            f"destroyed target VM {vm_id}"
            + ("" if expunged else " (not expunged: the API key may not expunge)")
            + "; replicas kept",
        )
        return {"vm_id": vm_id, "destroyed": True, "expunged": expunged, "detached": detached}

    def power_on_source(self, ctx: StepContext) -> dict[str, Any]:
        """Power the source back on (when the failover found it on); confirm poweredOn."""
        fo = self._failover_id(ctx)
        off = step_data(fo, "power_off_source")
        if step_status(fo, "power_off_source") in (None, "pending") and not off:
            return {"skipped": True, "reason": "the failover never powered the source off"}
        if off.get("was_powered_on") is False:
            return {"skipped": True, "reason": "the source was already off before the failover"}
        context = VmContext.get_by_id(ctx.workflow.context_id)
        client = self.s.vma_for(vma_of(context))
        state = client.power_state(context.vm_id)
        if state != "poweredOn":
            client.power_on(context.vm_id)
            state = client.power_state(context.vm_id)
        if state != "poweredOn":
            raise WorkflowError(
                f"source VM {context.name} is {state} after power-on", step=ctx.step
            )
        self._event(ctx, "source_powered_on", f"source VM {context.name} powered on")
        return {"skipped": False, "state": state}

    def finish(self, ctx: StepContext) -> dict[str, Any]:
        """Context → ready_for_failover (or discovered when the target VM ran on the replicas:
        their change IDs are cleared so the next sync is full); the failover → rolled_back."""
        fo = self._failover_id(ctx)
        now = utcnow()
        diverged = step_status(fo, "start_target") not in (None, "pending")
        with q.write_transaction():
            if diverged:
                VmDisk.update(change_id=None, change_id_at=None, updated_at=now).where(
                    VmDisk.context == ctx.workflow.context_id
                ).execute()
                state, ready = ContextState.DISCOVERED, False
            else:
                state, ready = ContextState.READY_FOR_FAILOVER, True
            VmContext.update(state=state.value, ready_for_failover=ready, updated_at=now).where(
                VmContext.id == ctx.workflow.context_id
            ).execute()
            Workflow.update(status=ROLLED_BACK, updated_at=now).where(Workflow.id == fo).execute()
            self._event(
                ctx,
                "failover_rolled_back",
                f"failover {fo} rolled back"
                + (
                    "; the target VM ran on the replicas, so the next replication is full"
                    if diverged
                    else ""
                ),
            )
        return {"context_state": state.value, "replicas_diverged": diverged}

    def on_failure(self, ctx: StepContext, exc: BaseException) -> None:
        """Record the failure on the context's timeline."""
        self._event(ctx, "rollback_failed", f"rollback failed at {ctx.step}: {exc}")
