"""The replication workflow: provision replica volumes and exports, start the VMA.

Steps (each idempotent, stored in ``workflow_steps``):

1. ``prepare``  — job → ``provisioning``; one ``job_disks`` row per source disk (by disk key);
   resolves the CloudStack target and the VMA.
2. ``volumes``  — per disk: find or create the replica volume (name
   ``oma-<context id[:8]>-<disk key>``, size ≥ capacity, reused across syncs; a volume created
   before a crash is adopted by name). A new volume clears the disk's change ID, so the next
   sync of that disk is full. Compensation: delete the volumes *this* run created (export
   stopped and detached first) — reused volumes are left for the next attempt.
3. ``attach``   — per volume: attach to the OMA VM unless already there, within the OMA VM's
   attach budget (an idle replica of another VM is detached when its room is needed; the job
   was only started once its volumes fit: :mod:`oma.services.admission`), then wait for its
   ``/dev/disk/by-id/virtio-<serial>`` entry (never by device order). Replicas stay attached
   after the sync while there is room (:mod:`oma.workflows.replicas`).
4. ``exports``  — per volume: reuse a live qemu-nbd export or start one (ExportManager).
5. ``replicate``— job → ``ready``; ``POST /replicate`` to the VMA with per-disk target URI and
   previous change ID (empty → full copy) and the job's ``verify``; job → ``replicating``. The
   poller takes over. A full sync right after a full sync of the same VM that failed or was
   stopped on the VMA, onto the same replica volumes (none re-created, same exports), asks the
   VMA to resume that copy (``resume_from_job``); the VMA answers whether it does (its snapshot
   must still be there) and the answer is stored as the job's ``resume`` event (:mod:`.resume`).

A failure ends the job ``failed`` with a class (``cloudstack``, ``device_not_found``,
``nbd_export``, ``vma_error``, ``vma_unreachable``, ``invalid_request``, ``attach_budget``,
``internal``) and the
error text (CloudStack's errortext included). An operator's stop request is honoured between
steps (job → ``stopped``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migration_common import get_logger, utcnow

from ..database.models import (
    CloudStackTarget,
    JobDisk,
    JobStatus,
    ReplicationJob,
    ReplicaVolume,
    VmaAppliance,
    VmContext,
    VmDisk,
)
from ..database.repos.jobs import finish_job
from ..errors import (
    CloudStackError,
    DeviceNotFoundError,
    NbdExportError,
    OmaError,
    VmaClientError,
    VmaUnreachable,
    WorkflowError,
)
from ..services import _queries as q
from . import replicas, resume
from .engine import Definition, Step, StepContext
from .kinds import REPLICATION

log = get_logger(__name__)

KIND = REPLICATION


class JobStopped(WorkflowError):
    """The operator asked to stop the job while it was being provisioned."""


class InvalidRequest(WorkflowError):
    """The job cannot run as requested (e.g. incremental without a previous sync)."""


@dataclass
class ReplicationServices:
    """What the replication steps talk to; built once per worker."""

    cloudstack_for: Callable[[CloudStackTarget], Any]  # -> oma.cloudstack.CloudStackClient
    vma_for: Callable[[VmaAppliance], Any]  # -> oma.vma_client.VmaClient
    exports: Any  # oma.nbd.ExportManager
    by_id_dir: Path
    device_timeout: float = 60.0
    wait_for_device: Callable[..., Path] | None = None
    attach_budget: int = 24


def volume_name(context_id: str, disk_key: str) -> str:
    """The deterministic CloudStack name of a context's replica volume for ``disk_key``."""
    return f"oma-{context_id[:8]}-{disk_key}"


def _sorted_disks(context_id: str) -> list[VmDisk]:
    rows = list(VmDisk.select().where(VmDisk.context == context_id))
    return sorted(rows, key=lambda d: (len(d.disk_key), d.disk_key))


def _volumes(context_id: str) -> dict[str, ReplicaVolume]:
    return {
        v.disk_key: v
        for v in ReplicaVolume.select().where(
            ReplicaVolume.context == context_id, ReplicaVolume.state != "deleted"
        )
    }


def context_target(context: VmContext) -> CloudStackTarget | None:
    """The context's CloudStack target, else the default (or oldest) one; None when none."""
    if context.target_id:
        target = CloudStackTarget.get_or_none(CloudStackTarget.id == context.target_id)
        if target is not None:
            return target
    return (
        CloudStackTarget.select()
        .order_by(CloudStackTarget.is_default.desc(), CloudStackTarget.created_at)
        .first()
    )


def _target_for(ctx: VmContext) -> CloudStackTarget:
    target = context_target(ctx)
    if target is None:
        raise InvalidRequest("no CloudStack target is configured", step="prepare")
    return target


class ReplicationWorkflow:
    """Builds the replication :class:`Definition` bound to a worker's services."""

    def __init__(self, services: ReplicationServices) -> None:
        self.s = services
        self.definition = Definition(
            KIND,
            [
                Step("prepare", self.prepare),
                Step("volumes", self.volumes, self.undo_volumes),
                Step("attach", self.attach),
                Step("exports", self.exports),
                Step("replicate", self.replicate),
            ],
            on_failure=self.on_failure,
        )

    # -- helpers --------------------------------------------------------------------------

    def _job(self, ctx: StepContext) -> ReplicationJob:
        job = ReplicationJob.get_by_id(ctx.workflow.job_id)
        if job.stop_requested:
            raise JobStopped("stop requested by the operator", step=ctx.step)
        if JobStatus(job.status).is_terminal:
            raise JobStopped(f"job is already {job.status}", step=ctx.step)
        return job

    def _cloudstack(self, ctx: StepContext) -> tuple[Any, CloudStackTarget]:
        target = CloudStackTarget.get_by_id(ctx.data["prepare"]["target_id"])
        return self.s.cloudstack_for(target), target

    def _set_status(
        self, job: ReplicationJob, status: JobStatus, message: str, **fields: Any
    ) -> None:
        now = utcnow()
        values: dict[Any, Any] = {"status": status.value, "updated_at": now, **fields}
        if job.started_at is None and "started_at" not in fields:
            values["started_at"] = now
        with q.write_transaction():
            (
                ReplicationJob.update(**values)
                .where(
                    ReplicationJob.id == job.id,
                    ReplicationJob.status.not_in(["completed", "failed", "stopped"]),
                )
                .execute()
            )
            if job.status != status.value:
                q.append_event(
                    job.id,
                    job.context_id,
                    "status",
                    message,
                    data={"from": job.status, "to": status.value},
                    at=now,
                )
        job.status = status.value

    # -- steps ----------------------------------------------------------------------------

    def prepare(self, ctx: StepContext) -> dict[str, Any]:
        """Job → provisioning; job_disks rows per source disk; resolve target and VMA."""
        job = self._job(ctx)
        context = VmContext.get_by_id(job.context_id)
        disks = _sorted_disks(context.id)
        if not disks:
            raise InvalidRequest(f"VM context {context.name} has no disks", step="prepare")
        if job.vma_id is None and context.vma_id is None:
            raise InvalidRequest(f"VM context {context.name} has no VMA", step="prepare")
        target = _target_for(context)
        if job.requested_type == "incremental":
            missing = [d.disk_key for d in disks if not d.change_id]
            if missing:
                raise InvalidRequest(
                    f"incremental requested but disk(s) {', '.join(missing)} have no previous "
                    "sync; run a full replication",
                    step="prepare",
                )
        self._set_status(
            job,
            JobStatus.PROVISIONING,
            "provisioning replica volumes",
            vma=job.vma_id or context.vma_id,
        )
        with q.write_transaction():
            existing = {d.disk_key for d in JobDisk.select().where(JobDisk.job == job.id)}
            for d in disks:
                if d.disk_key not in existing:
                    JobDisk.create(job=job.id, disk_key=d.disk_key, status="queued")
        return {"target_id": target.id, "disk_keys": [d.disk_key for d in disks]}

    def volumes(self, ctx: StepContext) -> dict[str, Any]:
        """Find or create one replica volume per source disk (matched by disk key)."""
        job = self._job(ctx)
        cs, target = self._cloudstack(ctx)
        created: list[str] = list(ctx.data.get("volumes", {}).get("created", []))
        have = _volumes(job.context_id)
        result: dict[str, str] = {}
        for disk in _sorted_disks(job.context_id):
            ctx.renew_lease()
            rv = have.get(disk.disk_key)
            if rv is not None and rv.cloudstack_volume_id:
                vol = cs.get_volume(rv.cloudstack_volume_id)
                if vol is None:  # deleted behind our back: forget it, sync this disk in full
                    rv.state, rv.updated_at = "deleted", utcnow()
                    rv.save()
                    rv = None
                elif rv.size_bytes < disk.capacity_bytes:
                    raise InvalidRequest(
                        f"disk {disk.disk_key} grew to {disk.capacity_bytes} bytes but its "
                        f"replica volume {rv.cloudstack_volume_id} has {rv.size_bytes}; "
                        "resize is not supported",
                        step="volumes",
                    )
            if rv is None or not rv.cloudstack_volume_id:
                rv = self._create_volume(ctx, cs, target, disk, rv, created)
            result[disk.disk_key] = rv.id
        return {"volumes": result, "created": created}

    def _create_volume(
        self,
        ctx: StepContext,
        cs: Any,
        target: CloudStackTarget,
        disk: VmDisk,
        rv: ReplicaVolume | None,
        created: list[str],
    ) -> ReplicaVolume:
        name = volume_name(disk.context_id, disk.disk_key)
        if rv is None:
            rv = ReplicaVolume.create(
                context=disk.context_id,
                disk_key=disk.disk_key,
                name=name,
                size_bytes=disk.capacity_bytes,
                state="creating",
            )
        if rv.id not in created:
            created.append(rv.id)
        ctx.record(created=created)
        # a volume created just before a crash exists in CloudStack but not in our row
        found = [
            v
            for v in cs.list_volumes(name=name)
            if v.get("state") not in ("Destroy", "Expunging", "Expunged")
        ]
        vol = found[0] if found else None
        if vol is None:
            offering = target.disk_offering_id
            if not offering:
                raise InvalidRequest("the CloudStack target has no disk offering", step="volumes")
            vol = cs.create_volume(
                name,
                zone_id=target.zone_id,
                disk_offering_id=offering,
                size_bytes=disk.capacity_bytes,
            )
        now = utcnow()
        with q.write_transaction():
            rv.cloudstack_volume_id = vol["id"]
            rv.size_bytes = int(vol.get("size") or disk.capacity_bytes)
            rv.state, rv.updated_at = "allocated", now
            rv.save()
            # a new volume holds nothing: the disk's old change ID does not describe it
            (
                VmDisk.update(
                    replica_volume=rv.id, change_id=None, change_id_at=None, updated_at=now
                )
                .where(VmDisk.id == disk.id)
                .execute()
            )
            q.append_event(
                ctx.workflow.job_id,
                disk.context_id,
                "volume_created",
                f"created replica volume {vol['id']} for disk {disk.disk_key}",
                data={"volume_id": vol["id"], "size_bytes": rv.size_bytes},
                at=now,
            )
        return rv

    def undo_volumes(self, ctx: StepContext) -> None:
        """Delete the volumes this run created (stop export, detach first); keep reused ones."""
        created = ctx.data.get("volumes", {}).get("created", [])
        if not created:
            return
        cs, target = self._cloudstack(ctx)
        for rv_id in created:
            rv = ReplicaVolume.get_or_none(ReplicaVolume.id == rv_id)
            if rv is None or rv.state == "deleted":
                continue
            replicas.delete_replica(
                self.s.exports, cs, target, rv, why="created by the failed attempt"
            )

    def attach(self, ctx: StepContext) -> dict[str, Any]:
        """Attach each replica volume to the OMA VM (within the attach budget, detaching idle
        replicas when it needs their room) and find its block device by serial."""
        job = self._job(ctx)
        cs, target = self._cloudstack(ctx)
        devices: dict[str, str] = {}
        for key, rv_id in ctx.data["volumes"]["volumes"].items():
            ctx.renew_lease()
            rv = ReplicaVolume.get_by_id(rv_id)
            devices[key] = replicas.attach_to_oma(
                self.s, cs, target, rv, job_id=job.id, renew=ctx.renew_lease
            )
        return {"devices": devices}

    def exports(self, ctx: StepContext) -> dict[str, Any]:
        """Reuse a live export per volume or start one; record its PID and port."""
        job = self._job(ctx)
        uris: dict[str, str] = {}
        for key, rv_id in ctx.data["volumes"]["volumes"].items():
            rv = ReplicaVolume.get_by_id(rv_id)
            uris[key] = replicas.ensure_export(self.s.exports, rv, job_id=job.id)
        return {"uris": uris}

    def replicate(self, ctx: StepContext) -> dict[str, Any]:
        """Job → ready; ask the VMA to replicate; job → replicating."""
        job = self._job(ctx)
        context = VmContext.get_by_id(job.context_id)
        disks = {d.disk_key: d for d in _sorted_disks(context.id)}
        uris = ctx.data["exports"]["uris"]
        full = job.requested_type == "full"
        payload = []
        for key, uri in uris.items():
            previous = None if full else disks[key].change_id
            payload.append({"disk_key": key, "target_uri": uri, "previous_change_id": previous})
        effective = "incremental" if all(p["previous_change_id"] for p in payload) else "full"
        with q.write_transaction():
            for p in payload:
                (
                    JobDisk.update(
                        target_uri=p["target_uri"],
                        previous_change_id=p["previous_change_id"],
                        sync_type="incremental" if p["previous_change_id"] else "full",
                        updated_at=utcnow(),
                    )
                    .where(JobDisk.job == job.id, JobDisk.disk_key == p["disk_key"])
                    .execute()
                )
            self._set_status(
                job,
                JobStatus.READY,
                f"replica targets ready ({effective} sync)",
                effective_type=effective,
            )
        vma = VmaAppliance.get_by_id(job.vma_id or context.vma_id)
        client = self.s.vma_for(vma)
        # fresh CloudStack volumes read as zeroes: the copy may skip writing holes
        fresh = set(ctx.data["volumes"].get("created", []))
        all_fresh = bool(fresh) and set(ctx.data["volumes"]["volumes"].values()) <= fresh
        resume_from = (
            resume.previous_full_job(job, payload) if effective == "full" and not fresh else None
        )
        answer = client.replicate(
            job.id,
            context.vm_id,
            payload,
            verify=bool(job.verify),
            target_is_zero=effective == "full" and all_fresh,
            resume_from_job=resume_from,
        )
        if resume_from:
            resume.record(job, answer)
        now = utcnow()
        self._set_status(
            job,
            JobStatus.REPLICATING,
            f"VMA {vma.name} accepted the job",
            vma_seen_at=now,
            last_progress_at=now,
        )
        return {"effective_type": effective}

    # -- failure --------------------------------------------------------------------------

    def on_failure(self, ctx: StepContext, exc: BaseException) -> None:
        """Finish the job: stopped on a stop request, else failed with a class and message."""
        job_id = ctx.workflow.job_id
        now = utcnow()
        with q.write_transaction():
            if isinstance(exc, JobStopped):
                finish_job(job_id, JobStatus.STOPPED, now=now, message=str(exc))
                return
            error_class, message = classify_error(exc)
            q.fail_disks(job_id, message, now)
            finish_job(
                job_id,
                JobStatus.FAILED,
                now=now,
                error_class=error_class,
                message=f"{ctx.step}: {message}",
            )


def classify_error(exc: BaseException) -> tuple[str, str]:
    """(error_class, message) of a provisioning failure."""
    if isinstance(exc, CloudStackError):
        return "cloudstack", str(exc)
    if isinstance(exc, DeviceNotFoundError):
        return "device_not_found", str(exc)
    if isinstance(exc, NbdExportError):
        return "nbd_export", str(exc)
    if isinstance(exc, VmaUnreachable):
        return "vma_unreachable", str(exc)
    if isinstance(exc, VmaClientError):
        return "vma_error", str(exc)
    if isinstance(exc, InvalidRequest):
        return "invalid_request", str(exc)
    if isinstance(exc, replicas.NoRoom):
        return "attach_budget", str(exc)
    if isinstance(exc, OmaError):
        return "internal", str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"
