"""Export reconciliation at worker start: the database and the running qemu-nbd processes agree.

For every export the database says is ``running``:

- its process is alive (checked through ``/proc/<pid>/cmdline``, not just the PID) → kept,
  unless its VMA may no longer have it (revoked, or without a certificate while plaintext is
  not allowed) → stopped (the row ``stopped``; reconciliation runs every minute, so a
  revocation closes the VMA's exports within one);
- it is dead but its volume is still attached and its device is found again by serial in
  the by-id directory → restarted, on the same port when that port is free (a VMA may hold
  the URI), for the same client (its VMA's certificate, as :func:`ensure_export` decides), and
  the row updated;
- otherwise → marked ``dead``.

Then every qemu-nbd export this OMA's ExportManager started that no ``running`` row knows
about (an orphan, e.g. started just before a crash) is stopped. No export outlives its volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migration_common import get_logger, utcnow

from ..database.db import database
from ..database.models import NbdExport, ReplicaVolume
from ..errors import NbdExportError, WorkflowError
from . import _queries as q

log = get_logger(__name__)


@dataclass
class ReconcileResult:
    """What reconciliation did."""

    kept: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    orphans_stopped: list[int] = field(default_factory=list)


def _restart(exports: Any, row: NbdExport, rv: ReplicaVolume, port_range: tuple[int, int]) -> Any:
    """Start the export again, on its old port when possible."""
    others = {
        r.port
        for r in NbdExport.select(NbdExport.port).where(
            NbdExport.state == "running", NbdExport.id != row.id
        )
    }
    from ..workflows.replicas import export_client

    client = export_client(exports, rv)
    lo, hi = port_range
    all_but_old = set(range(lo, hi + 1)) - {row.port}
    try:
        return exports.start(
            rv.cloudstack_volume_id, rv.device_path, used_ports=all_but_old | others, client=client
        )
    except NbdExportError:
        return exports.start(
            rv.cloudstack_volume_id, rv.device_path, used_ports=others, client=client
        )


def _refuse(exports: Any, row: NbdExport, rv: ReplicaVolume) -> str | None:
    """Stop a live export its VMA may no longer have; the reason, or None when it stays."""
    from ..workflows.replicas import export_client

    try:
        export_client(exports, rv)
    except WorkflowError as exc:
        reason = str(exc)
    else:
        return None
    log.warning("stopping an export its VMA may no longer use", volume_id=row.volume_id)
    exports.stop(row.pid, rv.cloudstack_volume_id)
    now = utcnow()
    with q.write_transaction():
        row.state, row.updated_at = "stopped", now
        row.save()
        q.append_event(None, rv.context_id, "export_stopped", reason, at=now)
    return reason


def _current_device(rv: ReplicaVolume, by_id_dir: Path | None) -> str | None:
    """The volume's block device now, found again by its serial (never a remembered
    ``/dev/vdX``, which may name another disk after a reboot)."""
    if rv.state != "attached" or not rv.cloudstack_volume_id:
        return None
    if by_id_dir is None:
        return rv.device_path if rv.device_path and Path(rv.device_path).exists() else None
    from ..cloudstack import find_device

    found = find_device(rv.cloudstack_volume_id, by_id_dir)
    return str(found) if found is not None else None


def reconcile_exports(
    exports: Any, port_range: tuple[int, int], by_id_dir: str | Path | None = None
) -> ReconcileResult:
    """Make the nbd_exports rows and the running processes agree (see module docstring)."""
    result = ReconcileResult()
    with database.connection_context():
        rows = list(
            NbdExport.select(NbdExport, ReplicaVolume)
            .join(ReplicaVolume)
            .where(NbdExport.state == "running")
        )
        for row in rows:
            rv = row.volume
            vol_id = rv.cloudstack_volume_id
            if row.pid and exports.is_running(row.pid, vol_id):
                if _refuse(exports, row, rv) is None:
                    result.kept.append(vol_id)
                else:
                    result.refused.append(vol_id)
                continue
            now = utcnow()
            device = _current_device(rv, Path(by_id_dir) if by_id_dir else None)
            if device is not None:
                if device != rv.device_path:
                    rv.device_path, rv.updated_at = device, now
                    rv.save()
                try:
                    info = _restart(exports, row, rv, port_range)
                except (NbdExportError, WorkflowError) as exc:
                    log.warning("could not restart export", volume_id=vol_id, error=str(exc))
                else:
                    with q.write_transaction():
                        old_port = row.port
                        row.pid, row.port, row.host = info.pid, info.port, info.host
                        row.export_name, row.updated_at = info.export_name, now
                        row.save()
                        q.append_event(
                            None,
                            rv.context_id,
                            "export_restarted",
                            f"restarted dead export of volume {vol_id} "
                            f"(port {old_port} → {info.port})",
                            data={"pid": info.pid},
                            at=now,
                        )
                    result.restarted.append(vol_id)
                    continue
            row.state, row.updated_at = "dead", now
            row.save()
            result.dead.append(vol_id)
        known = {
            (r.pid, r.volume.cloudstack_volume_id)
            for r in NbdExport.select(NbdExport, ReplicaVolume)
            .join(ReplicaVolume)
            .where(NbdExport.state == "running")
        }
    for info in exports.list_running():
        if (info.pid, info.volume_id) not in known:
            log.warning("stopping orphan export", volume_id=info.volume_id, pid=info.pid)
            exports.stop(info.pid, info.volume_id)
            result.orphans_stopped.append(info.pid)
    if result.restarted or result.dead or result.orphans_stopped or result.refused:
        log.info(
            "exports reconciled",
            kept=len(result.kept),
            refused=result.refused,
            restarted=result.restarted,
            dead=result.dead,
            orphans=result.orphans_stopped,
        )
    return result
