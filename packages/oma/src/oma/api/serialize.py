"""Rows to JSON dicts for the API. Secrets are never included (only ``has_*`` flags)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from peewee import Model

from migration_common import rfc3339

from ..database.models import (
    TERMINAL_JOB_STATUSES,
    CloudStackTarget,
    JobDisk,
    JobEvent,
    JobStatus,
    NbdExport,
    ReplicationJob,
    ReplicaVolume,
    VmaAppliance,
    VmContext,
    VmDisk,
    VmwareCredential,
)
from ..database.repos import _documents as docs
from ..nbd.exports import export_uri

TERMINAL = frozenset(s.value for s in TERMINAL_JOB_STATUSES)


def mask(value: str | None) -> str | None:
    """``****`` and the last four characters of a secret (all of it masked when short)."""
    if not value:
        return value
    return "****" + (value[-4:] if len(value) >= 16 else "")


def ts(value: datetime | None) -> str | None:
    """RFC 3339 UTC text of a timestamp (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # what the database's timestamp fields return: no conversion
        return value.isoformat()[:-6] + "Z"
    return rfc3339(value)


def appliance(row: VmaAppliance) -> dict[str, Any]:
    """A VMA appliance (no token)."""
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "has_token": bool(row.token_encrypted),
        "cert_subject": row.cert_subject,
        "cert_fingerprint": row.cert_fingerprint,
        "revoked_at": ts(row.revoked_at),
        "version": row.version,
        "last_seen_at": ts(row.last_seen_at),
        "last_error": row.last_error,
        "created_at": ts(row.created_at),
    }


def credential(row: VmwareCredential) -> dict[str, Any]:
    """A vCenter credential (no password)."""
    return {
        "id": row.id,
        "name": row.name,
        "vcenter": row.vcenter,
        "username": row.username,
        "has_password": bool(row.password_encrypted),
        "datacenter": row.datacenter,
        "insecure": row.insecure,
        "is_default": row.is_default,
        "created_at": ts(row.created_at),
    }


def target(row: CloudStackTarget) -> dict[str, Any]:
    """A CloudStack target. Both keys are secrets: the secret key is never shown, the API key
    only as its last four characters (``****wxyz``) so an admin can tell keys apart."""
    return {
        "id": row.id,
        "name": row.name,
        "endpoint": row.endpoint,
        "api_key": row.api_key if row.api_key_encrypted else mask(row.api_key),
        "has_secret_key": bool(row.secret_key_encrypted),
        "zone_id": row.zone_id,
        "oma_vm_id": row.oma_vm_id,
        "disk_offering_id": row.disk_offering_id,
        "disk_size_max_gib": row.disk_size_max_gib,
        "disk_offering_facts": row.disk_offering_facts,
        "verify_tls": row.verify_tls,
        "is_default": row.is_default,
        "created_at": ts(row.created_at),
    }


def _plain(value: Any) -> Any:
    """A row's value as its JSON value (a timestamp as RFC 3339 text)."""
    return ts(value) if isinstance(value, datetime) else value


def _project(row: Model, columns: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """A model row read through ``columns`` — the columns its list's document renders
    (:func:`job_document`, :func:`context_document`), so a row and a list item of the same
    kind hold the same keys."""
    d = row.__data__  # the row's values by field name (what its attributes read)
    return {key: _plain(d.get(name)) for key, name in columns}


#: a source disk: API key → field of vm_disks
DISK_COLUMNS = (
    ("disk_key", "disk_key"),
    ("label", "label"),
    ("capacity_bytes", "capacity_bytes"),
    ("unit_number", "unit_number"),
    ("controller_key", "controller_key"),
    ("path", "path"),
    ("replica_volume_id", "replica_volume"),
    ("change_id", "change_id"),
    ("change_id_at", "change_id_at"),
)


def disk(row: VmDisk) -> dict[str, Any]:
    """A source disk of a context."""
    return _project(row, DISK_COLUMNS)


#: a VM context (without its disks, jobs and events): API key → field of vm_contexts
CONTEXT_COLUMNS = (
    ("id", "id"),
    ("name", "name"),
    ("vm_id", "vm_id"),
    ("vcenter", "vcenter"),
    ("path", "path"),
    ("vma_id", "vma"),
    ("credential_id", "credential"),
    ("cloudstack_target_id", "target"),
    ("state", "state"),
    ("ready_for_failover", "ready_for_failover"),
    ("active_job_id", "active_job_id"),
    ("last_job_id", "last_job_id"),
    ("last_success_at", "last_success_at"),
    ("spec", "spec"),
    ("failover_defaults", "failover_defaults"),
    ("replication_defaults", "replication_defaults"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
)


def context_item(item: dict[str, Any]) -> dict[str, Any]:
    """Finish a context read through :data:`CONTEXT_COLUMNS` (in place; returned)."""
    item["failover_defaults"] = item["failover_defaults"] or {}
    item["replication_defaults"] = item["replication_defaults"] or {}
    return item


def context(row: VmContext) -> dict[str, Any]:
    """A VM context (without its disks, jobs and events)."""
    return context_item(_project(row, CONTEXT_COLUMNS))


def context_document() -> docs.Document:
    """A context as a list renders it in the database: :func:`context` with its ``disks``
    (:func:`disk`, by disk key)."""
    return _context_document(docs.dialect())


#: the index of a VM's disks in this order (migration 0013, SQLite)
DISK_ORDER_INDEX = "vmdisk_context_id_disk_order"


@cache
def _context_document(_: object) -> docs.Document:
    out = dict(docs.fields(VmContext, CONTEXT_COLUMNS))
    for key in ("failover_defaults", "replication_defaults"):  # as context_item: {} for none
        stored = docs.column(VmContext, key)
        out[key] = docs.Value(f"COALESCE(NULLIF({stored}, ''), '{{}}')", docs.JSON)
    disk_key = docs.column(VmDisk, "disk_key")
    out["disks"] = docs.nested(
        VmDisk,
        docs.fields(VmDisk, DISK_COLUMNS),
        ("context", docs.column(VmContext, "id")),
        (f"LENGTH({disk_key})", disk_key),
        index=DISK_ORDER_INDEX,
    )
    return tuple(out.items())


def volume(row: ReplicaVolume, exports: list[NbdExport] | None = None) -> dict[str, Any]:
    """A replica volume, with its NBD exports when given."""
    data: dict[str, Any] = {
        "id": row.id,
        "disk_key": row.disk_key,
        "cloudstack_volume_id": row.cloudstack_volume_id,
        "name": row.name,
        "size_bytes": row.size_bytes,
        "state": row.state,
        "attached_vm_id": row.attached_vm_id,
        "device_id": row.device_id,
        "device_path": row.device_path,
        "error": row.error,
        "updated_at": ts(row.updated_at),
    }
    if exports is not None:
        data["exports"] = [
            {
                "host": e.host,
                "port": e.port,
                "export_name": e.export_name,
                "pid": e.pid,
                "state": e.state,
                "tls": bool(e.tls),
                "uri": export_uri(e.host, e.port, e.export_name, secure=bool(e.tls)),
            }
            for e in exports
        ]
    return data


def job_disk(row: JobDisk) -> dict[str, Any]:
    """A job's per-disk progress."""
    return {
        "disk_key": row.disk_key,
        "status": row.status,
        "phase": row.phase,
        "sync_type": row.sync_type,
        "bytes_total": row.bytes_total,
        "bytes_done": row.bytes_done,
        "bytes_written": row.bytes_written,
        "bytes_zeroed": row.bytes_zeroed,
        "throughput_bps": row.throughput_bps,
        "change_id": row.change_id,
        "previous_change_id": row.previous_change_id,
        "target_uri": row.target_uri,
        "error": row.error,
        "verified": row.verified,
        "source_sha256": row.source_sha256,
        "target_sha256": row.target_sha256,
        "updated_at": ts(row.updated_at),
    }


#: a replication job (without its disks): API key → field of replication_jobs
JOB_COLUMNS = (
    ("id", "id"),
    ("job_id", "id"),
    ("vm_context_id", "context"),
    ("vma_id", "vma"),
    ("type", "requested_type"),
    ("verify", "verify"),
    ("sync_type", "effective_type"),
    ("status", "status"),
    ("phase", "phase"),
    ("percent", "percent"),
    ("bytes_total", "bytes_total"),
    ("bytes_done", "bytes_done"),
    ("throughput_bps", "throughput_bps"),
    ("eta_seconds", "eta_seconds"),
    ("error_class", "error_class"),
    ("error_message", "error_message"),
    ("stop_requested", "stop_requested"),
    ("wait_reason", "wait_reason"),
    ("attempts", "attempts"),
    ("created_at", "created_at"),
    ("started_at", "started_at"),
    ("updated_at", "updated_at"),
    ("finished_at", "finished_at"),
    ("last_progress_at", "last_progress_at"),
)


def job_item(item: dict[str, Any], context_name: str | None = None) -> dict[str, Any]:
    """Finish a job read through :data:`JOB_COLUMNS` (in place; returned): the VM's name
    ``context_name``, ``active``, and ``wait_reason`` only while it waits — what
    :func:`job_document` renders in the database for lists."""
    status = item["status"]
    item["vm_name"] = context_name
    item["active"] = status not in TERMINAL
    if status != _PENDING:
        item["wait_reason"] = None
    return item


_PENDING = JobStatus.PENDING.value


def job_document() -> docs.Document:
    """A job as a list renders it in the database: :func:`job` without its disks — its VM's
    name read in the same statement."""
    return _job_document(docs.dialect())


@cache
def _job_document(_: object) -> docs.Document:
    out = dict(docs.fields(ReplicationJob, JOB_COLUMNS))
    status = docs.column(ReplicationJob, "status")
    waiting = docs.column(ReplicationJob, "wait_reason")
    pending = docs.literal(_PENDING)
    out["wait_reason"] = docs.Value(f"CASE WHEN {status} = {pending} THEN {waiting} END")
    terminal = ", ".join(docs.literal(s) for s in sorted(TERMINAL))
    out["active"] = docs.Value(f"{status} NOT IN ({terminal})", docs.BOOLEAN)
    contexts = docs.quote(VmContext._meta.table_name)
    name, key = docs.column(VmContext, "name"), docs.column(VmContext, "id")
    parent = docs.column(ReplicationJob, "context")
    # the copy on the job's own row; its context's row only for a job without one
    copied = docs.column(ReplicationJob, "vm_name")
    looked_up = f"(SELECT {name} FROM {contexts} WHERE {key} = {parent})"
    out["vm_name"] = docs.Value(f"COALESCE({copied}, {looked_up})")
    return tuple(out.items())


def job(
    row: ReplicationJob, disks: list[JobDisk] | None = None, *, context_name: str | None = None
) -> dict[str, Any]:
    """A replication job (with its disks when given)."""
    data = job_item(_project(row, JOB_COLUMNS), context_name)
    if disks is not None:
        data["disks"] = [job_disk(d) for d in disks]
        data["verified"] = _verified(row, disks)
    return data


def _verified(row: ReplicationJob, disks: list[JobDisk]) -> bool | None:
    """The job's verification result: true once every disk verified equal, false when one
    mismatched, null while unknown (not asked for, or not finished)."""
    if not row.verify or not disks:
        return None
    results = [d.verified for d in disks]
    if False in results:
        return False
    return True if all(r is True for r in results) else None


def event(row: JobEvent) -> dict[str, Any]:
    """One timeline event."""
    return {
        "at": ts(row.at),
        "job_id": row.job_id,
        "vm_context_id": row.context_id,
        "kind": row.kind,
        "message": row.message,
        "data": row.data,
    }


PROGRESS_STATUS = {
    JobStatus.PENDING.value: "queued",
    JobStatus.PROVISIONING.value: "queued",
    JobStatus.READY.value: "queued",
    JobStatus.REPLICATING.value: "running",
    JobStatus.COMPLETED.value: "completed",
    JobStatus.FAILED.value: "failed",
    JobStatus.STOPPED.value: "stopped",
}


def progress(row: ReplicationJob, disks: list[JobDisk]) -> dict[str, Any]:
    """A job's progress in the contract's shape (docs/architecture.md §3) plus the OMA status."""
    return {
        "job_id": row.id,
        "status": PROGRESS_STATUS[row.status],
        "job_status": row.status,
        "sync_type": row.effective_type,
        "phase": row.phase,
        "percent": row.percent,
        "bytes_total": row.bytes_total,
        "bytes_done": row.bytes_done,
        "throughput_bps": row.throughput_bps,
        "eta_seconds": row.eta_seconds,
        "started_at": ts(row.started_at),
        "updated_at": ts(row.updated_at),
        "error": row.error_message,
        "disks": [job_disk(d) for d in disks],
    }
