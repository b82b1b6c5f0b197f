"""Test failover: boot copies of the replicas as ``<vm>-test`` while the source keeps running.

A test failover (a ``failover_test`` workflow) never touches the source VM, and the replicas
only for a moment: it boots *copies* of them, so syncs (scheduled or manual) keep updating the
replicas while the test VM runs. Steps (each idempotent, each re-checking CloudStack and
recording what it created at once, so a killed worker resumes without duplicating anything;
no unwinding — a failed test is ended, and the end removes whatever exists):

1. ``validate``          — the VM has a completed sync of every disk and a replica volume per
   disk, no failover, rollback, cleanup or other test at work; the target VM is planned like a
   live failover's (:func:`oma.workflows.failover.live.plan_target`: offering, one NIC per
   source NIC on its mapped — by default isolated — network, template, boot disk, firmware)
   under the name ``<vm>-test`` (a live VM of that name refuses the test; a Destroyed one moves
   it to ``<vm>-test-2``). The context becomes ``failed_over_test``.
2. ``snapshot_replicas`` — waits until no replication job of the VM is at work (the snapshots
   hold a completed sync, never a half-written one), detaches the idle replicas from the OMA
   VM (a KVM zone refuses snapshots of volumes attached to a running VM unless
   ``kvm.snapshot.enabled``: ``SnapshotManagerImpl.hostSupportsSnapsthotForVolume``; the next
   sync attaches them again) and takes a CloudStack snapshot of each.
3. ``create_volumes``    — one volume per snapshot (``createVolume`` with ``snapshotid``: the
   snapshot's size and disk offering, its content).
4. ``deploy_test_vm``    — deploys the VM stopped from the template, swaps its root volume for
   the boot disk's copy (device 0) and attaches the other copies in disk-key order.
5. ``start_test_vm``     — starts it and confirms ``Running``.
6. ``finalize``          — the result: test VM, volumes, snapshots, when it started and, with
   ``auto_end_after``, when it ends by itself.

Ending (a ``failover_test_end`` workflow, ``POST /vm-contexts/{id}/test-failover/end`` or
:func:`end_due_tests` when ``auto_end_after`` has passed): ``remove_test_vm`` (stop, detach the
copies — CloudStack keeps a Destroyed VM's volumes attached until it is expunged — destroy,
expunged when the API key may), ``delete_volumes``, ``delete_snapshots`` and ``finish`` (the
context → ``ready_for_failover``, or ``replicating`` while a sync runs; the test → ``ended``).
Nothing the test created is left in CloudStack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from migration_common import get_logger, rfc3339, utcnow

from ...cloudstack.client import is_removed
from ...database.models import (
    ACTIVE_JOB_STATUSES,
    CloudStackTarget,
    ContextState,
    ReplicationJob,
    VmContext,
    Workflow,
)
from ...errors import ConflictError, InvalidStateError, NotFoundError, WorkflowError
from ...services import _queries as q
from ..engine import Definition, Step, StepContext, StepWaiting
from ..records import ACTIVE, active_workflow, describe, lock_context, step_data, step_status
from ..replicas import detach_from_oma, disk_order
from ..replicas import live_replicas as replicas
from .live import (
    FailoverInvalid,
    FailoverServices,
    check_replicas,
    deploy_stopped,
    plan_target,
    target_of,
)
from .store import (
    ENDED,
    FAILOVER_STEPS,
    KIND,
    TEST_END_KIND,
    TEST_END_STEPS,
    TEST_KIND,
    TEST_STEPS,
    _insert,
    _reopen,
    seconds_between,
)
from .target_vm import HOST_NAME_MAX, vm_name_for

log = get_logger(__name__)

TEST_SUFFIX = "-test"
AUTO_END_MIN_S = 1
AUTO_END_MAX_S = 30 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Seconds from an integer or a duration string (``90``, ``"90s"``, ``"30m"``, ``"2h"``,
    ``"1h30m"``, ``"1d"``); ValueError for anything else or outside 1 s … 30 days."""
    if isinstance(value, bool):
        raise ValueError("must be seconds or a duration such as 30m, 2h or 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and re.fullmatch(r"(\d+[smhd])+", value.strip().lower()):
        parts = re.findall(r"(\d+)([smhd])", value.strip().lower())
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError("must be seconds or a duration such as 30m, 2h or 1h30m")
    if not AUTO_END_MIN_S <= seconds <= AUTO_END_MAX_S:
        raise ValueError("must be between 1 second and 30 days")
    return seconds


def test_vm_name(source_name: str) -> str:
    """``<host name of the source>-test``, within CloudStack's 63-character host name rule."""
    base = vm_name_for(source_name)[: HOST_NAME_MAX - len(TEST_SUFFIX)].rstrip("-")
    return base + TEST_SUFFIX


def _resource_name(test_id: str, vm_name: str, disk_key: str) -> str:
    """The name of a test's snapshot and volume of one disk (found again after a crash)."""
    return f"{vm_name}-{disk_key}-{test_id[:8]}"


def _now_text() -> str:
    return rfc3339(utcnow())


# -- records ------------------------------------------------------------------------------------


def latest_test(context_id: str) -> Workflow | None:
    """The context's newest test failover (any status), or None."""
    return (
        Workflow.select()
        .where(Workflow.context == context_id, Workflow.kind == TEST_KIND)
        .order_by(Workflow.created_at.desc())
        .first()
    )


def get_test(test_id: str) -> Workflow:
    """The test failover with this id, or NotFoundError."""
    wf = Workflow.get_or_none(Workflow.id == test_id, Workflow.kind == TEST_KIND)
    if wf is None:
        raise NotFoundError(f"test failover {test_id} not found", kind="test failover", id=test_id)
    return wf


def list_tests(context_id: str) -> list[Workflow]:
    """A context's test failovers, newest first."""
    return list(
        Workflow.select()
        .where(Workflow.context == context_id, Workflow.kind == TEST_KIND)
        .order_by(Workflow.created_at.desc())
    )


def end_of(test_id: str) -> Workflow | None:
    """The newest end workflow of a test failover, or None."""
    rows = (
        Workflow.select().where(Workflow.kind == TEST_END_KIND).order_by(Workflow.created_at.desc())
    )
    return next((r for r in rows if (r.params or {}).get("test_id") == test_id), None)


def start_test(context_id: str, params: Mapping[str, Any]) -> Workflow:
    """Create a test failover of a context (the worker runs it).

    ConflictError while a failover, rollback, cleanup or test workflow of the context is at
    work, or while a test failover is in place (end it first); InvalidStateError when the VM
    has no completed sync to test or is failed over live.
    """
    with q.write_transaction():
        ctx = lock_context(context_id)
        active = active_workflow(context_id)
        if active is not None:
            raise ConflictError(
                f"VM context {context_id} already has an active {describe(active)} ({active.id})",
                field="vm_context_id",
            )
        if ctx.state == ContextState.FAILED_OVER_TEST.value:
            last = latest_test(context_id)
            raise ConflictError(
                f"VM context {context_id} already has a test failover in place"
                + (f" ({last.id})" if last else "")
                + "; end it first (POST /api/v1/vm-contexts/{id}/test-failover/end)",
                field="vm_context_id",
            )
        if ctx.state == ContextState.FAILED_OVER_LIVE.value:
            raise InvalidStateError(f"VM context {context_id} is failed over live; nothing to test")
        testable = ctx.state == ContextState.READY_FOR_FAILOVER.value or (
            ctx.state == ContextState.REPLICATING.value and ctx.last_success_at is not None
        )
        if not testable:
            raise InvalidStateError(
                f"VM context {context_id} is {ctx.state} without a completed sync; "
                "complete a replication first"
            )
        wf = _insert(TEST_KIND, context_id, dict(params), TEST_STEPS)
        q.append_event(None, context_id, "test_failover_requested", f"test failover {wf.id}")
        return wf


def _in_place(context_id: str) -> Workflow:
    """The context's test failover that an end removes (ConflictError when there is none)."""
    ctx = lock_context(context_id)
    last = latest_test(context_id)
    if ctx.state != ContextState.FAILED_OVER_TEST.value or last is None:
        raise ConflictError(
            f"VM context {context_id} has no test failover in place (it is {ctx.state})",
            field="vm_context_id",
        )
    return last


def _insert_end(test: Workflow, why: str) -> Workflow:
    wf = _insert(
        TEST_END_KIND, test.context_id, {"test_id": test.id, "reason": why}, TEST_END_STEPS
    )
    q.append_event(
        None,
        test.context_id,
        "test_failover_end_requested",
        f"end of test failover {test.id} ({why})",
    )
    return wf


def end_test(context_id: str, *, why: str = "requested") -> Workflow:
    """Create the end of the context's test failover (or resume its failed end).

    ConflictError when no test is in place, or while the test is still starting or another
    failover-like workflow of the context is at work.
    """
    with q.write_transaction():
        test = _in_place(context_id)
        active = active_workflow(context_id)
        if active is not None and active.kind == TEST_KIND:
            raise ConflictError(
                f"test failover {active.id} is still starting; end it once it is running or "
                "has failed",
                field="vm_context_id",
            )
        if active is not None:
            raise ConflictError(
                f"VM context {context_id} already has an active {describe(active)} ({active.id})",
                field="vm_context_id",
            )
        old = end_of(test.id)
        if old is not None and old.status == "failed":
            _reopen(old)
            q.append_event(None, context_id, "test_failover_end_resumed", f"end {old.id} resumed")
            return Workflow.get_by_id(old.id)
        return _insert_end(test, why)


def failover_after_test_end(
    context_id: str, params: Mapping[str, Any]
) -> tuple[Workflow, Workflow]:
    """A live failover asked with ``end_test``: the end of the test in place and the live
    failover, created together; the failover's ``validate`` waits for the end."""
    with q.write_transaction():
        test = _in_place(context_id)
        active = active_workflow(context_id)
        if active is not None:
            raise ConflictError(
                f"VM context {context_id} already has an active {describe(active)} ({active.id})",
                field="vm_context_id",
            )
        end = _insert_end(test, "ended for a live failover")
        wf = _insert(KIND, context_id, dict(params), FAILOVER_STEPS)
        q.append_event(
            None,
            context_id,
            "failover_requested",
            f"live failover {wf.id} requested after the test",
        )
        return end, wf


def auto_end_at(test: Workflow) -> datetime | None:
    """When a test failover with ``auto_end_after`` ends by itself: that long after its VM
    started (after the test was created when it never started)."""
    after = (test.params or {}).get("auto_end_after")
    if not after:
        return None
    running = step_data(test.id, "start_test_vm").get("running_at")
    start = datetime.fromisoformat(running) if running else test.created_at
    return start + timedelta(seconds=int(after))


def end_due_tests(now: datetime | None = None) -> int:
    """Create the end of every test failover whose ``auto_end_after`` has passed (called by
    the workflow runner each tick; crash safe: the end is a database row created once, under
    the context lock, and a worker that was down ends an overdue test at its next tick)."""
    now = now or utcnow()
    created = 0
    for test in Workflow.select().where(
        Workflow.kind == TEST_KIND, Workflow.status.in_(["done", "failed"])
    ):
        due = auto_end_at(test)
        if due is None or due > now:
            continue
        ctx = VmContext.get_or_none(VmContext.id == test.context_id)
        if ctx is None or ctx.state != ContextState.FAILED_OVER_TEST.value:
            continue
        if latest_test(test.context_id).id != test.id or end_of(test.id) is not None:
            continue
        try:
            end_test(test.context_id, why=f"auto_end_after {test.params['auto_end_after']} s")
        except ConflictError as exc:  # e.g. a cleanup is at work: try again next tick
            log.info("test failover not ended yet", test_id=test.id, reason=str(exc))
            continue
        created += 1
    return created


# -- the test failover --------------------------------------------------------------------------


class _Base:
    """What both test workflows share: services, CloudStack, events."""

    def __init__(self, services: FailoverServices) -> None:
        self.s = services

    def _target(self, test_id: str, context_id: str) -> CloudStackTarget:
        tid = step_data(test_id, "validate").get("target_id")
        row = CloudStackTarget.get_or_none(CloudStackTarget.id == tid) if tid else None
        return row or target_of(VmContext.get_by_id(context_id))

    def _event(self, ctx: StepContext, kind: str, message: str, test_id: str) -> None:
        q.append_event(
            None,
            ctx.workflow.context_id,
            kind,
            message,
            data={"test_failover_id": test_id, "workflow_id": ctx.workflow.id},
        )


class TestFailoverWorkflow(_Base):
    """Builds the test failover :class:`Definition` bound to a worker's services."""

    __test__ = False  # not a pytest class

    def __init__(self, services: FailoverServices) -> None:
        super().__init__(services)
        steps = {
            "validate": self.validate,
            "snapshot_replicas": self.snapshot_replicas,
            "create_volumes": self.create_volumes,
            "deploy_test_vm": self.deploy_test_vm,
            "start_test_vm": self.start_test_vm,
            "finalize": self.finalize,
        }
        self.definition = Definition(
            TEST_KIND,
            [Step(name, steps[name]) for name in TEST_STEPS],
            on_failure=self.on_failure,
            unwind=False,
        )

    def _cs(self, ctx: StepContext) -> tuple[Any, CloudStackTarget]:
        target = CloudStackTarget.get_by_id(ctx.data["validate"]["target_id"])
        return self.s.cloudstack_for(target), target

    def _later(self, ctx: StepContext, name: str) -> dict[str, Any]:
        return ctx.data.get(name) or step_data(ctx.workflow.id, name)

    # -- 1 validate -----------------------------------------------------------------------------

    def validate(self, ctx: StepContext) -> dict[str, Any]:
        """A completed sync of every disk, a replica per disk; the test VM's plan; the context
        → failed_over_test."""
        context = VmContext.get_by_id(ctx.workflow.context_id)
        ours = context.state == ContextState.FAILED_OVER_TEST.value and (
            latest_test(context.id).id == ctx.workflow.id
        )
        testable = context.state == ContextState.READY_FOR_FAILOVER.value or (
            context.state == ContextState.REPLICATING.value and context.last_success_at is not None
        )
        if not (ours or testable):
            raise FailoverInvalid(
                f"VM context {context.name} is {context.state}; a test failover needs a "
                "completed sync",
                step="validate",
            )
        check_replicas(context)
        own_vm = self._later(ctx, "deploy_test_vm").get("vm_id")
        plan = plan_target(
            self.s, context, ctx.params, derived_name=test_vm_name(context.name), own_vm=own_vm
        )
        with q.write_transaction():
            VmContext.update(state=ContextState.FAILED_OVER_TEST.value, updated_at=utcnow()).where(
                VmContext.id == context.id
            ).execute()
        return plan

    # -- 2 snapshots ----------------------------------------------------------------------------

    def snapshot_replicas(self, ctx: StepContext) -> dict[str, Any]:
        """Wait for the VM's sync to finish, detach the idle replicas, snapshot each."""
        cs, target = self._cs(ctx)
        wf = ctx.workflow
        vm_name = ctx.data["validate"]["vm_name"]
        context = VmContext.get_by_id(wf.context_id)
        if context.active_job_id:
            raise StepWaiting(
                f"waiting for replication job {context.active_job_id} to finish: the snapshots "
                "hold a completed sync"
            )
        taken: dict[str, str] = dict(ctx.data["snapshot_replicas"].get("snapshots") or {})
        for rv in replicas(wf.context_id):
            if rv.disk_key in taken:
                continue
            ctx.renew_lease()
            detach_from_oma(self.s.exports, cs, target, rv, reason="for the test failover")
            name = _resource_name(wf.id, vm_name, rv.disk_key)
            snap = next(
                (s for s in cs.list_snapshots(rv.cloudstack_volume_id) if s.get("name") == name),
                None,
            )  # taken just before a crash: adopt it
            if snap is None:
                snap = cs.create_snapshot(rv.cloudstack_volume_id, name=name)
            elif snap.get("state") != "BackedUp":
                raise StepWaiting(
                    f"snapshot {snap['id']} of disk {rv.disk_key} is {snap.get('state')}"
                )
            taken[rv.disk_key] = snap["id"]
            ctx.record(snapshots=taken)
        if (
            ReplicationJob.select()
            .where(  # a sync that started meanwhile: take them again
                ReplicationJob.context == wf.context_id,
                ReplicationJob.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
                ReplicationJob.status != "pending",
            )
            .exists()
        ):
            for snap_id in taken.values():
                cs.delete_snapshot(snap_id)
            ctx.record(snapshots={})
            raise StepWaiting("a sync started while the snapshots were taken; taking them again")
        self._event(
            ctx,
            "test_snapshots_taken",
            "snapshots for the test failover: "
            + ", ".join(f"disk {k} → {v}" for k, v in sorted(taken.items())),
            wf.id,
        )
        return {"snapshots": taken}

    # -- 3 volumes ------------------------------------------------------------------------------

    def create_volumes(self, ctx: StepContext) -> dict[str, Any]:
        """One volume per snapshot (the snapshot's size, offering and content)."""
        cs, target = self._cs(ctx)
        wf = ctx.workflow
        vm_name = ctx.data["validate"]["vm_name"]
        snaps: dict[str, str] = ctx.data["snapshot_replicas"]["snapshots"]
        made: dict[str, str] = dict(ctx.data["create_volumes"].get("volumes") or {})
        for key in sorted(snaps, key=disk_order):
            if key in made:
                continue
            ctx.renew_lease()
            name = _resource_name(wf.id, vm_name, key)
            found = cs.list_volumes(name=name)  # created just before a crash: adopt it
            if found and found[0].get("state") not in ("Ready", "Allocated"):
                raise StepWaiting(
                    f"volume {found[0]['id']} of disk {key} is {found[0].get('state')}"
                )
            vol = found[0] if found else None
            if vol is None:
                vol = cs.create_volume_from_snapshot(
                    name, snapshot_id=snaps[key], zone_id=target.zone_id
                )
            made[key] = vol["id"]
            ctx.record(volumes=made)
        return {"volumes": made}

    # -- 4 deploy -------------------------------------------------------------------------------

    def deploy_test_vm(self, ctx: StepContext) -> dict[str, Any]:
        """Deploy the test VM stopped, swap its root for the boot copy, attach the others."""
        v = ctx.data["validate"]
        cs, target = self._cs(ctx)
        data = ctx.data["deploy_test_vm"]
        vols: dict[str, str] = ctx.data["create_volumes"]["volumes"]
        vm_id = data.get("vm_id")
        if not vm_id:
            found = cs.list_vms(name=v["vm_name"])  # deployed just before a crash: adopt it
            vm_id = found[0]["id"] if found else deploy_stopped(cs, target, v)["id"]
            ctx.record(vm_id=vm_id, deployed_at=_now_text())
            self._event(
                ctx,
                "test_vm_deployed",
                f"deployed test VM {v['vm_name']} ({vm_id}) stopped",
                ctx.workflow.id,
            )
        vm = cs.get_vm(vm_id)
        if vm is None or is_removed(vm):
            ctx.record(vm_id=None)
            raise WorkflowError(f"test VM {vm_id} vanished", step=ctx.step)
        if vm.get("state") == "Running":
            cs.stop_vm(vm_id, forced=True)
        on_vm = cs.list_volumes(vm_id=vm_id)
        if not on_vm and not data.get("root_swap_started"):
            raise StepWaiting(f"test VM {vm_id} is still being deployed")
        ctx.record(root_swap_started=True)
        ours = set(vols.values())
        removed = list(data.get("template_root_removed", []))
        for vol in on_vm:
            if vol.get("type") == "ROOT" and vol["id"] not in ours:
                ctx.renew_lease()
                cs.detach_volume(vol["id"])
                cs.delete_volume(vol["id"], missing_ok=True)
                removed.append(vol["id"])
                ctx.record(template_root_removed=removed)
        boot = v["boot_disk_key"]
        devices: dict[str, int | None] = {}
        for key in [boot, *sorted((k for k in vols if k != boot), key=disk_order)]:
            ctx.renew_lease()
            vol = cs.get_volume(vols[key])
            if vol is None:
                raise WorkflowError(
                    f"test volume {vols[key]} of disk {key} vanished", step=ctx.step
                )
            if vol.get("virtualmachineid") != vm_id:
                vol = cs.attach_volume(vols[key], vm_id, device_id=0 if key == boot else None)
            devices[key] = vol.get("deviceid")
        return {"vm_id": vm_id, "devices": devices, "template_root_removed": removed}

    # -- 5 start --------------------------------------------------------------------------------

    def start_test_vm(self, ctx: StepContext) -> dict[str, Any]:
        """Start the test VM and confirm it is Running."""
        cs, _ = self._cs(ctx)
        vm_id = ctx.data["deploy_test_vm"]["vm_id"]
        vm = cs.get_vm(vm_id)
        if vm is None or is_removed(vm):
            raise WorkflowError(f"test VM {vm_id} vanished", step=ctx.step)
        if vm.get("state") != "Running":
            ctx.renew_lease()
            vm = cs.start_vm(vm_id)
        if vm.get("state") != "Running":
            raise WorkflowError(
                f"test VM {vm_id} is {vm.get('state')} after start, not Running", step=ctx.step
            )
        running_at = ctx.data["start_test_vm"].get("running_at") or _now_text()
        ctx.record(running_at=running_at)
        return {"running_at": running_at, "state": vm.get("state")}

    # -- 6 finalize -----------------------------------------------------------------------------

    def finalize(self, ctx: StepContext) -> dict[str, Any]:
        """Record the test's result (VM, copies, snapshots, auto end) on the workflow."""
        wf = ctx.workflow
        running_at = ctx.data["start_test_vm"]["running_at"]
        after = ctx.params.get("auto_end_after")
        result = {
            "test_vm_id": ctx.data["deploy_test_vm"]["vm_id"],
            "test_vm_name": ctx.data["validate"]["vm_name"],
            "network_ids": ctx.data["validate"]["network_ids"],
            "volumes": ctx.data["create_volumes"]["volumes"],
            "snapshots": ctx.data["snapshot_replicas"]["snapshots"],
            "devices": ctx.data["deploy_test_vm"].get("devices"),
            "running_at": running_at,
            "start_seconds": seconds_between(rfc3339(wf.created_at), running_at),
            "auto_end_at": (
                rfc3339(datetime.fromisoformat(running_at) + timedelta(seconds=int(after)))
                if after
                else None
            ),
        }
        now = utcnow()
        with q.write_transaction():
            Workflow.update(result=result, updated_at=now).where(Workflow.id == wf.id).execute()
            self._event(
                ctx,
                "failed_over_test",
                f"test failover running: VM {result['test_vm_name']} on copies of the replicas"
                + (f", ends by itself at {result['auto_end_at']}" if after else ""),
                wf.id,
            )
        log.info("test failover running", test_id=wf.id, vm=result["test_vm_name"])
        return result

    def on_failure(self, ctx: StepContext, exc: BaseException) -> None:
        """Record the failure on the context's timeline (end the test to clean up)."""
        self._event(
            ctx,
            "test_failover_failed",
            f"test failover failed at {ctx.step}: {exc}; end it to remove what it created",
            ctx.workflow.id,
        )


# -- the end ------------------------------------------------------------------------------------


class TestEndWorkflow(_Base):
    """Builds the :class:`Definition` that ends a test failover."""

    __test__ = False  # not a pytest class

    def __init__(self, services: FailoverServices) -> None:
        super().__init__(services)
        steps = {
            "remove_test_vm": self.remove_test_vm,
            "delete_volumes": self.delete_volumes,
            "delete_snapshots": self.delete_snapshots,
            "finish": self.finish,
        }
        self.definition = Definition(
            TEST_END_KIND,
            [Step(name, steps[name]) for name in TEST_END_STEPS],
            on_failure=self.on_failure,
            unwind=False,
        )

    def _test_id(self, ctx: StepContext) -> str:
        return str(ctx.params["test_id"])

    def _cs(self, ctx: StepContext) -> Any:
        return self.s.cloudstack_for(self._target(self._test_id(ctx), ctx.workflow.context_id))

    def _names(self, test_id: str) -> dict[str, str]:
        """Disk key → the name of that disk's snapshot and volume (none before validate)."""
        vm_name = step_data(test_id, "validate").get("vm_name")
        if not vm_name:
            return {}
        return {
            rv.disk_key: _resource_name(test_id, vm_name, rv.disk_key)
            for rv in replicas(Workflow.get_by_id(test_id).context_id)
        }

    def _volumes(self, cs: Any, test_id: str) -> dict[str, str]:
        """The test's volumes: recorded, or found by name (created just before a crash)."""
        found = dict(step_data(test_id, "create_volumes").get("volumes") or {})
        if step_status(test_id, "create_volumes") in (None, "pending"):
            return found
        for key, name in self._names(test_id).items():
            if key not in found:
                hits = cs.list_volumes(name=name)
                if hits:
                    found[key] = hits[0]["id"]
        return found

    def remove_test_vm(self, ctx: StepContext) -> dict[str, Any]:
        """Stop the test VM, detach its copies, destroy it (expunged when allowed)."""
        cs = self._cs(ctx)
        test_id = self._test_id(ctx)
        vm_id = step_data(test_id, "deploy_test_vm").get("vm_id")
        name = step_data(test_id, "validate").get("vm_name")
        if not vm_id and name and step_status(test_id, "deploy_test_vm") not in (None, "pending"):
            found = cs.list_vms(name=name)  # deployed just before a crash, never recorded
            vm_id = found[0]["id"] if found else None
        if not vm_id:
            return {"vm_id": None, "destroyed": False}
        vm = cs.get_vm(vm_id)
        if vm is None:
            return {"vm_id": vm_id, "destroyed": True, "expunged": True}
        if vm.get("state") == "Expunging":
            raise StepWaiting(f"test VM {vm_id} is being expunged")
        if vm.get("state") in ("Running", "Starting", "Stopping"):
            ctx.renew_lease()
            cs.stop_vm(vm_id, forced=True)
        ours = set(self._volumes(cs, test_id).values())
        detached = []
        for vol in cs.list_volumes(vm_id=vm_id):
            if vol["id"] in ours:
                ctx.renew_lease()
                cs.detach_volume(vol["id"])
                detached.append(vol["id"])
        expunged = vm.get("state") != "Destroyed"
        if not is_removed(vm):
            ctx.renew_lease()
            expunged = bool(cs.destroy_vm(vm_id, expunge=True).get("expunged", True))
        self._event(
            ctx,
            "test_vm_destroyed",
            f"destroyed test VM {vm_id}"
            + ("" if expunged else " (not expunged: the API key may not expunge)"),
            test_id,
        )
        return {"vm_id": vm_id, "destroyed": True, "expunged": expunged, "detached": detached}

    def delete_volumes(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the test's volumes (detached from the test VM by the step before)."""
        cs = self._cs(ctx)
        test_id = self._test_id(ctx)
        vm_id = ctx.data["remove_test_vm"].get("vm_id")
        deleted = []
        for key, vol_id in sorted(self._volumes(cs, test_id).items()):
            vol = cs.get_volume(vol_id)
            if vol is None:
                continue
            on = vol.get("virtualmachineid")
            if on and on != vm_id:
                raise WorkflowError(
                    f"test volume {vol_id} of disk {key} is attached to VM {on}, not the test VM",
                    step=ctx.step,
                )
            if on:
                cs.detach_volume(vol_id)
            ctx.renew_lease()
            cs.delete_volume(vol_id, missing_ok=True)
            deleted.append(vol_id)
        return {"deleted": deleted}

    def delete_snapshots(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the snapshots the test took of the replicas: those recorded, and those found
        by name on the replicas (taken just before a crash)."""
        cs = self._cs(ctx)
        test_id = self._test_id(ctx)
        found = {
            snap_id: cs.get_snapshot(snap_id)
            for snap_id in (step_data(test_id, "snapshot_replicas").get("snapshots") or {}).values()
        }
        names = self._names(test_id)
        for rv in replicas(ctx.workflow.context_id):
            if rv.disk_key in names and rv.cloudstack_volume_id:
                for snap in cs.list_snapshots(rv.cloudstack_volume_id):
                    if snap.get("name") == names[rv.disk_key]:
                        found[snap["id"]] = snap
        deleted = []
        for snap_id, snap in sorted(found.items()):
            if snap is None:  # deleted already
                continue
            ctx.renew_lease()
            cs.delete_snapshot(snap_id)
            deleted.append(snap_id)
        return {"deleted": deleted}

    def finish(self, ctx: StepContext) -> dict[str, Any]:
        """Context → ready_for_failover (replicating while a sync runs); the test → ended."""
        test_id = self._test_id(ctx)
        now = utcnow()
        with q.write_transaction():
            context = lock_context(ctx.workflow.context_id)
            if context.active_job_id:
                state, ready = ContextState.REPLICATING, False
            else:
                state, ready = ContextState.READY_FOR_FAILOVER, context.last_success_at is not None
            VmContext.update(state=state.value, ready_for_failover=ready, updated_at=now).where(
                VmContext.id == context.id
            ).execute()
            test = Workflow.get_by_id(test_id)
            result = {**(test.result or {}), "ended_at": rfc3339(now), "end_id": ctx.workflow.id}
            Workflow.update(status=ENDED, result=result, updated_at=now).where(
                Workflow.id == test_id, Workflow.status.not_in(ACTIVE)
            ).execute()
            self._event(
                ctx,
                "test_failover_ended",
                f"test failover {test_id} ended: its VM, volumes and snapshots are gone",
                test_id,
            )
        return {"context_state": state.value}

    def on_failure(self, ctx: StepContext, exc: BaseException) -> None:
        """Record the failure on the context's timeline (ending again resumes)."""
        self._event(
            ctx,
            "test_failover_end_failed",
            f"ending the test failover failed at {ctx.step}: {exc}",
            self._test_id(ctx),
        )


__all__ = [
    "TestEndWorkflow",
    "TestFailoverWorkflow",
    "auto_end_at",
    "end_due_tests",
    "end_test",
    "failover_after_test_end",
    "get_test",
    "list_tests",
    "parse_duration",
    "start_test",
    "test_vm_name",
]
