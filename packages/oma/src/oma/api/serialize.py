"""Rows to JSON dicts for the API. Secrets are never included (only ``has_*`` flags)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from migration_common import rfc3339

from ..database.models import (
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


def ts(value: datetime | None) -> str | None:
    """RFC 3339 UTC text of a timestamp (None stays None)."""
    return rfc3339(value) if value is not None else None


def appliance(row: VmaAppliance) -> dict[str, Any]:
    """A VMA appliance (no token)."""
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "has_token": bool(row.token_encrypted),
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
    """A CloudStack target (API key shown, secret key never)."""
    return {
        "id": row.id,
        "name": row.name,
        "endpoint": row.endpoint,
        "api_key": row.api_key,
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


def disk(row: VmDisk) -> dict[str, Any]:
    """A source disk of a context."""
    return {
        "disk_key": row.disk_key,
        "label": row.label,
        "capacity_bytes": row.capacity_bytes,
        "unit_number": row.unit_number,
        "controller_key": row.controller_key,
        "path": row.path,
        "replica_volume_id": row.replica_volume_id,
        "change_id": row.change_id,
        "change_id_at": ts(row.change_id_at),
    }


def context(row: VmContext) -> dict[str, Any]:
    """A VM context (without its disks, jobs and events)."""
    return {
        "id": row.id,
        "name": row.name,
        "vm_id": row.vm_id,
        "vcenter": row.vcenter,
        "path": row.path,
        "vma_id": row.vma_id,
        "credential_id": row.credential_id,
        "cloudstack_target_id": row.target_id,
        "state": row.state,
        "ready_for_failover": row.ready_for_failover,
        "active_job_id": row.active_job_id,
        "last_job_id": row.last_job_id,
        "last_success_at": ts(row.last_success_at),
        "spec": row.spec,
        "failover_defaults": row.failover_defaults or {},
        "replication_defaults": row.replication_defaults or {},
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }


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
                "uri": f"nbd://{e.host}:{e.port}/{e.export_name}",
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


def job(
    row: ReplicationJob, disks: list[JobDisk] | None = None, *, context_name: str | None = None
) -> dict[str, Any]:
    """A replication job (with its disks when given)."""
    data: dict[str, Any] = {
        "id": row.id,
        "job_id": row.id,
        "vm_context_id": row.context_id,
        "vm_name": context_name,
        "vma_id": row.vma_id,
        "type": row.requested_type,
        "verify": row.verify,
        "sync_type": row.effective_type,
        "status": row.status,
        "active": not JobStatus(row.status).is_terminal,
        "phase": row.phase,
        "percent": row.percent,
        "bytes_total": row.bytes_total,
        "bytes_done": row.bytes_done,
        "throughput_bps": row.throughput_bps,
        "eta_seconds": row.eta_seconds,
        "error_class": row.error_class,
        "error_message": row.error_message,
        "stop_requested": row.stop_requested,
        "wait_reason": row.wait_reason if row.status == JobStatus.PENDING.value else None,
        "attempts": row.attempts,
        "created_at": ts(row.created_at),
        "started_at": ts(row.started_at),
        "updated_at": ts(row.updated_at),
        "finished_at": ts(row.finished_at),
        "last_progress_at": ts(row.last_progress_at),
    }
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
