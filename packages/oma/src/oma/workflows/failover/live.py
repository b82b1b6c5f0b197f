"""The live failover workflow: the source VM stops, its replicas boot in CloudStack.

Steps (``workflow_steps`` rows of a ``failover_live`` workflow; each idempotent, each
re-checking the real state before acting, so a killed worker resumes at the recorded step):

1. ``validate``          — context ready_for_failover with a change ID per disk and a replica
   volume per disk, no foreign active job; the service offering and every mapped network
   exist in the target's zone; the target VM is planned from the source's spec
   (:mod:`oma.workflows.failover.target_vm`): one NIC per source NIC, no two on one network; the
   template requested or the one matching the guest OS; the boot disk; BIOS/UEFI; no VM of
   the target name exists (unless it is this failover's own).
2. ``power_off_source``  — through the VMA: graceful shutdown up to ``graceful_timeout_s``,
   then forced when ``force``; confirms ``poweredOff``. Downtime starts here.
3. ``final_sync``        — creates a normal incremental replication job through the same
   repository function the API uses and waits for it *through the database*: the step stays
   ``running`` across runner ticks (:class:`StepWaiting`), the worker is never blocked. The
   job verifies (reads every changed range back, compares sha256) unless the failover was
   started with ``verify_final_sync: false``; a mismatch fails the step (``verify_mismatch``).
4. ``detach_replicas``   — stops each replica's NBD export and detaches it from the OMA VM
   (:func:`oma.workflows.replicas.detach_from_oma`).
5. ``snapshot_replicas`` — a CloudStack snapshot of each (now detached) replica, recorded with
   its disk key and the change ID it matches: what a rollback reverts to, so the next sync
   stays incremental (:mod:`oma.workflows.replica_snapshots`). Detached first, because KVM
   refuses to snapshot a volume of a running VM (the OMA) unless ``kvm.snapshot.enabled``.
6. ``guest_conversion``  — ``virt-v2v-in-place`` on the boot replica, attached to the OMA for
   it and detached again, or skipped (``OMA_GUEST_CONVERSION=skip``, the lab's default).
7. ``deploy_target``     — ``deployVirtualMachine`` stopped (template, offering — CPU/memory
   from the source spec when the offering is custom — one NIC per source NIC on its mapped
   network, MACs kept when ``keep_macs``, ``boottype``/``bootmode`` from the source's
   firmware); the template's root volume is detached and
   deleted, the boot disk's replica attached as device 0, the others in disk-key order.
8. ``start_target``      — starts the VM and confirms ``Running``. Downtime ends here.
9. ``finalize``          — context → ``failed_over_live``; the failover's ``result`` holds the
   target VM, downtime and the final sync's bytes.

A failed step leaves the failover ``failed`` with that step's error (CloudStack's errortext
included); nothing is undone automatically. Retry resumes; rollback is
:mod:`oma.workflows.failover.rollback`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from migration_common import ConfigError, get_logger, rfc3339, utcnow

from ...cloudstack.client import is_removed
from ...database.models import (
    CloudStackTarget,
    ContextState,
    JobStatus,
    ReplicationJob,
    VmaAppliance,
    VmContext,
    VmDisk,
    Workflow,
)
from ...database.repos import jobs as jobs_repo
from ...errors import CloudStackError, CloudStackUnreachable, ConflictError, WorkflowError
from ...services import _queries as q
from ..engine import Definition, Step, StepContext, StepWaiting
from ..records import step_data
from ..replica_snapshots import SnapshotNotReady, replicas_changed_by, take_snapshot
from ..replicas import attach_to_oma, detach_from_oma, disk_order
from ..replicas import live_replicas as replicas
from ..replication import ReplicationServices, context_target
from .store import FAILOVER_STEPS, KIND, seconds_between, test_end_pending
from .target_vm import (
    TargetInvalid,
    boot_disk,
    boot_firmware,
    choose_template,
    nic_plan,
    vm_name_for,
)

log = get_logger(__name__)

GUEST_CONVERSION_MODES = ("skip", "virt-v2v")
GUEST_CONVERSION_VARIABLE = "OMA_GUEST_CONVERSION"


def guest_conversion_mode(config: Any) -> str:
    """``skip`` (default) or ``virt-v2v``: the loaded configuration's ``guest_conversion``
    (``OMA_GUEST_CONVERSION``, validated by :mod:`oma.config`; never read from the environment
    here). Anything else stops the worker with an error naming the variable."""
    value = getattr(config, "guest_conversion", None) or "skip"
    mode = str(value).strip().lower()
    if mode not in GUEST_CONVERSION_MODES:
        raise ConfigError(
            GUEST_CONVERSION_VARIABLE,
            f"expected {' or '.join(GUEST_CONVERSION_MODES)}, got {value!r}",
        )
    return mode


TARGET_STATE = "attached_target"
"""``replica_volumes.state`` of a replica attached to the failed-over VM."""


class FailoverInvalid(WorkflowError):
    """The failover cannot run as requested (state, offering, network, template, name)."""


@dataclass
class FailoverServices(ReplicationServices):
    """What the failover and rollback steps talk to: the replication services plus guest
    conversion; built once per worker."""

    guest_conversion: str = "skip"
    conversion_timeout: float = 3600.0


# -- helpers shared with the rollback ----------------------------------------------------------


def target_of(context: VmContext) -> CloudStackTarget:
    """The context's CloudStack target, else the default (or oldest) one."""
    row = context_target(context)
    if row is None:
        raise FailoverInvalid("no CloudStack target is configured", step="validate")
    return row


def vma_of(context: VmContext) -> VmaAppliance:
    """The context's VMA appliance."""
    row = VmaAppliance.get_or_none(VmaAppliance.id == context.vma_id) if context.vma_id else None
    if row is None:
        raise FailoverInvalid(f"VM context {context.name} has no VMA", step="validate")
    return row


def boot_disk_key(context: VmContext, requested: str | None = None) -> tuple[str, str]:
    """``(boot disk key, why)``: requested, else from the source's boot order, else from its
    disk controllers (:func:`oma.workflows.failover.target_vm.boot_disk`)."""
    keys = sorted(
        (d.disk_key for d in VmDisk.select().where(VmDisk.context == context.id)), key=disk_order
    )
    try:
        return boot_disk(keys, context.spec or {}, requested)
    except TargetInvalid as exc:
        raise FailoverInvalid(exc.message, step="validate") from exc


def check_replicas(context: VmContext) -> None:
    """Refuse a failover (live or test) of a VM whose disks lack a completed sync or a
    replica volume."""
    disks = sorted(
        VmDisk.select().where(VmDisk.context == context.id),
        key=lambda d: disk_order(d.disk_key),
    )
    missing = [d.disk_key for d in disks if not d.change_id]
    if not disks or missing:
        raise FailoverInvalid(
            f"disk(s) {', '.join(missing) or '(none)'} have no completed sync; "
            "run a replication first",
            step="validate",
        )
    have = {rv.disk_key for rv in replicas(context.id) if rv.cloudstack_volume_id}
    lost = [d.disk_key for d in disks if d.disk_key not in have]
    if lost:
        raise FailoverInvalid(f"disk(s) {', '.join(lost)} have no replica volume", step="validate")


def plan_target(
    services: FailoverServices,
    context: VmContext,
    p: dict[str, Any],
    *,
    derived_name: str,
    own_vm: str | None,
) -> dict[str, Any]:
    """The target VM of a failover (live or test) from the request ``p`` and the source's
    spec, checked against CloudStack: target, offering (CPU/memory of a custom one),
    networks and NICs, template, boot disk, firmware and a free name (``vm_name``, else
    ``derived_name``; ``own_vm`` is the workflow's own VM). :class:`FailoverInvalid`
    names what is wrong."""
    boot, boot_why = boot_disk_key(context, p.get("boot_disk_key"))
    target = target_of(context)
    cs = services.cloudstack_for(target)

    offering = next(
        (o for o in cs.list_service_offerings() if o.get("id") == p["service_offering_id"]),
        None,
    )
    if offering is None:
        raise FailoverInvalid(
            f"service offering {p['service_offering_id']} does not exist", step="validate"
        )
    custom = bool(offering.get("iscustomized"))
    spec = context.spec or {}
    cpus = spec.get("cpus") or spec.get("num_cpu")
    memory_mb = spec.get("memory_mb")
    if custom and not (cpus and memory_mb):
        raise FailoverInvalid(
            f"service offering {offering.get('name')} is custom but the source VM's spec has "
            "no cpus/memory_mb; choose a fixed offering",
            step="validate",
        )

    mappings: dict[str, str] = dict(p.get("network_mappings") or {})
    zone_networks = {n.get("id") for n in cs.list_networks(zone_id=target.zone_id)}
    for source, network_id in mappings.items():
        if network_id not in zone_networks:
            raise FailoverInvalid(
                f"network {network_id} (mapped from {source!r}) does not exist in zone "
                f"{target.zone_id}",
                step="validate",
            )
    try:
        nics = nic_plan(spec, mappings, bool(p.get("keep_macs", True)))
        template, template_why = choose_template(
            cs.list_templates(zone_id=target.zone_id), spec, p.get("template_id")
        )
    except TargetInvalid as exc:
        raise FailoverInvalid(exc.message, step="validate") from exc
    if not nics:
        raise FailoverInvalid("network_mappings maps no network", step="validate")
    boot_type, boot_mode = boot_firmware(spec)

    name = target_vm_name(cs, p.get("vm_name"), derived_name, own_vm)
    return {
        "target_id": target.id,
        "service_offering_id": offering["id"],
        "custom_offering": custom,
        "cpus": int(cpus) if custom else None,
        "memory_mb": int(memory_mb) if custom else None,
        "network_ids": [n.network_id for n in nics],
        "macs": {n.network_id: n.mac for n in nics if n.mac},
        "nics": [{"label": n.label, "network_id": n.network_id, "mac": n.mac} for n in nics],
        "template_id": template["id"],
        "template_reason": template_why,
        "vm_name": name,
        "boot_disk_key": boot,
        "boot_disk_reason": boot_why,
        "boot_type": boot_type,
        "boot_mode": boot_mode,
    }


def target_vm_name(cs: Any, requested: str | None, derived: str, own_vm: str | None) -> str:
    """The target VM's name: the requested one, else the one derived from the source.

    A live VM of that name (other than this failover's own) refuses the failover. A
    Destroyed VM that still holds the name (not expunged yet) refuses a requested name and
    moves a derived one to the next free ``<name>-2``, ``<name>-3`` …: CloudStack would
    refuse the deploy, and the OMA never acts on a Destroyed VM."""
    name = requested or derived
    for attempt in range(2, 100):
        found = [v for v in cs.list_vms(name=name, include_removed=True) if v["id"] != own_vm]
        live = [v for v in found if not is_removed(v)]
        if live:
            raise FailoverInvalid(
                f"a CloudStack VM named {name} already exists ({live[0].get('id')})",
                step="validate",
            )
        if not found:
            return name
        if requested:
            raise FailoverInvalid(
                f"the name {name} is still held by CloudStack VM {found[0].get('id')} in "
                f"state {found[0].get('state')} until it is expunged; choose another vm_name",
                step="validate",
            )
        suffix = f"-{attempt}"
        name = derived[: 63 - len(suffix)].rstrip("-") + suffix
    raise FailoverInvalid(f"no free CloudStack VM name for {derived}", step="validate")


def deploy_stopped(cs: Any, target: CloudStackTarget, plan: dict[str, Any]) -> dict[str, Any]:
    """Deploy the planned VM (:func:`plan_target`) stopped, from its template; returns it."""
    return cs.deploy_vm(
        name=plan["vm_name"],
        zone_id=target.zone_id,
        service_offering_id=plan["service_offering_id"],
        template_id=plan["template_id"],
        network_ids=plan["network_ids"],
        start=False,
        macs=plan["macs"] or None,
        cpus=plan["cpus"],
        memory_mb=plan["memory_mb"],
        boot_type=plan.get("boot_type"),
        boot_mode=plan.get("boot_mode"),
    )


def _now_text() -> str:
    return rfc3339(utcnow())


class FailoverWorkflow:
    """Builds the live failover :class:`Definition` bound to a worker's services."""

    def __init__(self, services: FailoverServices) -> None:
        self.s = services
        steps = {
            "validate": self.validate,
            "power_off_source": self.power_off_source,
            "final_sync": self.final_sync,
            "snapshot_replicas": self.snapshot_replicas,
            "guest_conversion": self.guest_conversion,
            "detach_replicas": self.detach_replicas,
            "deploy_target": self.deploy_target,
            "start_target": self.start_target,
            "finalize": self.finalize,
        }
        self.definition = Definition(
            KIND,
            [Step(name, steps[name]) for name in FAILOVER_STEPS],
            on_failure=self.on_failure,
            unwind=False,
        )

    # -- helpers --------------------------------------------------------------------------

    def _context(self, ctx: StepContext) -> VmContext:
        return VmContext.get_by_id(ctx.workflow.context_id)

    def _cloudstack(self, ctx: StepContext) -> tuple[Any, CloudStackTarget]:
        target = CloudStackTarget.get_by_id(ctx.data["validate"]["target_id"])
        return self.s.cloudstack_for(target), target

    def _later(self, ctx: StepContext, name: str) -> dict[str, Any]:
        """What a step recorded so far, also for a step the engine has not reached yet."""
        return ctx.data.get(name) or step_data(ctx.workflow.id, name)

    def _hold_lease(self, ctx: StepContext, seconds: float) -> None:
        """Extend this worker's lease on the failover to ``seconds`` from now."""
        engine = ctx.engine
        now = engine.clock()
        Workflow.update(lease_until=now + timedelta(seconds=seconds), updated_at=now).where(
            Workflow.id == ctx.workflow.id, Workflow.claimed_by == engine.worker_id
        ).execute()

    def _event(self, ctx: StepContext, kind: str, message: str, **data: Any) -> None:
        q.append_event(
            None,
            ctx.workflow.context_id,
            kind,
            message,
            data={"failover_id": ctx.workflow.id, **data},
        )

    # -- 1 validate ---------------------------------------------------------------------------

    def validate(self, ctx: StepContext) -> dict[str, Any]:
        """Check state, disks, replicas, offering, networks, template and the VM name."""
        p = ctx.params
        context = self._context(ctx)
        own_job = self._later(ctx, "final_sync").get("job_id")
        # a resumed failover already acted (source off, final sync tried): a failed final
        # sync may have left the context "failed"; its earlier replicas are still complete
        acted = bool(self._later(ctx, "power_off_source"))
        ready = (
            context.state == ContextState.READY_FOR_FAILOVER.value and context.ready_for_failover
        )
        resumable = acted and context.state in (
            ContextState.READY_FOR_FAILOVER.value,
            ContextState.REPLICATING.value,
            ContextState.FAILED.value,
        )
        if context.state == ContextState.FAILED_OVER_TEST.value and test_end_pending(context.id):
            raise StepWaiting("waiting for the test failover to end")  # asked with end_test
        if not (ready or resumable):
            raise FailoverInvalid(
                f"VM context {context.name} is {context.state}, not ready_for_failover",
                step="validate",
            )
        if context.active_job_id and context.active_job_id != own_job:
            raise FailoverInvalid(
                f"VM context {context.name} has an active replication job {context.active_job_id}",
                step="validate",
            )
        check_replicas(context)
        vma_of(context)
        own_vm = self._later(ctx, "deploy_target").get("vm_id")
        return plan_target(
            self.s, context, p, derived_name=vm_name_for(context.name), own_vm=own_vm
        )

    # -- 2 power off ----------------------------------------------------------------------------

    def power_off_source(self, ctx: StepContext) -> dict[str, Any]:
        """Shut the source down through the VMA (graceful, then forced if allowed); confirm."""
        context = self._context(ctx)
        data = ctx.data["power_off_source"]
        client = self.s.vma_for(vma_of(context))
        state = client.power_state(context.vm_id)
        if "was_powered_on" not in data:
            ctx.record(was_powered_on=state != "poweredOff", initial_state=state)
        method = data.get("method", "already_off")
        if state != "poweredOff":
            ctx.record(requested_at=_now_text())
            timeout_s = int(ctx.params.get("graceful_timeout_s", 300))
            # the VMA answers once the VM is off: hold the lease for that long, so no other
            # worker takes the failover over while this one waits
            self._hold_lease(ctx, timeout_s + 120)
            answer = client.power_off(
                context.vm_id,
                graceful=True,
                timeout_s=timeout_s,
                force=bool(ctx.params.get("force", True)),
            )
            method = str(answer.get("method") or "unknown")
            state = client.power_state(context.vm_id)
        if state != "poweredOff":
            raise WorkflowError(
                f"source VM {context.name} is still {state} after the power-off", step=ctx.step
            )
        off_at = data.get("powered_off_at") or data.get("requested_at") or _now_text()
        if "powered_off_at" not in data:
            ctx.record(powered_off_at=off_at, method=method)
            self._event(
                ctx, "source_powered_off", f"source VM {context.name} powered off ({method})"
            )
        return {"powered_off_at": off_at, "method": method}

    # -- 3 final sync ---------------------------------------------------------------------------

    def final_sync(self, ctx: StepContext) -> dict[str, Any]:
        """Create an incremental job (once) and wait for it through the database."""
        data = ctx.data["final_sync"]
        job_id = data.get("job_id")
        if not job_id:
            try:
                job = jobs_repo.create_job(
                    ctx.workflow.context_id,
                    requested_type="incremental",
                    verify=bool(ctx.params.get("verify_final_sync", True)),
                )
            except ConflictError as exc:
                raise WorkflowError(
                    f"the final sync could not start: {exc}", step=ctx.step
                ) from exc
            ctx.record(job_id=job.id, created_at=_now_text())
            self._event(ctx, "final_sync_started", f"final incremental sync {job.id} requested")
            raise StepWaiting(f"final sync job {job.id} pending")
        job = ReplicationJob.get_or_none(ReplicationJob.id == job_id)
        if job is None:
            ctx.record(job_id=None)
            raise WorkflowError(f"final sync job {job_id} was deleted", step=ctx.step)
        if job.status == JobStatus.COMPLETED.value:
            return {
                "job_id": job.id,
                "bytes": int(job.bytes_done or 0),
                "bytes_total": int(job.bytes_total or 0),
                "sync_type": job.effective_type,
                "finished_at": rfc3339(job.finished_at) if job.finished_at else None,
            }
        if JobStatus(job.status).is_terminal:
            failed = [*data.get("failed_jobs", []), job.id]
            ctx.record(job_id=None, failed_jobs=failed)  # a retry starts a new job
            raise WorkflowError(
                f"final sync job {job.id} {job.status}"
                + (f" ({job.error_class})" if job.error_class else "")
                + (f": {job.error_message}" if job.error_message else ""),
                step=ctx.step,
            )
        raise StepWaiting(f"final sync job {job.id} {job.status} {job.percent:.0f}%")

    # -- 3b snapshot replicas ------------------------------------------------------------------

    def snapshot_replicas(self, ctx: StepContext) -> dict[str, Any]:
        """Snapshot each replica in CloudStack (once; adopted after a crash) once it is detached
        after the final sync — KVM refuses to snapshot a volume of a running VM such as the OMA
        unless ``kvm.snapshot.enabled`` — and before guest conversion or the target VM change
        it: what a rollback
        reverts to, keeping the incremental chain. Each snapshot is recorded with its disk key
        and the change ID its content matches (:mod:`oma.workflows.replica_snapshots`).

        A snapshot CloudStack refuses does not stop the failover (the source is already off):
        the refusal is recorded and shown, and a rollback syncs that disk in full."""
        cs, _ = self._cloudstack(ctx)
        fo = ctx.workflow.id
        # a failover created before this step existed may resume here after later steps ran
        changed = replicas_changed_by(fo, ctx.data["validate"].get("boot_disk_key"))
        ctx.record(
            after_guest_conversion=bool(changed) and "*" not in changed,
            after_target_start="*" in changed,
        )
        change_ids = {
            d.disk_key: d.change_id
            for d in VmDisk.select().where(VmDisk.context == ctx.workflow.context_id)
        }
        taken = dict(ctx.data["snapshot_replicas"].get("snapshots") or {})
        refused = dict(ctx.data["snapshot_replicas"].get("refused") or {})
        for rv in replicas(ctx.workflow.context_id):
            if rv.disk_key in taken or rv.disk_key in refused:
                continue
            ctx.renew_lease()
            try:
                snap = take_snapshot(cs, fo, rv)
            except SnapshotNotReady as exc:
                raise StepWaiting(str(exc)) from exc
            except CloudStackUnreachable:
                raise
            except CloudStackError as exc:
                refused[rv.disk_key] = exc.errortext
                ctx.record(refused=refused)
                self._event(
                    ctx,
                    "snapshot_refused",
                    f"CloudStack refused the snapshot of disk {rv.disk_key}'s replica "
                    f"({exc.errortext}); a rollback would sync that disk in full",
                )
                continue
            taken[rv.disk_key] = {
                "snapshot_id": snap["id"],
                "volume_id": rv.cloudstack_volume_id,
                "change_id": change_ids.get(rv.disk_key),
                "taken_at": _now_text(),
            }
            ctx.record(snapshots=taken)
        if taken:
            self._event(
                ctx,
                "replicas_snapshotted",
                "snapshots of the replicas taken for a rollback: "
                + ", ".join(f"disk {k} → {v['snapshot_id']}" for k, v in taken.items()),
            )
        return {"snapshots": taken, "refused": refused}

    # -- 4 guest conversion ---------------------------------------------------------------------

    def guest_conversion(self, ctx: StepContext) -> dict[str, Any]:
        """virt-v2v-in-place on the boot replica, or skipped by config.

        The replicas were detached and snapshotted before: the boot replica is attached to the
        OMA for the conversion (within the attach budget) and detached again afterwards, so
        the snapshot a rollback reverts to predates the conversion."""
        mode = self.s.guest_conversion
        if mode == "skip":
            return {"skipped": True, "reason": "OMA_GUEST_CONVERSION=skip"}
        boot = ctx.data["validate"]["boot_disk_key"]
        rv = next((r for r in replicas(ctx.workflow.context_id) if r.disk_key == boot), None)
        if rv is None:
            raise WorkflowError(f"the boot replica (disk {boot}) is gone", step=ctx.step)
        tool = shutil.which("virt-v2v-in-place")
        if tool is None:
            raise WorkflowError(
                "virt-v2v-in-place is not installed; install virt-v2v or set "
                "OMA_GUEST_CONVERSION=skip",
                step=ctx.step,
            )
        cs, target = self._cloudstack(ctx)
        device = attach_to_oma(self.s, cs, target, rv, renew=ctx.renew_lease)
        ctx.renew_lease()
        try:
            res = subprocess.run(
                [tool, "-i", "disk", device],
                capture_output=True,
                text=True,
                timeout=self.s.conversion_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise WorkflowError(
                f"virt-v2v-in-place did not finish in {self.s.conversion_timeout:.0f} s",
                step=ctx.step,
            ) from exc
        finally:
            detach_from_oma(self.s.exports, cs, target, rv, reason="after guest conversion")
        if res.returncode != 0:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise WorkflowError(
                f"virt-v2v-in-place failed with exit code {res.returncode}: {tail}",
                step=ctx.step,
            )
        return {"skipped": False, "device": device}

    # -- 5 detach -------------------------------------------------------------------------------

    def detach_replicas(self, ctx: StepContext) -> dict[str, Any]:
        """Stop each replica's export and detach it from the OMA VM (rows updated)."""
        cs, target = self._cloudstack(ctx)
        own_vm = self._later(ctx, "deploy_target").get("vm_id")
        detached: list[str] = []
        for rv in replicas(ctx.workflow.context_id):
            ctx.renew_lease()
            vol = cs.get_volume(rv.cloudstack_volume_id)
            if vol is None:
                raise WorkflowError(
                    f"replica volume {rv.cloudstack_volume_id} of disk {rv.disk_key} vanished",
                    step=ctx.step,
                )
            vm = vol.get("virtualmachineid")
            if vm and vm not in (target.oma_vm_id, own_vm):
                raise WorkflowError(
                    f"replica volume {rv.cloudstack_volume_id} of disk {rv.disk_key} is attached "
                    f"to VM {vm}, neither the OMA nor this failover's VM",
                    step=ctx.step,
                )
            on_target = bool(vm) and vm == own_vm  # a resumed failover moved it already
            if not on_target and detach_from_oma(
                self.s.exports, cs, target, rv, reason="for the failover"
            ):
                detached.append(rv.disk_key)
        if detached:
            self._event(
                ctx, "replicas_detached", f"detached disk(s) {', '.join(detached)} from the OMA"
            )
        return {"detached": detached}

    # -- 6 deploy ------------------------------------------------------------------------------

    def deploy_target(self, ctx: StepContext) -> dict[str, Any]:
        """Deploy the VM stopped, swap its root for the boot replica, attach the others."""
        v = ctx.data["validate"]
        cs, target = self._cloudstack(ctx)
        data = ctx.data["deploy_target"]
        vm_id = data.get("vm_id")
        if not vm_id:
            found = cs.list_vms(name=v["vm_name"])  # deployed just before a crash: adopt it
            if found:
                vm_id = found[0]["id"]
            else:
                ctx.renew_lease()
                vm_id = deploy_stopped(cs, target, v)["id"]
            ctx.record(vm_id=vm_id, deployed_at=_now_text())
            self._event(ctx, "target_deployed", f"deployed VM {v['vm_name']} ({vm_id}) stopped")
        vm = cs.get_vm(vm_id)
        if vm is None or is_removed(vm):
            ctx.record(vm_id=None)
            raise WorkflowError(f"target VM {vm_id} vanished", step=ctx.step)
        if vm.get("state") == "Running":
            cs.stop_vm(vm_id, forced=True)
        ours = replicas(ctx.workflow.context_id)
        ids = {rv.cloudstack_volume_id for rv in ours}
        boot = next(rv for rv in ours if rv.disk_key == v["boot_disk_key"])
        removed = list(data.get("template_root_removed", []))
        on_vm = cs.list_volumes(vm_id=vm_id)
        if not on_vm and not data.get("root_swap_started"):
            # adopted right after a crash: its deploy job has not created the root volume yet
            raise StepWaiting(f"target VM {vm_id} is still being deployed")
        ctx.record(root_swap_started=True)
        for vol in on_vm:
            if vol.get("type") == "ROOT" and vol["id"] not in ids:
                ctx.renew_lease()
                cs.detach_volume(vol["id"])
                cs.delete_volume(vol["id"], missing_ok=True)
                removed.append(vol["id"])
                ctx.record(template_root_removed=removed)
        devices: dict[str, int | None] = {}
        for rv in [boot, *[r for r in ours if r is not boot]]:
            ctx.renew_lease()
            vol = cs.get_volume(rv.cloudstack_volume_id)
            if vol is None:
                raise WorkflowError(
                    f"replica volume {rv.cloudstack_volume_id} vanished", step=ctx.step
                )
            if vol.get("virtualmachineid") != vm_id:
                if vol.get("virtualmachineid"):
                    raise WorkflowError(
                        f"replica volume {rv.cloudstack_volume_id} is attached to VM "
                        f"{vol['virtualmachineid']}",
                        step=ctx.step,
                    )
                vol = cs.attach_volume(
                    rv.cloudstack_volume_id, vm_id, device_id=0 if rv is boot else None
                )
            rv.attached_vm_id, rv.device_id = vm_id, vol.get("deviceid")
            rv.device_path, rv.state, rv.updated_at = None, TARGET_STATE, utcnow()
            rv.save()
            devices[rv.disk_key] = vol.get("deviceid")
        self._event(
            ctx,
            "target_volumes_attached",
            f"replicas attached to {v['vm_name']}: "
            + ", ".join(f"disk {k} → device {d}" for k, d in devices.items()),
        )
        return {"vm_id": vm_id, "devices": devices, "template_root_removed": removed}

    # -- 7 start -------------------------------------------------------------------------------

    def start_target(self, ctx: StepContext) -> dict[str, Any]:
        """Start the target VM and confirm it is Running (downtime ends)."""
        cs, _ = self._cloudstack(ctx)
        vm_id = ctx.data["deploy_target"]["vm_id"]
        vm = cs.get_vm(vm_id)
        if vm is None or is_removed(vm):
            raise WorkflowError(f"target VM {vm_id} vanished", step=ctx.step)
        if vm.get("state") != "Running":
            ctx.renew_lease()
            cs.start_vm(vm_id)
            vm = cs.get_vm(vm_id) or {}
        if vm.get("state") != "Running":
            raise WorkflowError(
                f"target VM {vm_id} is {vm.get('state')} after start, not Running", step=ctx.step
            )
        running_at = ctx.data["start_target"].get("running_at") or _now_text()
        ctx.record(running_at=running_at)
        return {"running_at": running_at, "state": vm.get("state")}

    # -- 8 finalize ----------------------------------------------------------------------------

    def finalize(self, ctx: StepContext) -> dict[str, Any]:
        """Context → failed_over_live; record downtime and the final sync's bytes."""
        off = ctx.data["power_off_source"].get("powered_off_at")
        on = ctx.data["start_target"].get("running_at")
        sync = ctx.data["final_sync"]
        result = {
            "target_vm_id": ctx.data["deploy_target"]["vm_id"],
            "target_vm_name": ctx.data["validate"]["vm_name"],
            "source_powered_off_at": off,
            "target_running_at": on,
            "downtime_seconds": seconds_between(off, on),
            "final_sync_job_id": sync.get("job_id"),
            "final_sync_bytes": sync.get("bytes"),
            "devices": ctx.data["deploy_target"].get("devices"),
        }
        now = utcnow()
        with q.write_transaction():
            VmContext.update(
                state=ContextState.FAILED_OVER_LIVE.value, ready_for_failover=False, updated_at=now
            ).where(VmContext.id == ctx.workflow.context_id).execute()
            Workflow.update(result=result, updated_at=now).where(
                Workflow.id == ctx.workflow.id
            ).execute()
            self._event(
                ctx,
                "failed_over_live",
                f"live failover completed: VM {result['target_vm_name']} running, downtime "
                f"{result['downtime_seconds']} s, final sync {result['final_sync_bytes']} bytes",
                **{k: result[k] for k in ("target_vm_id", "downtime_seconds", "final_sync_bytes")},
            )
        log.info("live failover completed", failover_id=ctx.workflow.id, **result)
        return result

    # -- failure --------------------------------------------------------------------------------

    def on_failure(self, ctx: StepContext, exc: BaseException) -> None:
        """Record the failure on the context's timeline (the workflow row holds the error)."""
        self._event(ctx, "failover_failed", f"live failover failed at {ctx.step}: {exc}")
