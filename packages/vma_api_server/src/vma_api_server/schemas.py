"""Request bodies, validated with pydantic; a failure becomes a 422 naming the field.

Unknown fields are rejected (``extra="forbid"``) so a misspelt option never passes silently.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from migration_common import canonical_vm_id
from vma.services.runner import DiskSpec, ReplicateSpec

from .errors import ApiError

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DiskIn(_Body):
    """One disk of a replicate request."""

    disk_key: str = Field(min_length=1, max_length=64)
    target_uri: str = Field(min_length=1)
    previous_change_id: str | None = None

    @field_validator("target_uri")
    @classmethod
    def _nbd_uri(cls, value: str) -> str:
        if not value.startswith(("nbd://", "nbd+unix://", "nbds://")):
            raise ValueError("must be an NBD URI (nbd://host:port/export)")
        return value

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
    vm_id: str = Field(min_length=1, max_length=128)
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


class EmptyIn(_Body):
    """A body that carries nothing (``{}`` or none)."""


def json_body(model: type[M], *, optional: bool = False) -> M:
    """Parse the request's JSON body into ``model``; 400 when it is not a JSON object."""
    raw = request.get_data(cache=True)
    if not raw.strip() and optional:
        return model()
    data: Any = request.get_json(silent=True)
    if data is None:
        raise ApiError("invalid_json", "request body must be a JSON object", 400)
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "request body must be a JSON object", 400)
    return model.model_validate(data)
