"""The progress and job contract shared by migratekit, the VMA and the OMA.

One definition of every status and phase word (docs/architecture.md §3). The models validate
on construction; :func:`parse_disk_update` and :func:`parse_job_progress` turn pydantic's
errors into :class:`ContractError` naming the offending field.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ._errors import ContractError
from ._text import ONE_LINE, TEXT, printable
from ._time import utcnow


class Status(StrEnum):
    """Status of a disk sync or of a whole job; the same words everywhere."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and stopped: nothing will change any more."""
        return self in (Status.COMPLETED, Status.FAILED, Status.STOPPED)


class Phase(StrEnum):
    """What a disk sync (or job) is doing now."""

    SNAPSHOT = "snapshot"
    COPY = "copy"
    VERIFY = "verify"
    DONE = "done"


class SyncType(StrEnum):
    """Full copy (allocated extents) or incremental (changed extents only)."""

    FULL = "full"
    INCREMENTAL = "incremental"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False, validate_assignment=True)

    def to_json(self) -> str:
        """Serialise to the wire format (JSON text)."""
        return self.model_dump_json()

    def to_dict(self) -> dict[str, Any]:
        """Serialise to a JSON-compatible dict."""
        return self.model_dump(mode="json")


def _check_counters(total: int, done: int, written: int = 0, zeroed: int = 0) -> None:
    if done > total:
        raise ValueError(f"bytes_done ({done}) exceeds bytes_total ({total})")
    if written + zeroed > done:
        raise ValueError(
            f"bytes_written + bytes_zeroed ({written + zeroed}) exceeds bytes_done ({done})"
        )


SHA256_HEX = r"^[0-9a-f]{64}$"
ErrorText = Annotated[str, BeforeValidator(printable), Field(pattern=TEXT)]


class DiskProgress(_Model):
    """One disk's progress update (migratekit → VMA), and the per-disk part of a job.

    Verification (a sync run with ``--verify``) adds ``source_sha256`` and ``target_sha256``:
    sha256 of the bytes the sync covered (the whole disk for a full copy, the changed ranges in
    order for an incremental) read back from the source and from the target, and ``verified``:
    true when they are equal, false when they differ. All three stay null for a sync that did
    not verify (or has not verified yet), so senders without them still validate.

    ``limit_bps`` is the bandwidth limit in force for the job when the update was made
    (bytes per second shared by all of the job's disks; null: unlimited or not reported).
    """

    disk_key: str = Field(min_length=1, max_length=64, pattern=ONE_LINE)
    sync_type: SyncType = SyncType.FULL
    phase: Phase = Phase.COPY
    status: Status = Status.RUNNING
    bytes_total: int = Field(default=0, ge=0)
    bytes_done: int = Field(default=0, ge=0)
    bytes_written: int = Field(default=0, ge=0)
    bytes_zeroed: int = Field(default=0, ge=0)
    throughput_bps: float = Field(default=0.0, ge=0)
    change_id: str | None = Field(default=None, max_length=512, pattern=ONE_LINE)
    error: ErrorText | None = None
    seq: int = Field(default=0, ge=0)
    sent_at: datetime = Field(default_factory=utcnow)
    verified: bool | None = None
    source_sha256: str | None = Field(default=None, pattern=SHA256_HEX)
    target_sha256: str | None = Field(default=None, pattern=SHA256_HEX)
    limit_bps: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DiskProgress:
        _check_counters(self.bytes_total, self.bytes_done, self.bytes_written, self.bytes_zeroed)
        if self.status is Status.FAILED and not self.error:
            raise ValueError("error must be set when status is failed")
        if self.verified is not None:
            if self.source_sha256 is None or self.target_sha256 is None:
                raise ValueError("verified needs source_sha256 and target_sha256")
            if self.verified != (self.source_sha256 == self.target_sha256):
                raise ValueError(
                    f"verified is {str(self.verified).lower()} but the digests "
                    + ("differ" if self.verified else "are equal")
                )
        return self

    @property
    def percent(self) -> float:
        """Share of bytes_total done, 0-100 (100 when there is nothing to move and it is done)."""
        if self.bytes_total == 0:
            return 100.0 if self.status is Status.COMPLETED else 0.0
        return round(100.0 * self.bytes_done / self.bytes_total, 2)


class JobProgress(_Model):
    """A job's aggregated progress (VMA → OMA), with its disks."""

    job_id: str = Field(min_length=1)
    status: Status = Status.QUEUED
    sync_type: SyncType = SyncType.FULL
    phase: Phase = Phase.SNAPSHOT
    percent: float = Field(default=0.0, ge=0, le=100)
    bytes_total: int = Field(default=0, ge=0)
    bytes_done: int = Field(default=0, ge=0)
    throughput_bps: float = Field(default=0.0, ge=0)
    eta_seconds: float | None = Field(default=None, ge=0)
    started_at: datetime | None = None
    updated_at: datetime | None = None
    error: ErrorText | None = None
    disks: list[DiskProgress] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> JobProgress:
        _check_counters(self.bytes_total, self.bytes_done)
        return self

    @classmethod
    def aggregate(
        cls,
        job_id: str,
        disks: list[DiskProgress],
        *,
        status: Status,
        sync_type: SyncType | None = None,
        started_at: datetime | None = None,
        error: str | None = None,
    ) -> JobProgress:
        """Build a job's progress from its disks: sums, percent, throughput and ETA."""
        total = sum(d.bytes_total for d in disks)
        done = sum(d.bytes_done for d in disks)
        rate = sum(d.throughput_bps for d in disks if d.status is Status.RUNNING)
        if status is Status.COMPLETED:
            percent = 100.0
        elif total:
            percent = round(100.0 * done / total, 2)
        else:
            percent = 0.0
        phases = [d.phase for d in disks]
        order = [Phase.SNAPSHOT, Phase.COPY, Phase.VERIFY, Phase.DONE]
        phase = min(phases, key=order.index) if phases else Phase.SNAPSHOT
        eta = (total - done) / rate if rate > 0 and not status.is_terminal else None
        updated = max((d.sent_at for d in disks), default=None)
        if sync_type is None:
            sync_type = disks[0].sync_type if disks else SyncType.FULL
        return cls(
            job_id=job_id,
            status=status,
            sync_type=sync_type,
            phase=phase,
            percent=percent,
            bytes_total=total,
            bytes_done=done,
            throughput_bps=rate,
            eta_seconds=eta,
            started_at=started_at,
            updated_at=updated,
            error=error,
            disks=disks,
        )


def _contract_error(exc: ValidationError) -> ContractError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    return ContractError(msg, field=loc or None)


def parse_disk_update(data: dict[str, Any] | str | bytes) -> DiskProgress:
    """Validate a per-disk update (dict or JSON text); raise ContractError naming the field."""
    try:
        if isinstance(data, str | bytes):
            return DiskProgress.model_validate_json(data)
        return DiskProgress.model_validate(data)
    except ValidationError as exc:
        raise _contract_error(exc) from exc


def parse_job_progress(data: dict[str, Any] | str | bytes) -> JobProgress:
    """Validate a job progress document (dict or JSON); raise ContractError naming the field."""
    try:
        if isinstance(data, str | bytes):
            return JobProgress.model_validate_json(data)
        return JobProgress.model_validate(data)
    except ValidationError as exc:
        raise _contract_error(exc) from exc
