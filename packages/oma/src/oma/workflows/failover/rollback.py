"""Rollback of a live failover: back to replicating from a powered-on source.

Steps (a ``failover_rollback`` workflow; each idempotent and driven by the real state, so it
undoes whatever part of the failover happened — a completed one, or one that failed midway):

1. ``remove_target``     — stop the target VM (forced), detach the replica volumes from it, then
   destroy it (expunged when the API key may expunge). Replica volumes are never deleted (a
   template root volume still on the VM goes with it), and they are not attached to the OMA
   again here: the next sync attaches them on demand, within the OMA VM's attach budget.
2. ``revert_replicas``   — every replica the failover may have changed since its final sync
   (all of them once the target VM started; the boot replica once guest conversion ran) is
   reverted to the CloudStack snapshot the failover took right after the final sync
   (``revertSnapshot``: the volume must be detached, so a replica still on the OMA is
   detached first). A reverted replica is again the copy its disk's change ID describes, so
   the next sync stays incremental. When that cannot be proven — no snapshot recorded, the
   snapshot gone, the revert refused, the snapshot taken after guest conversion or the target
   VM changed the replica, the disk's change ID moved — the disk falls back to a full sync.
3. ``power_on_source``   — power the source VM back on through the VMA when the failover
   found it powered on (or was told nothing); confirm ``poweredOn``.
4. ``delete_snapshots``  — delete the failover's snapshots in CloudStack.
5. ``finish``            — the failover → ``rolled_back``; the change IDs of the disks that
   fell back are cleared (the next sync of those disks is full); the context →
   ``ready_for_failover`` when every disk kept its change ID, else ``discovered``. The
   rollback's ``result`` and the ``failover_rolled_back`` event say which disks were
   reverted and which fall back to a full sync, and why.

A failed step leaves the rollback ``failed``; ``POST /failovers/{id}/rollback`` again resumes it.
"""

from __future__ import annotations

from typing import Any

from migration_common import get_logger, utcnow

from ...cloudstack.client import is_removed
from ...database.models import (
    CloudStackTarget,
    ContextState,
    ReplicaVolume,
    VmContext,
    VmDisk,
    Workflow,
)
from ...errors import CloudStackError, CloudStackUnreachable, WorkflowError
from ...services import _queries as q
from ..engine import Definition, Step, StepContext
from ..records import step_data, step_status
from ..replica_snapshots import STEP as SNAPSHOT_STEP
from ..replica_snapshots import delete_failover_snapshots, recorded, replicas_changed_by
from ..replicas import detach_from_oma
from .live import FailoverServices, replicas, target_of, vma_of
from .store import ROLLBACK_KIND, ROLLBACK_STEPS, ROLLED_BACK

log = get_logger(__name__)


class RollbackWorkflow:
    """Builds the rollback :class:`Definition` bound to a worker's services."""

    def __init__(self, services: FailoverServices) -> None:
        self.s = services
        steps = {
            "remove_target": self.remove_target,
            "revert_replicas": self.revert_replicas,
            "power_on_source": self.power_on_source,
            "delete_snapshots": self.delete_snapshots,
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

    def _event(self, ctx: StepContext, kind: str, message: str, **data: Any) -> None:
        q.append_event(
            None,
            ctx.workflow.context_id,
            kind,
            message,
            data={"rollback_id": ctx.workflow.id, "failover_id": self._failover_id(ctx), **data},
        )

    def _changed(self, ctx: StepContext) -> dict[str, str]:
        """The disks whose replica the failover may have changed since its final sync, with
        why: every disk once the target VM started, the boot disk once guest conversion ran."""
        fo = self._failover_id(ctx)
        keys = [rv.disk_key for rv in replicas(ctx.workflow.context_id)]
        changed = replicas_changed_by(fo, step_data(fo, "validate").get("boot_disk_key"))
        if "*" in changed:
            return dict.fromkeys(keys, changed["*"])
        return {k: why for k, why in changed.items() if k in keys}

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

    def revert_replicas(self, ctx: StepContext) -> dict[str, Any]:
        """Revert each replica the failover changed to its post-final-sync snapshot; a disk
        whose replica cannot be proven unchanged since its last sync falls back to full."""
        fo = self._failover_id(ctx)
        changed = self._changed(ctx)
        data = ctx.data["revert_replicas"]
        reverted: dict[str, str] = dict(data.get("reverted") or {})
        full: dict[str, str] = dict(data.get("full") or {})
        if changed:
            cs, target = self._cloudstack(ctx)
            change_ids = {
                d.disk_key: d.change_id
                for d in VmDisk.select().where(VmDisk.context == ctx.workflow.context_id)
            }
            for rv in replicas(ctx.workflow.context_id):
                key = rv.disk_key
                if key not in changed or key in reverted or key in full:
                    continue
                ctx.renew_lease()
                problem = self._revert_one(cs, target, fo, rv, change_ids.get(key))
                if problem is None:
                    reverted[key] = recorded(fo)[key]["snapshot_id"]
                    ctx.record(reverted=reverted)
                    continue
                full[key] = problem
                ctx.record(full=full)
                self._event(
                    ctx,
                    "rollback_full_sync",
                    f"disk {key}: {changed[key]} and cannot be reverted ({problem}); "
                    "its next sync is full",
                    disk_key=key,
                    reason=problem,
                )
        if reverted:
            self._event(
                ctx,
                "replicas_reverted",
                "replicas reverted to the snapshots of the final sync: "
                + ", ".join(f"disk {k} → {v}" for k, v in reverted.items())
                + "; their next sync is incremental",
            )
        return {"changed": changed, "reverted": reverted, "full": full}

    def _revert_one(
        self,
        cs: Any,
        target: CloudStackTarget,
        failover_id: str,
        rv: ReplicaVolume,
        change_id: str | None,
    ) -> str | None:
        """Revert one replica to its snapshot; None when done, else why it cannot be."""
        taken = step_data(failover_id, SNAPSHOT_STEP)
        entry = (taken.get("snapshots") or {}).get(rv.disk_key)
        boot = step_data(failover_id, "validate").get("boot_disk_key")
        refused = (taken.get("refused") or {}).get(rv.disk_key)
        if refused:
            return f"CloudStack refused the failover's snapshot of the replica: {refused}"
        if entry is None or not entry.get("snapshot_id"):
            return "no snapshot of the replica was recorded"
        snap_id = entry["snapshot_id"]
        if taken.get("after_target_start"):
            return f"snapshot {snap_id} was taken after the target VM ran"
        if rv.disk_key == boot and taken.get("after_guest_conversion"):
            return f"snapshot {snap_id} was taken after guest conversion changed the boot replica"
        if entry.get("volume_id") != rv.cloudstack_volume_id:
            return f"snapshot {snap_id} is of volume {entry.get('volume_id')}, not of the replica"
        if not change_id or change_id != entry.get("change_id"):
            return f"the disk's change ID is no longer the one snapshot {snap_id} matches"
        if entry.get("deleted") or cs.get_snapshot(snap_id) is None:
            return f"snapshot {snap_id} no longer exists in CloudStack"
        vol = cs.get_volume(rv.cloudstack_volume_id)
        if vol is None:
            return f"replica volume {rv.cloudstack_volume_id} no longer exists"
        on_vm = vol.get("virtualmachineid")
        if on_vm == target.oma_vm_id:  # e.g. guest conversion failed on the OMA
            detach_from_oma(self.s.exports, cs, target, rv, reason="to revert it to its snapshot")
        elif on_vm:
            return f"replica volume {rv.cloudstack_volume_id} is attached to VM {on_vm}"
        try:
            cs.revert_snapshot(snap_id)
        except CloudStackUnreachable:
            raise  # the rollback fails and resumes later
        except CloudStackError as exc:
            return f"reverting to snapshot {snap_id} failed: {exc.errortext}"
        return None

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

    def delete_snapshots(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the failover's replica snapshots in CloudStack (gone ones count as deleted)."""
        fo = self._failover_id(ctx)
        if not recorded(fo):
            return {"deleted": []}
        cs, _ = self._cloudstack(ctx)
        deleted = [
            *(ctx.data["delete_snapshots"].get("deleted") or []),
            *delete_failover_snapshots(cs, fo, renew=ctx.renew_lease),
        ]
        return {"deleted": deleted}

    def finish(self, ctx: StepContext) -> dict[str, Any]:
        """The failover → rolled_back; the disks that fell back lose their change IDs (their
        next sync is full); the context → ready_for_failover when every disk kept its change
        ID, else → discovered. The rollback's result says which way each disk went."""
        fo = self._failover_id(ctx)
        revert = ctx.data.get("revert_replicas") or {}
        full: dict[str, str] = dict(revert.get("full") or {})
        reverted: dict[str, str] = dict(revert.get("reverted") or {})
        now = utcnow()
        with q.write_transaction():
            if full:
                VmDisk.update(change_id=None, change_id_at=None, updated_at=now).where(
                    VmDisk.context == ctx.workflow.context_id, VmDisk.disk_key.in_(list(full))
                ).execute()
            ready = not full and all(
                d.change_id
                for d in VmDisk.select().where(VmDisk.context == ctx.workflow.context_id)
            )
            state = ContextState.READY_FOR_FAILOVER if ready else ContextState.DISCOVERED
            VmContext.update(state=state.value, ready_for_failover=ready, updated_at=now).where(
                VmContext.id == ctx.workflow.context_id
            ).execute()
            result = {
                "context_state": state.value,
                "chain_kept": not full,
                "reverted": reverted,
                "full_sync": full,
                "snapshots_deleted": (ctx.data.get("delete_snapshots") or {}).get("deleted", []),
            }
            Workflow.update(result=result).where(Workflow.id == ctx.workflow.id).execute()
            # the failover's record shows how it was rolled back (GET /failovers/{id})
            failover = Workflow.get_by_id(fo)
            Workflow.update(
                status=ROLLED_BACK,
                result={**(failover.result or {}), "rollback": result},
                updated_at=now,
            ).where(Workflow.id == fo).execute()
            if full:
                note = "; next sync full for " + "; ".join(
                    f"disk {k} ({why})" for k, why in full.items()
                )
            elif reverted:
                note = "; replicas reverted to their snapshots: the next sync is incremental"
            else:
                note = "; the replicas were not changed: the next sync is incremental"
            self._event(
                ctx,
                "failover_rolled_back",
                f"failover {fo} rolled back{note}",
                chain_kept=not full,
                full_sync=full,
            )
        return result

    def on_failure(self, ctx: StepContext, exc: BaseException) -> None:
        """Record the failure on the context's timeline."""
        self._event(ctx, "rollback_failed", f"rollback failed at {ctx.step}: {exc}")
