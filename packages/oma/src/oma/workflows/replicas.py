"""Replica volumes on the OMA VM: the one place that attaches, exports, detaches and deletes them.

Replicas attach on demand. A real hypervisor caps the data volumes of one VM (KVM: 32), so the
volumes attached to an OMA VM are a budget (``OMA_ATTACH_BUDGET``): a sync attaches what it
needs; idle replicas (no job, failover, rollback or cleanup of their VM at work) stay attached
while there is room and are detached least-recently-synced first when a sync needs room.

Every attach and detach is booked in the database before CloudStack is asked: under a lock of
the target's row, a replica row goes ``attaching`` (counted against the budget from then on) and
an evicted idle one goes ``detaching``, so two workers never fill the same slot. A crash between
the booking and CloudStack's answer leaves such a row, and :func:`reconcile_attachments` settles
it from CloudStack's view at the next worker start (and once a minute).

Exports follow the attachment: started after the attach (:func:`ensure_export`), stopped before
the detach (:func:`detach_from_oma`). An export admits only the VMA its replica's VM belongs
to: TLS with that VMA's enrolled certificate (:func:`export_client`); a VMA without one gets a
plaintext export only when ``OMA_NBD_ALLOW_PLAINTEXT`` is set, a revoked VMA none at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from migration_common import get_logger, utcnow

from ..database.db import is_sqlite
from ..database.models import (
    CloudStackTarget,
    JobStatus,
    NbdExport,
    ReplicationJob,
    ReplicaVolume,
    VmaAppliance,
    VmContext,
    VmDisk,
    Workflow,
)
from ..errors import WorkflowError
from ..services import _queries as q

log = get_logger(__name__)

ON_OMA = ("attaching", "attached", "detaching")
"""``replica_volumes.state`` values that hold a slot of the OMA VM's attach budget."""
ADMITTED = (JobStatus.PROVISIONING.value, JobStatus.READY.value, JobStatus.REPLICATING.value)
"""Job states that hold their replicas on the OMA (a pending job with a workflow does too)."""


class NoRoom(WorkflowError):
    """The OMA VM's attach budget is used up by replicas that are all busy."""


def disk_order(key: str) -> tuple[int, str]:
    """Sort key of a disk key: numeric order where possible (``2000`` < ``2001`` < ``16000``)."""
    return (len(key), key)


def live_replicas(context_id: str) -> list[ReplicaVolume]:
    """The context's replica volumes that exist (not deleted), in disk-key order."""
    rows = ReplicaVolume.select().where(
        ReplicaVolume.context == context_id, ReplicaVolume.state != "deleted"
    )
    return sorted(rows, key=lambda r: disk_order(r.disk_key))


# -- budget accounting ---------------------------------------------------------------------


def busy_contexts() -> set[str]:
    """Contexts whose replicas are in use: an admitted job, or an active workflow of any kind."""
    admitted = ReplicationJob.select(ReplicationJob.context).where(
        ReplicationJob.status.in_(ADMITTED)
    )
    active = Workflow.select(Workflow.context).where(
        Workflow.status.in_(["pending", "running"]), Workflow.context.is_null(False)
    )
    return {r.context_id for r in admitted} | {r.context_id for r in active}


def _lock_target(target: CloudStackTarget) -> None:
    """Serialise budget bookings of one OMA VM (SQLite: the write transaction already does)."""
    if not is_sqlite():
        CloudStackTarget.select(CloudStackTarget.id).where(
            CloudStackTarget.id == target.id
        ).for_update().execute()


def slots_in_use(oma_vm_id: str) -> int:
    """Replica rows holding a slot of ``oma_vm_id`` (attaching, attached or detaching)."""
    return (
        ReplicaVolume.select()
        .where(ReplicaVolume.attached_vm_id == oma_vm_id, ReplicaVolume.state.in_(ON_OMA))
        .count()
    )


def idle_replicas(oma_vm_id: str, exclude: Iterable[str] = ()) -> list[ReplicaVolume]:
    """Attached replicas nobody uses now, least recently synced first (eviction order)."""
    busy = busy_contexts() | set(exclude)
    rows = [
        rv
        for rv in ReplicaVolume.select().where(
            ReplicaVolume.attached_vm_id == oma_vm_id, ReplicaVolume.state == "attached"
        )
        if rv.context_id not in busy
    ]
    synced: dict[str, Any] = {}
    for disk in VmDisk.select(VmDisk.replica_volume, VmDisk.change_id_at).where(
        VmDisk.replica_volume.in_([rv.id for rv in rows] or [""])
    ):
        synced[disk.replica_volume_id] = disk.change_id_at
    # never synced first (a failed first copy), then the oldest completed sync
    return sorted(
        rows,
        key=lambda rv: (synced.get(rv.id) is not None, synced.get(rv.id) or rv.updated_at),
    )


def foreign_volumes(cs: Any, target: CloudStackTarget) -> int:
    """Data volumes on the OMA VM that are not replicas of this OMA (they use budget too)."""
    on_vm = [v for v in cs.list_volumes(vm_id=target.oma_vm_id) if v.get("type") != "ROOT"]
    ids = [v["id"] for v in on_vm]
    ours = {
        r.cloudstack_volume_id
        for r in ReplicaVolume.select(ReplicaVolume.cloudstack_volume_id).where(
            ReplicaVolume.cloudstack_volume_id.in_(ids)
        )
    }
    return len([i for i in ids if i not in ours])


def _book(
    target: CloudStackTarget, rv: ReplicaVolume, budget: int, foreign: int, busy_context: str
) -> ReplicaVolume | None:
    """Book a slot for ``rv`` (→ ``attaching``); returns an idle replica booked for eviction
    (→ ``detaching``) when that was needed to make room. Raises :class:`NoRoom`."""
    with q.write_transaction():
        _lock_target(target)
        rv = ReplicaVolume.get_by_id(rv.id)
        victim = None
        mine = rv.state in ON_OMA and rv.attached_vm_id == target.oma_vm_id  # a resumed step
        used = slots_in_use(target.oma_vm_id) - int(mine) + foreign
        if used + 1 > budget:
            idle = idle_replicas(target.oma_vm_id, exclude=[busy_context])
            if not idle:
                raise NoRoom(
                    f"the OMA VM {target.oma_vm_id} has {used} of {budget} attachable volumes "
                    f"in use by busy replicas{f' and {foreign} other volumes' if foreign else ''}"
                    " (OMA_ATTACH_BUDGET)",
                    step="attach",
                )
            victim = idle[0]
            victim.state, victim.updated_at = "detaching", utcnow()
            victim.save()
        rv.state, rv.attached_vm_id, rv.updated_at = "attaching", target.oma_vm_id, utcnow()
        rv.save()
    return victim


# -- attach, export, detach, delete ------------------------------------------------------------


def attach_to_oma(
    s: Any,
    cs: Any,
    target: CloudStackTarget,
    rv: ReplicaVolume,
    *,
    job_id: str | None = None,
    renew: Callable[[], None] | None = None,
) -> str:
    """Attach ``rv`` to the OMA VM within the budget (evicting an idle replica when needed),
    wait for its by-id device and record it; returns the device path.

    ``s`` is the worker's services (``exports``, ``by_id_dir``, ``device_timeout``,
    ``wait_for_device``, ``attach_budget``).
    """
    vol = cs.get_volume(rv.cloudstack_volume_id)
    if vol is None:
        raise WorkflowError(
            f"replica volume {rv.cloudstack_volume_id} of disk {rv.disk_key} vanished",
            step="attach",
        )
    vm = vol.get("virtualmachineid")
    if vm and vm != target.oma_vm_id:
        raise WorkflowError(
            f"replica volume {rv.cloudstack_volume_id} of disk {rv.disk_key} is attached to "
            f"VM {vm}, not to the OMA",
            step="attach",
        )
    if not vm:
        victim = _book(target, rv, s.attach_budget, foreign_volumes(cs, target), rv.context_id)
        if victim is not None:
            if renew:
                renew()
            detach_from_oma(
                s.exports, cs, target, victim, reason=f"to make room for disk {rv.disk_key}"
            )
        if renew:
            renew()
        try:
            vol = cs.attach_volume(rv.cloudstack_volume_id, target.oma_vm_id)
        except Exception:
            with contextlib.suppress(Exception):  # reconciliation settles it otherwise
                _settle(cs, target, ReplicaVolume.get_by_id(rv.id))
            raise
        q.append_event(
            job_id,
            rv.context_id,
            "volume_attached",
            f"attached volume {rv.cloudstack_volume_id} (disk {rv.disk_key}) to the OMA",
            data={"volume_id": rv.cloudstack_volume_id},
        )
    wait = s.wait_for_device
    if wait is None:
        from ..cloudstack import wait_for_device as wait
    device = wait(rv.cloudstack_volume_id, s.by_id_dir, timeout=s.device_timeout)
    ReplicaVolume.update(
        attached_vm_id=target.oma_vm_id,
        device_id=vol.get("deviceid"),
        device_path=str(device),
        state="attached",
        updated_at=utcnow(),
    ).where(ReplicaVolume.id == rv.id).execute()
    rv.attached_vm_id, rv.device_path, rv.state = target.oma_vm_id, str(device), "attached"
    return str(device)


def export_client(exports: Any, rv: ReplicaVolume, job_id: str | None = None) -> str | None:
    """The certificate subject ``rv``'s export admits (the VMA of the job, else of the VM);
    None for a plaintext export, which only ``exports.allow_plaintext`` permits.

    Raises :class:`WorkflowError` (step ``exports``) for a revoked VMA, and for one without an
    enrolled certificate unless plaintext is allowed."""
    vma_id = None
    if job_id is not None:
        job = ReplicationJob.get_or_none(ReplicationJob.id == job_id)
        vma_id = job.vma_id if job is not None else None
    if vma_id is None:
        context = VmContext.get_or_none(VmContext.id == rv.context_id)
        vma_id = context.vma_id if context is not None else None
    vma = VmaAppliance.get_or_none(VmaAppliance.id == vma_id) if vma_id else None
    name = vma.name if vma is not None else "(none)"
    if vma is not None and vma.revoked_at is not None:
        raise WorkflowError(
            f"VMA {name} is revoked: the replica of disk {rv.disk_key} is not exported to it",
            step="exports",
        )
    if vma is not None and vma.cert_subject:
        return str(vma.cert_subject)
    if getattr(exports, "allow_plaintext", False):
        log.warning(
            "exporting a replica without TLS: its VMA has no enrolled certificate "
            "(OMA_NBD_ALLOW_PLAINTEXT)",
            volume_id=rv.cloudstack_volume_id,
            vma=name,
        )
        return None
    raise WorkflowError(
        f"VMA {name} has no enrolled certificate: the replica of disk {rv.disk_key} is only "
        "exported over TLS to its VMA (enroll the VMA, or set OMA_NBD_ALLOW_PLAINTEXT=true "
        "to allow plaintext NBD)",
        step="exports",
    )


def ensure_export(exports: Any, rv: ReplicaVolume, *, job_id: str | None = None) -> str:
    """A live NBD export of the attached ``rv`` for its VMA (kept when its process still
    serves this device to that client, else started); returns its URI (``nbds://`` with
    TLS, ``nbd://`` without)."""
    client = export_client(exports, rv, job_id)
    wanted = _admitted_form(client)
    for row in NbdExport.select().where(NbdExport.volume == rv.id, NbdExport.state == "running"):
        if (
            row.pid
            and row.device_path == rv.device_path
            and exports.is_running(row.pid, rv.cloudstack_volume_id)
            and exports.admitted(row.pid) == wanted
        ):
            return str(exports.uri_of(row.pid, row.host, row.port, row.export_name))
        if row.pid:
            exports.stop(row.pid, rv.cloudstack_volume_id)
        row.state, row.updated_at = "dead", utcnow()
        row.save()
    used = {r.port for r in NbdExport.select(NbdExport.port).where(NbdExport.state == "running")}
    info = exports.start(rv.cloudstack_volume_id, rv.device_path, used_ports=used, client=client)
    NbdExport.create(
        volume=rv.id,
        host=info.host,
        port=info.port,
        export_name=info.export_name,
        device_path=rv.device_path,
        pid=info.pid,
        state="running",
        tls=str(info.uri).startswith("nbds"),
    )
    q.append_event(
        job_id,
        rv.context_id,
        "export_started",
        f"exporting volume {rv.cloudstack_volume_id} (disk {rv.disk_key}) at {info.uri}",
        data={"pid": info.pid, "port": info.port},
    )
    return str(info.uri)


def _admitted_form(client: str | None) -> str | None:
    from ..nbd.tls import gnutls_dn

    return gnutls_dn(client) if client is not None else None


def stop_exports(exports: Any, rv: ReplicaVolume) -> int:
    """Stop every running export of a replica volume (rows → ``stopped``); how many."""
    stopped = 0
    for row in NbdExport.select().where(NbdExport.volume == rv.id, NbdExport.state == "running"):
        if row.pid:
            exports.stop(row.pid, rv.cloudstack_volume_id)
        row.state, row.updated_at = "stopped", utcnow()
        row.save()
        stopped += 1
    return stopped


def detach_from_oma(
    exports: Any, cs: Any, target: CloudStackTarget, rv: ReplicaVolume, *, reason: str = ""
) -> bool:
    """Stop ``rv``'s exports and detach it from the OMA VM (row → ``detached``).

    Returns True when CloudStack detached it now; False when it was not on the OMA. A volume
    attached to another VM is left there (its row is not touched) and reported as False.
    """
    stop_exports(exports, rv)
    vol = cs.get_volume(rv.cloudstack_volume_id) if rv.cloudstack_volume_id else None
    vm = vol.get("virtualmachineid") if vol else None
    if vm and vm != target.oma_vm_id:
        return False
    if vm:
        cs.detach_volume(rv.cloudstack_volume_id)
    ReplicaVolume.update(
        attached_vm_id=None, device_id=None, device_path=None, state="detached", updated_at=utcnow()
    ).where(ReplicaVolume.id == rv.id, ReplicaVolume.state != "deleted").execute()
    rv.attached_vm_id, rv.device_id, rv.device_path, rv.state = None, None, None, "detached"
    if vm:
        q.append_event(
            None,
            rv.context_id,
            "volume_detached",
            f"detached volume {rv.cloudstack_volume_id} (disk {rv.disk_key}) from the OMA"
            + (f" {reason}" if reason else ""),
            data={"volume_id": rv.cloudstack_volume_id},
        )
    return bool(vm)


def delete_replica(
    exports: Any, cs: Any, target: CloudStackTarget, rv: ReplicaVolume, *, why: str
) -> bool:
    """Stop exports, detach from the OMA and delete ``rv`` in CloudStack; the row becomes
    ``deleted`` and its disk loses replica and change ID (the next sync is full).

    Returns False (and changes nothing) when the volume is attached to another VM.
    """
    if rv.cloudstack_volume_id:
        if not detach_from_oma(exports, cs, target, rv) and _attached_elsewhere(cs, target, rv):
            return False
        cs.delete_volume(rv.cloudstack_volume_id, missing_ok=True)
    else:
        stop_exports(exports, rv)
    now = utcnow()
    with q.write_transaction():
        VmDisk.update(replica_volume=None, change_id=None, change_id_at=None, updated_at=now).where(
            VmDisk.replica_volume == rv.id
        ).execute()
        ReplicaVolume.update(
            state="deleted", attached_vm_id=None, device_id=None, device_path=None, updated_at=now
        ).where(ReplicaVolume.id == rv.id).execute()
        q.append_event(
            None,
            rv.context_id,
            "volume_deleted",
            f"deleted replica volume {rv.cloudstack_volume_id} ({why})",
            at=now,
        )
    rv.state = "deleted"
    return True


def _attached_elsewhere(cs: Any, target: CloudStackTarget, rv: ReplicaVolume) -> bool:
    vol = cs.get_volume(rv.cloudstack_volume_id)
    vm = vol.get("virtualmachineid") if vol else None
    return bool(vm) and vm != target.oma_vm_id


# -- reconciliation ------------------------------------------------------------------------


def _settle(
    cs: Any, target: CloudStackTarget, rv: ReplicaVolume, by_id_dir: Path | None = None
) -> str:
    """Make one row agree with CloudStack's view of its volume; returns the row's new state."""
    vol = cs.get_volume(rv.cloudstack_volume_id) if rv.cloudstack_volume_id else None
    vm = vol.get("virtualmachineid") if vol else None
    now = utcnow()
    if vm == target.oma_vm_id:
        device = rv.device_path
        if by_id_dir is not None:
            from ..cloudstack import find_device

            found = find_device(rv.cloudstack_volume_id, by_id_dir)
            device = str(found) if found is not None else None
        ReplicaVolume.update(
            state="attached",
            attached_vm_id=vm,
            device_id=vol.get("deviceid"),
            device_path=device,
            updated_at=now,
        ).where(ReplicaVolume.id == rv.id).execute()
        return "attached"
    if vm:  # another VM (a failed-over VM) uses it: not ours to book
        if rv.state in ON_OMA:
            ReplicaVolume.update(attached_vm_id=vm, state="attached_target", updated_at=now).where(
                ReplicaVolume.id == rv.id
            ).execute()
            return "attached_target"
        return rv.state
    ReplicaVolume.update(
        state="detached", attached_vm_id=None, device_id=None, device_path=None, updated_at=now
    ).where(ReplicaVolume.id == rv.id).execute()
    return "detached"


def reconcile_attachments(
    cs: Any,
    target: CloudStackTarget,
    by_id_dir: str | Path | None = None,
    *,
    in_flight_grace: float = 900.0,
) -> dict[str, int]:
    """Rows of replicas booked on, or found on, the target's OMA VM agree with CloudStack.

    Settles ``attaching``/``detaching`` rows a crash left behind (once they are older than
    ``in_flight_grace`` seconds: an attach may take minutes while CloudStack first moves the
    volume to the OMA VM's storage; a resumed step settles its own row sooner), marks rows
    whose volume is no longer on the OMA ``detached`` and adopts replicas CloudStack shows on
    the OMA VM.
    Returns counts by resulting state. Call with a database connection open.
    """
    on_vm = {v["id"] for v in cs.list_volumes(vm_id=target.oma_vm_id)}
    rows = ReplicaVolume.select().where(
        ReplicaVolume.state != "deleted",
        ReplicaVolume.cloudstack_volume_id.is_null(False),
        (ReplicaVolume.state.in_(ON_OMA) & (ReplicaVolume.attached_vm_id == target.oma_vm_id))
        | ReplicaVolume.cloudstack_volume_id.in_(list(on_vm) or [""]),
    )
    counts: dict[str, int] = {}
    settled_before = utcnow() - timedelta(seconds=in_flight_grace)
    for rv in rows:
        if rv.state == "attached" and rv.cloudstack_volume_id in on_vm:
            continue
        if rv.state in ("attaching", "detaching") and rv.updated_at > settled_before:
            continue  # a step (of any worker) may be waiting for CloudStack right now
        state = _settle(cs, target, rv, Path(by_id_dir) if by_id_dir else None)
        counts[state] = counts.get(state, 0) + 1
    if counts:
        log.info("replica attachments reconciled", target_id=target.id, **counts)
    return counts
