"""The OMA's tables as peewee models (the schema itself is created by numbered migrations).

Status words: replication jobs use :class:`JobStatus`; per-disk rows use
``migration_common.Status`` (queued|running|completed|failed|stopped) and ``Phase``.

"At most one active job per VM" is enforced by the database: a job row carries
``active_context_id`` (unique, nullable) equal to its context's id while the job is active
and NULL once it is terminal, so a second active job for the same context cannot be inserted
on any of the three databases. ``vm_contexts.active_job_id`` mirrors it for readers and is
changed in the same transaction (see ``repos/jobs.py``).
"""

from __future__ import annotations

from enum import StrEnum

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    TextField,
)

from .db import BaseModel
from .fields import JSONField, UtcDateTimeField, UUIDStrField, new_id, now


class JobStatus(StrEnum):
    """Replication job states (docs/architecture.md §4)."""

    PENDING = "pending"
    PROVISIONING = "provisioning"
    READY = "ready"
    REPLICATING = "replicating"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and stopped."""
        return self in TERMINAL_JOB_STATUSES


ACTIVE_JOB_STATUSES = (
    JobStatus.PENDING,
    JobStatus.PROVISIONING,
    JobStatus.READY,
    JobStatus.REPLICATING,
)
TERMINAL_JOB_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)


class RequestedType(StrEnum):
    """What the operator asked for; ``auto`` lets the worker pick full or incremental."""

    AUTO = "auto"
    FULL = "full"
    INCREMENTAL = "incremental"


class ContextState(StrEnum):
    """VM context states (docs/architecture.md §4)."""

    DISCOVERED = "discovered"
    REPLICATING = "replicating"
    READY_FOR_FAILOVER = "ready_for_failover"
    FAILED_OVER_TEST = "failed_over_test"
    FAILED_OVER_LIVE = "failed_over_live"
    FAILED = "failed"


class Role(StrEnum):
    """API token roles: admin > operator > viewer (read-only)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class StepStatus(StrEnum):
    """Workflow step states."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    COMPENSATED = "compensated"


class VmaAppliance(BaseModel):
    """A registered VMA: where it is and its API token (encrypted)."""

    id = UUIDStrField(primary_key=True, default=new_id)
    name = CharField(max_length=100, unique=True)
    url = CharField(max_length=500)
    token_encrypted = TextField()
    version = CharField(max_length=50, null=True)
    last_seen_at = UtcDateTimeField(null=True)
    last_error = TextField(null=True)
    # the VMA's client certificate, pinned at enrollment (sha256 hex and RFC 4514 subject)
    cert_fingerprint = CharField(max_length=64, null=True)
    cert_subject = TextField(null=True)
    revoked_at = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "vma_appliances"


class VmaEnrollment(BaseModel):
    """A one-time enrollment code for one VMA name (only its SHA-256 is stored)."""

    id = UUIDStrField(primary_key=True, default=new_id)
    vma_name = CharField(max_length=100)
    code_hash = CharField(max_length=64, unique=True)
    url = CharField(max_length=500, null=True)
    expires_at = UtcDateTimeField()
    used_at = UtcDateTimeField(null=True)
    vma_id = UUIDStrField(null=True)
    created_by = CharField(max_length=100, null=True)
    created_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "vma_enrollments"


class VmwareCredential(BaseModel):
    """A saved vCenter login; the password is encrypted."""

    id = UUIDStrField(primary_key=True, default=new_id)
    name = CharField(max_length=100, unique=True)
    vcenter = CharField(max_length=255)
    username = CharField(max_length=255)
    password_encrypted = TextField()
    datacenter = CharField(max_length=255, null=True)
    insecure = BooleanField(default=False)
    is_default = BooleanField(default=False)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "vmware_credentials"


class CloudStackTarget(BaseModel):
    """A CloudStack endpoint, its API key pair (both encrypted) and placement choices."""

    id = UUIDStrField(primary_key=True, default=new_id)
    name = CharField(max_length=100, unique=True)
    endpoint = CharField(max_length=500)
    api_key = CharField(max_length=255)  # a hint (****1a2b) once api_key_encrypted is set
    api_key_encrypted = TextField(null=True)
    secret_key_encrypted = TextField()
    zone_id = CharField(max_length=64)
    oma_vm_id = CharField(max_length=64)
    disk_offering_id = CharField(max_length=64, null=True)
    disk_size_max_gib = IntegerField(null=True)  # operator's custom disk size limit (GB)
    disk_offering_facts = JSONField(null=True)  # the disk offering as last read from CloudStack
    verify_tls = BooleanField(default=True)
    is_default = BooleanField(default=False)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "cloudstack_targets"


class VmContext(BaseModel):
    """One protected VM (unique per vCenter + VMware VM uuid)."""

    id = UUIDStrField(primary_key=True, default=new_id)
    vma = ForeignKeyField(VmaAppliance, null=True, backref="contexts", on_delete="SET NULL")
    credential = ForeignKeyField(
        VmwareCredential, null=True, backref="contexts", on_delete="SET NULL"
    )
    target = ForeignKeyField(CloudStackTarget, null=True, backref="contexts", on_delete="SET NULL")
    vcenter = CharField(max_length=255)
    vm_id = CharField(max_length=100)
    name = CharField(max_length=255)
    path = CharField(max_length=1000, null=True)
    state = CharField(max_length=32, default=ContextState.DISCOVERED.value, index=True)
    spec = JSONField(null=True)
    failover_defaults = JSONField(null=True)
    replication_defaults = JSONField(null=True)  # {"verify": true}: what a request leaves out
    ready_for_failover = BooleanField(default=False)
    active_job_id = UUIDStrField(null=True, unique=True)
    last_job_id = UUIDStrField(null=True)
    last_success_at = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "vm_contexts"
        indexes = (
            (("vcenter", "vm_id"), True),
            # the API's list: by name, alone or per state or VMA (migration 0007)
            (("name", "id"), False),
            (("state", "name", "id"), False),
            (("vma", "name", "id"), False),
        )


class ReplicaVolume(BaseModel):
    """The CloudStack volume that holds one source disk's replica."""

    id = UUIDStrField(primary_key=True, default=new_id)
    context = ForeignKeyField(VmContext, backref="volumes", on_delete="CASCADE")
    disk_key = CharField(max_length=32)
    cloudstack_volume_id = CharField(max_length=64, null=True, unique=True)
    name = CharField(max_length=255, null=True)
    size_bytes = BigIntegerField()
    attached_vm_id = CharField(max_length=64, null=True)
    device_id = IntegerField(null=True)
    device_path = CharField(max_length=500, null=True)
    state = CharField(max_length=32, default="creating", index=True)
    error = TextField(null=True)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "replica_volumes"
        indexes = ((("context", "disk_key"), False),)


class VmDisk(BaseModel):
    """A source disk of a context, stable per (context, disk key): capacity and change ID."""

    id = UUIDStrField(primary_key=True, default=new_id)
    context = ForeignKeyField(VmContext, backref="disks", on_delete="CASCADE")
    disk_key = CharField(max_length=32)
    capacity_bytes = BigIntegerField()
    label = CharField(max_length=255, null=True)
    unit_number = IntegerField(null=True)
    controller_key = IntegerField(null=True)
    path = CharField(max_length=1000, null=True)
    replica_volume = ForeignKeyField(
        ReplicaVolume, null=True, backref="disks", on_delete="SET NULL"
    )
    change_id = CharField(max_length=255, null=True)
    change_id_at = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "vm_disks"
        indexes = ((("context", "disk_key"), True),)


class ReplicationJob(BaseModel):
    """One replication (full or incremental) of a VM context."""

    id = UUIDStrField(primary_key=True, default=new_id)
    context = ForeignKeyField(VmContext, backref="jobs", on_delete="CASCADE")
    # the context's name, copied when the job is created (a context's name never changes), so
    # a page of jobs reads no context row (migration 0014); null: read the context's
    vm_name = CharField(max_length=255, null=True)
    vma = ForeignKeyField(VmaAppliance, null=True, backref="jobs", on_delete="SET NULL")
    requested_type = CharField(max_length=16, default=RequestedType.AUTO.value)
    verify = BooleanField(default=False)  # the VMA verifies every disk (sha256 read-back)
    effective_type = CharField(max_length=16, null=True)
    status = CharField(max_length=16, default=JobStatus.PENDING.value, index=True)
    active_context_id = UUIDStrField(null=True, unique=True)
    phase = CharField(max_length=16, null=True)
    percent = FloatField(default=0.0)
    bytes_total = BigIntegerField(default=0)
    bytes_done = BigIntegerField(default=0)
    throughput_bps = FloatField(default=0.0)
    eta_seconds = FloatField(null=True)
    error_class = CharField(max_length=64, null=True)
    error_message = TextField(null=True)
    attempts = IntegerField(default=0)
    claimed_by = CharField(max_length=255, null=True)
    lease_until = UtcDateTimeField(null=True)
    vma_seen_at = UtcDateTimeField(null=True)
    last_progress_at = UtcDateTimeField(null=True)
    stop_requested = BooleanField(default=False)
    wait_reason = TextField(null=True)
    created_at = UtcDateTimeField(default=now, index=True)
    started_at = UtcDateTimeField(null=True)
    updated_at = UtcDateTimeField(default=now)
    finished_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "replication_jobs"
        # the API's list: newest first, alone or per VM, VMA or status (migration 0007)
        indexes = (
            (("created_at", "id"), False),
            (("context", "created_at", "id"), False),
            (("vma", "created_at", "id"), False),
            (("status", "created_at", "id"), False),
        )


class JobDisk(BaseModel):
    """Per-disk progress of one job."""

    id = UUIDStrField(primary_key=True, default=new_id)
    job = ForeignKeyField(ReplicationJob, backref="disks", on_delete="CASCADE")
    disk_key = CharField(max_length=32)
    status = CharField(max_length=16, default="queued")
    phase = CharField(max_length=16, null=True)
    sync_type = CharField(max_length=16, null=True)
    bytes_total = BigIntegerField(default=0)
    bytes_done = BigIntegerField(default=0)
    bytes_written = BigIntegerField(default=0)
    bytes_zeroed = BigIntegerField(default=0)
    throughput_bps = FloatField(default=0.0)
    change_id = CharField(max_length=255, null=True)
    previous_change_id = CharField(max_length=255, null=True)
    target_uri = CharField(max_length=500, null=True)
    error = TextField(null=True)
    seq = IntegerField(default=0)
    verified = BooleanField(null=True)  # null: not verified; false: the digests differ
    source_sha256 = CharField(max_length=64, null=True)
    target_sha256 = CharField(max_length=64, null=True)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "job_disks"
        indexes = ((("job", "disk_key"), True),)


class NbdExport(BaseModel):
    """A running (or recorded) qemu-nbd export of a replica volume."""

    id = UUIDStrField(primary_key=True, default=new_id)
    volume = ForeignKeyField(ReplicaVolume, backref="exports", on_delete="CASCADE")
    host = CharField(max_length=255)
    port = IntegerField()
    export_name = CharField(max_length=255)
    device_path = CharField(max_length=500, null=True)
    pid = IntegerField(null=True)
    worker_id = CharField(max_length=255, null=True)
    state = CharField(max_length=16, default="starting", index=True)
    tls = BooleanField(default=False)  # the export requires TLS: its URI is nbds://
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "nbd_exports"


class ApiToken(BaseModel):
    """An API bearer token; only its HMAC-SHA256 hash is stored."""

    id = UUIDStrField(primary_key=True, default=new_id)
    name = CharField(max_length=100, unique=True)
    role = CharField(max_length=16)
    token_hash = CharField(max_length=128, unique=True)
    created_at = UtcDateTimeField(default=now)
    last_used_at = UtcDateTimeField(null=True)
    revoked_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "api_tokens"


class JobEvent(BaseModel):
    """One line of a job's (or context's) timeline, shown to operators."""

    id = UUIDStrField(primary_key=True, default=new_id)
    job = ForeignKeyField(ReplicationJob, null=True, backref="events", on_delete="CASCADE")
    context = ForeignKeyField(VmContext, null=True, backref="events", on_delete="CASCADE")
    at = UtcDateTimeField(default=now, index=True)
    kind = CharField(max_length=64)
    message = TextField()
    data = JSONField(null=True)

    class Meta:
        table_name = "job_events"
        # a job's or a VM's newest events (migration 0007)
        indexes = ((("job", "at", "id"), False), (("context", "at", "id"), False))


class Workflow(BaseModel):
    """A multi-step operation (replication setup, failover, rollback, cleanup) of a context."""

    id = UUIDStrField(primary_key=True, default=new_id)
    kind = CharField(max_length=32)
    context = ForeignKeyField(VmContext, null=True, backref="workflows", on_delete="CASCADE")
    job = ForeignKeyField(ReplicationJob, null=True, backref="workflows", on_delete="CASCADE")
    status = CharField(max_length=16, default="pending", index=True)
    params = JSONField(null=True)
    result = JSONField(null=True)
    error = TextField(null=True)
    claimed_by = CharField(max_length=255, null=True)
    lease_until = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)
    finished_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "workflows"
        indexes = ((("created_at", "id"), False),)  # newest first (migration 0007)


class WorkflowStep(BaseModel):
    """One named, ordered, idempotent step of a workflow."""

    id = UUIDStrField(primary_key=True, default=new_id)
    workflow = ForeignKeyField(Workflow, backref="steps", on_delete="CASCADE")
    name = CharField(max_length=64)
    position = IntegerField()
    status = CharField(max_length=16, default=StepStatus.PENDING.value)
    attempts = IntegerField(default=0)
    error = TextField(null=True)
    data = JSONField(null=True)
    claimed_by = CharField(max_length=255, null=True)
    lease_until = UtcDateTimeField(null=True)
    started_at = UtcDateTimeField(null=True)
    finished_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "workflow_steps"
        indexes = ((("workflow", "name"), True),)


class HealthProbe(BaseModel):
    """The one row ``/health`` writes, proving the database accepts writes."""

    id = IntegerField(primary_key=True)
    checked_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "health_probe"


class WorkerHeartbeat(BaseModel):
    """The last sign of life of an ``oma worker`` process (written every tick)."""

    worker_id = CharField(max_length=255, primary_key=True)
    hostname = CharField(max_length=255)
    pid = IntegerField()
    version = CharField(max_length=50, null=True)
    started_at = UtcDateTimeField(default=now)
    seen_at = UtcDateTimeField(default=now, index=True)

    class Meta:
        table_name = "worker_heartbeats"


ALL_MODELS: tuple[type[BaseModel], ...] = (
    VmaAppliance,
    VmaEnrollment,
    VmwareCredential,
    CloudStackTarget,
    VmContext,
    ReplicaVolume,
    VmDisk,
    ReplicationJob,
    JobDisk,
    NbdExport,
    ApiToken,
    JobEvent,
    Workflow,
    WorkflowStep,
    WorkerHeartbeat,
    HealthProbe,
)
"""Every model, in dependency order."""


class MachineGroup(BaseModel):
    """A wave of VMs: its jobs are admitted before those of lower ``priority`` groups (higher
    first; VMs in no group count as priority 0), at most ``max_concurrent`` at once (0: no
    limit)."""

    id = UUIDStrField(primary_key=True, default=new_id)
    name = CharField(max_length=100, unique=True)
    description = TextField(null=True)
    priority = IntegerField(default=0)
    max_concurrent = IntegerField(default=0)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "machine_groups"


class GroupMember(BaseModel):
    """A VM of a group; a VM belongs to at most one group (``context`` is unique)."""

    id = UUIDStrField(primary_key=True, default=new_id)
    group = ForeignKeyField(MachineGroup, backref="members", on_delete="CASCADE")
    context = ForeignKeyField(VmContext, unique=True, backref="membership", on_delete="CASCADE")
    added_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "machine_group_members"


class Schedule(BaseModel):
    """Replications on a 5-field cron in a timezone, for one VM or every VM of a group.

    Occurrences before ``active_since`` (set when the schedule is created, re-enabled or its
    timing changes) never fire.
    """

    id = UUIDStrField(primary_key=True, default=new_id)
    name = CharField(max_length=100, unique=True)
    cron = CharField(max_length=100)
    timezone = CharField(max_length=64, default="UTC")
    enabled = BooleanField(default=True)
    skip_if_running = BooleanField(default=True)
    context = ForeignKeyField(VmContext, null=True, backref="schedules", on_delete="CASCADE")
    group = ForeignKeyField(MachineGroup, null=True, backref="schedules", on_delete="CASCADE")
    replication_type = CharField(max_length=16, default=RequestedType.AUTO.value)
    active_since = UtcDateTimeField(default=now)
    created_at = UtcDateTimeField(default=now)
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "schedules"


class ScheduleRun(BaseModel):
    """One firing of a schedule: a cron ``occurrence`` (unique per schedule, so no occurrence
    fires twice, whatever the number of workers) or a manual run (``trigger`` manual)."""

    id = UUIDStrField(primary_key=True, default=new_id)
    schedule = ForeignKeyField(Schedule, backref="runs", on_delete="CASCADE")
    occurrence = UtcDateTimeField()
    trigger = CharField(max_length=16, default="schedule")
    started_at = UtcDateTimeField(default=now)
    finished_at = UtcDateTimeField(null=True)
    eligible = IntegerField(default=0)
    created = IntegerField(default=0)
    skipped = IntegerField(default=0)

    class Meta:
        table_name = "schedule_runs"
        indexes = (
            (("schedule", "occurrence"), True),
            # newest first, alone or per schedule (migration 0007)
            (("started_at", "id"), False),
            (("schedule", "started_at", "id"), False),
        )


class ScheduleRunVm(BaseModel):
    """What a run did for one VM: ``result`` created (``job_id``), skipped (``reason``) or
    deferred (waits for the VM's active job to end), then the job's ``outcome``."""

    id = UUIDStrField(primary_key=True, default=new_id)
    run = ForeignKeyField(ScheduleRun, backref="vms", on_delete="CASCADE")
    context = ForeignKeyField(VmContext, null=True, on_delete="SET NULL")
    vm_name = CharField(max_length=255)
    result = CharField(max_length=16)
    reason = TextField(null=True)
    job_id = UUIDStrField(null=True, index=True)
    outcome = CharField(max_length=16, null=True)
    outcome_message = TextField(null=True)
    finished_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "schedule_run_vms"


ALL_MODELS += (MachineGroup, GroupMember, Schedule, ScheduleRun, ScheduleRunVm)


class BandwidthLimit(BaseModel):
    """A bandwidth policy (migration 0009): global (``id`` ``global``), of a VMA
    (``vma:<id>``) or of a job (``job:<id>``); evaluated by :mod:`oma.services.bandwidth`."""

    id = CharField(primary_key=True, max_length=64)
    scope = CharField(max_length=8)  # global | vma | job
    vma = ForeignKeyField(VmaAppliance, null=True, backref="+", on_delete="CASCADE")
    job = ForeignKeyField(ReplicationJob, null=True, backref="+", on_delete="CASCADE")
    rate_bps = BigIntegerField(null=True)  # outside the windows; null: unlimited
    timezone = CharField(max_length=64, default="UTC")
    windows = JSONField(null=True)  # [{days, start, end, rate_bps}], first match wins
    updated_at = UtcDateTimeField(default=now)

    class Meta:
        table_name = "bandwidth_limits"


ALL_MODELS += (BandwidthLimit,)
