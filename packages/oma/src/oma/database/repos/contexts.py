"""vm_contexts and vm_disks: protected VMs and their disks, stable per (context, disk key)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...errors import ConflictError, InvalidStateError
from ..db import database
from ..fields import now
from ..models import ContextState, NbdExport, ReplicaVolume, VmContext, VmDisk
from . import _documents, _select, events
from ._select import Where
from ._util import get_or_raise, translate_integrity


def disk_rows_from_vm(vm: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-disk fields from a discovered VM dict (VMA ``/discover`` shape); keys as strings.

    Accepts ``disk_key`` (or ``key``, or ``id`` like ``disk-2000``), ``capacity_bytes``,
    ``label``, ``unit_number``, ``controller_key`` and ``path``/``vmdk_path``.
    """
    rows = []
    for index, disk in enumerate(vm.get("disks") or []):
        key = disk.get("disk_key", disk.get("key"))
        if key is None and isinstance(disk.get("id"), str):
            key = disk["id"].removeprefix("disk-")
        if key is None or str(key).strip() == "":
            raise ValueError(f"disks[{index}].disk_key is missing")
        capacity = disk.get("capacity_bytes")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity <= 0:
            raise ValueError(f"disks[{index}].capacity_bytes must be a positive integer")
        rows.append(
            {
                "disk_key": str(key),
                "capacity_bytes": capacity,
                "label": disk.get("label"),
                "unit_number": disk.get("unit_number"),
                "controller_key": disk.get("controller_key"),
                "path": disk.get("path") or disk.get("vmdk_path") or disk.get("file"),
            }
        )
    return rows


def create_context(
    *,
    vcenter: str,
    vm_id: str,
    name: str,
    vma_id: str | None = None,
    credential_id: str | None = None,
    target_id: str | None = None,
    path: str | None = None,
    spec: Mapping[str, Any] | None = None,
    disks: Iterable[Mapping[str, Any]] = (),
) -> VmContext:
    """Create a context with its disks in one transaction; ConflictError if the VM is managed."""
    with database.atomic():
        with translate_integrity(
            f"VM {vm_id} of vCenter {vcenter} is already managed", field="vm_id"
        ):
            ctx = VmContext.create(
                vcenter=vcenter,
                vm_id=vm_id,
                name=name,
                vma=vma_id,
                credential=credential_id,
                target=target_id,
                path=path,
                spec=dict(spec) if spec is not None else None,
            )
        upsert_disks(ctx.id, disks)
        events.append_event("context_added", f"VM {name} added to management", context_id=ctx.id)
    return ctx


def upsert_disks(context_id: str, disks: Iterable[Mapping[str, Any]]) -> list[VmDisk]:
    """Insert or update disks by (context, disk key), keeping row ids and change IDs stable."""
    out = []
    with database.atomic():
        for disk in disks:
            key = str(disk["disk_key"])
            fields = {
                k: disk.get(k)
                for k in ("capacity_bytes", "label", "unit_number", "controller_key", "path")
                if k in disk
            }
            row = VmDisk.get_or_none(VmDisk.context == context_id, VmDisk.disk_key == key)
            if row is None:
                with translate_integrity(f"disk {key} already exists", field="disk_key"):
                    row = VmDisk.create(context=context_id, disk_key=key, **fields)
            else:
                if fields.get("capacity_bytes") and fields["capacity_bytes"] != row.capacity_bytes:
                    # A resized disk needs a full copy next time: forget its change ID.
                    fields["change_id"] = None
                VmDisk.update(updated_at=now(), **fields).where(VmDisk.id == row.id).execute()
                row = VmDisk.get_by_id(row.id)
            out.append(row)
    return out


def get_context(context_id: str) -> VmContext:
    """The context with this id, or NotFoundError."""
    return get_or_raise(VmContext, context_id, "vm context")


def find_context(
    *, vcenter: str | None = None, vm_id: str | None = None, vma_id: str | None = None
) -> VmContext | None:
    """The context for a VMware VM id (optionally within one vCenter or VMA), or None."""
    query = VmContext.select().where(VmContext.vm_id == vm_id)
    if vcenter is not None:
        query = query.where(VmContext.vcenter == vcenter)
    if vma_id is not None:
        query = query.where(VmContext.vma == vma_id)
    rows = list(query.limit(2))
    if len(rows) > 1:
        raise ConflictError(
            f"VM {vm_id} is managed in more than one vCenter; name the context", field="vm_id"
        )
    return rows[0] if rows else None


def list_contexts(
    document: _documents.Document,
    *,
    state: str | None = None,
    vma_id: str | None = None,
    name: str | None = None,
    limit: int = 100,
    offset: int = 0,
    after: Sequence[str] | None = None,
) -> _select.Page:
    """A page of contexts rendered as ``document`` (:func:`_documents.page`), by name then
    id, with the matching count up
    to :data:`_select.COUNT_CAP`; ``after`` is a previous page's :attr:`~_select.Page.after`
    key. The state and VMA filters with this order are served by an index (migration 0007);
    ``name`` matches a substring."""
    where = Where()
    if state:
        where.eq("state", state)
    if vma_id:
        where.eq("vma_id", vma_id)
    if name:
        # a case-insensitive substring: LIKE with "!" escaping the wildcards (same on all three)
        escaped = name.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
        where.raw("LOWER(name) LIKE {p} ESCAPE '!'", f"%{escaped}%")
    return _documents.page(
        VmContext, document, where, order=("name", "id"), limit=limit, offset=offset, after=after
    )


def count_by_state() -> dict[str, tuple[int, bool]]:
    """``{state: (VMs in it, exact)}`` for every state, each counted through the state index
    up to :data:`_select.COUNT_CAP` (beyond it: the cap, not exact), in one statement."""
    cap, table = _select.COUNT_CAP, _select.quote(VmContext._meta.table_name)
    states = [s.value for s in ContextState]
    where = f" WHERE {_select.quote('state')} = {database.param}"
    counts = ", ".join(_select.capped_count(table, where, cap) for _ in states)
    params = [state for state in states for _ in range(2)]  # each count names its state twice
    found = database.obj.execute_sql(f"SELECT {counts}", params).fetchone()
    return {
        state: (min(int(n), cap), int(n) <= cap) for state, n in zip(states, found, strict=True)
    }


def names(context_ids: Iterable[str]) -> dict[str, str]:
    """``{context id: VM name}`` of the given contexts (unknown ids are left out)."""
    ids = list(context_ids)
    return _select.pairs(VmContext, "id", "name", Where().is_in("id", ids)) if ids else {}


def list_disks(context_id: str) -> list[VmDisk]:
    """A context's disks ordered by disk key (numerically where possible)."""
    rows = _select.rows(VmDisk, Where().eq("context_id", context_id))
    return sorted(rows, key=lambda d: (len(d.disk_key), d.disk_key))


def list_volumes(context_id: str) -> list[ReplicaVolume]:
    """A context's replica volumes by disk key, oldest first."""
    where = Where().eq("context_id", context_id)
    return _select.rows(ReplicaVolume, where, order="disk_key, created_at")


def exports_by_volume(volume_ids: Iterable[str]) -> dict[str, list[NbdExport]]:
    """The NBD export rows of many volumes in one query."""
    ids = list(volume_ids)
    out: dict[str, list[NbdExport]] = {}
    if ids:
        for row in _select.rows(NbdExport, Where().is_in("volume_id", ids)):
            out.setdefault(row.volume_id, []).append(row)
    return out


def set_state(context_id: str, state: ContextState | str, **fields: Any) -> None:
    """Change a context's state (and other columns) and stamp updated_at."""
    VmContext.update(state=ContextState(state).value, updated_at=now(), **fields).where(
        VmContext.id == context_id
    ).execute()


def set_failover_defaults(context_id: str, defaults: Mapping[str, str] | None) -> None:
    """Store the operator's per-VM failover choices (``boot_disk_key``, ``template_id``)."""
    VmContext.update(
        failover_defaults=dict(defaults) if defaults else None, updated_at=now()
    ).where(VmContext.id == context_id).execute()


def set_replication_defaults(context_id: str, defaults: Mapping[str, Any] | None) -> None:
    """Store the operator's per-VM replication choices (``verify``)."""
    VmContext.update(
        replication_defaults=dict(defaults) if defaults else None, updated_at=now()
    ).where(VmContext.id == context_id).execute()


def store_change_ids(context_id: str, change_ids: Mapping[str, str]) -> None:
    """Store the new change ID of each disk key (call only once the targets are flushed)."""
    stamp = now()
    with database.atomic():
        for key, change_id in change_ids.items():
            VmDisk.update(change_id=change_id, change_id_at=stamp, updated_at=stamp).where(
                VmDisk.context == context_id, VmDisk.disk_key == str(key)
            ).execute()


def delete_context(context_id: str) -> None:
    """Remove a context with its disks, jobs and events; refused while a job is active."""
    ctx = get_context(context_id)
    if ctx.active_job_id:
        raise InvalidStateError(f"VM context {context_id} has an active job {ctx.active_job_id}")
    ctx.delete_instance(recursive=False)
