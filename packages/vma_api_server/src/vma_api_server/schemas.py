"""Request bodies, validated with pydantic; a failure becomes a 422 naming the field.

Unknown fields are rejected (``extra="forbid"``) so a misspelt option never passes silently.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from migration_common import ContractError, Status, canonical_vm_id, parse_json_body
from migration_common._models import ONE_LINE
from vma.services.runner import DiskSpec, ReplicateSpec

from .errors import ApiError, from_validation

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# what migratekit can open: TCP (nbd://), TLS (nbds://) or a unix socket (nbd+unix://)
NBD_URI_PATTERN = r"^(nbd|nbds|nbd\+unix|nbds\+unix)://[!-~]*$"
_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"

M = TypeVar("M", bound=BaseModel)


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


Q = TypeVar("Q", bound=_Query)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DiskIn(_Body):
    """One disk of a replicate request."""

    disk_key: str = Field(min_length=1, max_length=64, pattern=ONE_LINE)
    target_uri: str = Field(
        pattern=NBD_URI_PATTERN, max_length=2048, description="nbd://, nbds:// or nbd+unix:// URI"
    )
    previous_change_id: str | None = Field(
        default=None, max_length=512, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$"
    )

    @field_validator("previous_change_id")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class OptionsIn(_Body):
    """Replication options."""

    verify: bool = False
    target_is_zero: bool = False


class ReplicateIn(_Body):
    """``POST /api/v1/replicate``."""

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    # a UUID or a managed object id: printable ASCII (surrounding blanks are stripped)
    vm_id: str = Field(min_length=1, max_length=128, pattern=r"^ *[!-~]+ *$")
    disks: list[DiskIn] = Field(min_length=1, max_length=64)
    options: OptionsIn = Field(default_factory=OptionsIn)
    # continue this failed full job's copy (its snapshot and checkpoints) when it fits
    resume_from_job: str | None = Field(default=None, pattern=JOB_ID_PATTERN)

    @field_validator("vm_id", mode="before")
    @classmethod
    def _canonical_vm_id(cls, value: object) -> str:
        # before whitespace stripping, so a control character at either end is refused too
        return canonical_vm_id(value)

    @field_validator("disks")
    @classmethod
    def _unique_keys(cls, disks: list[DiskIn]) -> list[DiskIn]:
        keys = [d.disk_key for d in disks]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"disk_key listed more than once: {', '.join(dupes)}")
        return disks

    def to_spec(self) -> ReplicateSpec:
        """The runner's view of this request."""
        return ReplicateSpec(
            job_id=self.job_id,
            vm_id=self.vm_id,
            disks=tuple(
                DiskSpec(d.disk_key, d.target_uri, d.previous_change_id) for d in self.disks
            ),
            verify=self.options.verify,
            target_is_zero=self.options.target_is_zero,
            resume_from_job=self.resume_from_job,
        )


class DiscoverIn(_Body):
    """``POST /api/v1/discover``."""

    vcenter: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    datacenter: str | None = None
    insecure: bool = False


class PowerOffIn(_Body):
    """``POST /api/v1/vms/{vm_id}/power-off``."""

    graceful: bool = True
    timeout_s: float | None = Field(default=None, ge=0, le=86400)
    force: bool = True


class BandwidthIn(_Body):
    """``PUT /api/v1/jobs/{job_id}/bandwidth``: bytes per second, null (or 0) for none."""

    limit_bps: int | None = Field(ge=0, description="bytes per second; null: unlimited")


class EmptyIn(_Body):
    """A body that carries nothing (``{}`` or none)."""


class JobsQuery(_Query):
    """``GET /api/v1/jobs``."""

    status: Literal[tuple(s.value for s in Status)] | None = None  # type: ignore[valid-type]
    limit: int = Field(100, ge=1, le=1000)


class LogQuery(_Query):
    """``GET /api/v1/jobs/{job_id}/log``."""

    tail_bytes: int = Field(65536, ge=1, le=1 << 20)


class ProgressQuery(_Query):
    """``GET /api/v1/progress``: at most 200 job ids."""

    job_ids: str = Field(pattern=f"^{_ID}(,{_ID}){{0,199}}$", description="comma-separated")


QUERIES = (JobsQuery, LogQuery, ProgressQuery)


def query_args(model: type[Q]) -> Q:
    """The request's query parameters as ``model`` (a 400 naming the field otherwise)."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        error = from_validation(exc)
        error.status = 400
        raise error from None


def json_body(model: type[M], *, optional: bool = False) -> M:
    """Parse the request's JSON body into ``model``; 400 when it is not a JSON object (or
    nests too deep, or holds a lone surrogate or a control character)."""
    raw = request.get_data(cache=True)
    if not raw.strip() and optional:
        return model()
    data = strict_json()
    return model.model_validate(data)


def strict_json() -> dict[str, Any]:
    """The request's JSON object (migration_common's strict parser); 400 otherwise."""
    try:
        data: Any = parse_json_body(request.get_data(cache=True))
    except ContractError as exc:
        if exc.field == "body":
            raise ApiError("invalid_json", f"request body {exc.reason}", 400) from None
        raise ApiError("invalid_field", str(exc), 400, exc.field) from None
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "request body must be a JSON object", 400)
    return data
