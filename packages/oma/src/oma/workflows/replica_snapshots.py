"""CloudStack snapshots of a VM's replica volumes taken by a live failover, for its rollback.

The live failover's ``snapshot_replicas`` step snapshots every replica right after the final
sync, before guest conversion or the target VM can change them, and records in its step data::

    {"snapshots": {"<disk key>": {"snapshot_id", "volume_id", "change_id", "taken_at"}},
     "refused": {"<disk key>": "<CloudStack's errortext>"},
     "after_guest_conversion": false, "after_target_start": false}

``change_id`` is the disk's change ID the snapshot's content matches. A rollback reverts the
replicas to these snapshots, which keeps the incremental chain; the rollback and a cleanup of
the VM's replicas delete them (an entry deleted in CloudStack gets ``"deleted": true``).

Kept apart from the failover modules so that the cleanup workflow can delete them too.
"""

from __future__ import annotations

from typing import Any

from migration_common import get_logger, rfc3339, utcnow

from ..database.models import ReplicaVolume, Workflow, WorkflowStep
from .kinds import FAILOVER_LIVE

log = get_logger(__name__)

STEP = "snapshot_replicas"
"""The live failover's step that takes the snapshots (its data holds them)."""
PENDING_STATES = ("Allocated", "Creating", "CreatedOnPrimary", "BackingUp")
"""Snapshot states of a snapshot CloudStack is still taking."""


class SnapshotNotReady(Exception):
    """A snapshot of this name is still being taken (a step resumed after a crash waits)."""


def replicas_changed_by(failover_id: str, boot_disk_key: str | None) -> dict[str, str]:
    """What a failover's later steps may have written to its replicas since the final sync:
    ``{"*": why}`` once the target VM was started, ``{boot disk key: why}`` once guest
    conversion ran, else empty. A step counts once it was attempted, whatever its status now
    (a retry sets a failed step back to pending; what it wrote stays)."""
    rows = {
        r.name: r
        for r in WorkflowStep.select().where(
            WorkflowStep.workflow == failover_id,
            WorkflowStep.name.in_(["guest_conversion", "start_target"]),
        )
    }
    start = rows.get("start_target")
    if start is not None and start.attempts > 0:
        return {"*": "the target VM ran on the replica"}
    conversion = rows.get("guest_conversion")
    if (
        conversion is not None
        and conversion.attempts > 0
        and not (conversion.data or {}).get("skipped")
        and boot_disk_key
    ):
        return {boot_disk_key: "guest conversion ran on the boot replica"}
    return {}


def snapshot_name(failover_id: str, disk_key: str) -> str:
    """The CloudStack name of a failover's snapshot of one disk (found again after a crash)."""
    return f"oma-failover-{failover_id}-{disk_key}"


def take_snapshot(cs: Any, failover_id: str, rv: ReplicaVolume) -> dict[str, Any]:
    """Snapshot ``rv``'s volume once: a snapshot of this failover's name that CloudStack
    already holds (taken just before a crash) is adopted. Returns the snapshot.

    Raises :class:`SnapshotNotReady` while such a snapshot is still being taken.
    """
    name = snapshot_name(failover_id, rv.disk_key)
    for snap in cs.list_snapshots(volume_id=rv.cloudstack_volume_id):
        if snap.get("name") != name:
            continue
        if snap.get("state") == "BackedUp":
            return snap
        if snap.get("state") in PENDING_STATES:
            raise SnapshotNotReady(
                f"snapshot {snap['id']} of disk {rv.disk_key} is {snap['state']}"
            )
    return cs.create_snapshot(rv.cloudstack_volume_id, name=name)


def recorded(failover_id: str) -> dict[str, dict[str, Any]]:
    """The snapshots a failover recorded, by disk key (empty when it took none)."""
    row = _step_row(failover_id)
    return dict(((row.data or {}) if row is not None else {}).get("snapshots") or {})


def _step_row(failover_id: str) -> WorkflowStep | None:
    return WorkflowStep.get_or_none(WorkflowStep.workflow == failover_id, WorkflowStep.name == STEP)


def _mark_deleted(failover_id: str, disk_key: str) -> None:
    row = _step_row(failover_id)
    if row is None:
        return
    data = dict(row.data or {})
    snaps = dict(data.get("snapshots") or {})
    if disk_key in snaps:
        snaps[disk_key] = {**snaps[disk_key], "deleted": True, "deleted_at": rfc3339(utcnow())}
        data["snapshots"] = snaps
        WorkflowStep.update(data=data).where(WorkflowStep.id == row.id).execute()


def delete_failover_snapshots(cs: Any, failover_id: str, *, renew: Any = None) -> list[str]:
    """Delete every snapshot a failover recorded and has not deleted yet (one already gone
    counts as deleted); returns the ids deleted now. ``renew`` is called before each call."""
    deleted = []
    for key, entry in recorded(failover_id).items():
        if entry.get("deleted") or not entry.get("snapshot_id"):
            continue
        if renew is not None:
            renew()
        if cs.get_snapshot(entry["snapshot_id"]) is not None:
            cs.delete_snapshot(entry["snapshot_id"])
            deleted.append(entry["snapshot_id"])
        _mark_deleted(failover_id, key)
    if deleted:
        log.info("failover snapshots deleted", failover_id=failover_id, snapshots=deleted)
    return deleted


def failovers_with_snapshots(context_id: str) -> list[str]:
    """Ids of a context's live failovers that still hold snapshots, oldest first."""
    rows = (
        Workflow.select(Workflow.id)
        .where(Workflow.context == context_id, Workflow.kind == FAILOVER_LIVE)
        .order_by(Workflow.created_at)
    )
    return [wf.id for wf in rows if any(not e.get("deleted") for e in recorded(wf.id).values())]
