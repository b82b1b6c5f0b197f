"""The plan JSON the VMA writes for ``migratekit run`` (documented in the README).

::

    {"job_id": "uuid", "max_parallel_disks": 2, "verify": false,
     "checkpoint_dir": "checkpoints", "resume": false, "bandwidth_file": "bandwidth.json",
     "disks": [{"disk_key": "2000", "source": "nbd://…", "target": "nbd://…",
                "mode": "full" | "incremental", "target_is_zero": false,
                "changed_extents": null, "changed_extents_file": null,
                "dirty_bitmap": null, "change_id": "gen-3",
                "source_id": null, "target_id": null}]}

Every problem raises :class:`UsageError` whose ``field`` is a path like ``disks[1].source``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._states import FULL, INCREMENTAL
from .copy import DiskSpec, load_extent_file, parse_extent_list
from .copy._checkpoint import checkpoint_path
from .errors import UsageError
from .nbd import parse_uri

_DISK_KEYS = {
    "disk_key",
    "source",
    "target",
    "mode",
    "target_is_zero",
    "changed_extents",
    "changed_extents_file",
    "dirty_bitmap",
    "change_id",
    "source_id",
    "target_id",
}
_PLAN_KEYS = {
    "job_id",
    "max_parallel_disks",
    "verify",
    "disks",
    "checkpoint_dir",
    "resume",
    "bandwidth_file",
}


class Plan:
    """A validated plan (``job_id`` may be replaced by ``migratekit run --job-id``).

    ``bandwidth_file`` (resolved against the plan's directory) holds the job's bandwidth
    limit, ``{"limit_bps": N or null}``, re-read every progress interval.
    """

    __slots__ = ("bandwidth_file", "disks", "job_id", "max_parallel_disks", "resume", "verify")

    def __init__(
        self,
        job_id: str | None,
        disks: list[DiskSpec],
        max_parallel_disks: int = 2,
        verify: bool = False,
        resume: bool = False,
        bandwidth_file: str | None = None,
    ) -> None:
        self.bandwidth_file = bandwidth_file
        self.job_id = job_id
        self.disks = disks
        self.max_parallel_disks = max_parallel_disks
        self.verify = verify
        self.resume = resume

    def __repr__(self) -> str:
        return (
            f"Plan(job_id={self.job_id!r}, disks={len(self.disks)}, "
            f"max_parallel_disks={self.max_parallel_disks}, verify={self.verify})"
        )


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read plan {path}: {exc.strerror}", "plan") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"plan {path} is not valid JSON: {exc}", "plan") from None
    return parse_plan(data, base_dir=Path(path).parent)


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UsageError(f"must be true or false, got {value!r}", where)
    return value


def _opt_str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"must be a non-empty string or null, got {value!r}", where)
    return value


def parse_plan(data: Any, base_dir: Path | None = None) -> Plan:
    """Validate a decoded plan (relative extent files resolve against ``base_dir``)."""
    if not isinstance(data, dict):
        raise UsageError("the plan must be a JSON object", "plan")
    unknown = sorted(set(data) - _PLAN_KEYS)
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r}", unknown[0])
    job_id = _opt_str(data.get("job_id"), "job_id")
    parallel = data.get("max_parallel_disks", 2)
    if parallel is None:
        parallel = 2
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise UsageError(f"must be an integer >= 1, got {parallel!r}", "max_parallel_disks")
    verify = _bool(data.get("verify"), "verify")
    resume = _bool(data.get("resume"), "resume")
    checkpoint_dir = _opt_str(data.get("checkpoint_dir"), "checkpoint_dir")
    if resume and checkpoint_dir is None:
        raise UsageError("resume needs a checkpoint_dir", "resume")
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoints = Path(checkpoint_dir)
        if base_dir is not None and not checkpoints.is_absolute():
            checkpoints = base_dir / checkpoints
    bandwidth_file = _opt_str(data.get("bandwidth_file"), "bandwidth_file")
    if bandwidth_file is not None and base_dir is not None:
        bandwidth_file = str(base_dir / bandwidth_file)  # an absolute path stays as it is
    disks_raw = data.get("disks")
    if not isinstance(disks_raw, list) or not disks_raw:
        raise UsageError("must be a non-empty list of disks", "disks")
    disks = [_parse_disk(d, f"disks[{i}]", base_dir, checkpoints) for i, d in enumerate(disks_raw)]
    seen: set[str] = set()
    for i, d in enumerate(disks):
        if d.disk_key in seen:
            raise UsageError(f"duplicate disk_key {d.disk_key!r}", f"disks[{i}].disk_key")
        seen.add(d.disk_key)
    return Plan(
        job_id=job_id,
        disks=disks,
        max_parallel_disks=parallel,
        verify=verify,
        resume=resume,
        bandwidth_file=bandwidth_file,
    )


def _parse_disk(raw: Any, where: str, base_dir: Path | None, checkpoints: Path | None) -> DiskSpec:
    if not isinstance(raw, dict):
        raise UsageError("each disk must be a JSON object", where)
    unknown = sorted(set(raw) - _DISK_KEYS)
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r}", f"{where}.{unknown[0]}")
    key = raw.get("disk_key")
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str) or not key:
        raise UsageError('is required (the VMware disk key, e.g. "2000")', f"{where}.disk_key")
    source = parse_uri(raw.get("source"), f"{where}.source")  # type: ignore[arg-type]
    target = parse_uri(raw.get("target"), f"{where}.target")  # type: ignore[arg-type]
    mode_raw = raw.get("mode", "full")
    if mode_raw not in (FULL, INCREMENTAL):
        raise UsageError(f"must be full or incremental, got {mode_raw!r}", f"{where}.mode")
    mode = str(mode_raw)
    extents = raw.get("changed_extents")
    extents_file = _opt_str(raw.get("changed_extents_file"), f"{where}.changed_extents_file")
    bitmap = _opt_str(raw.get("dirty_bitmap"), f"{where}.dirty_bitmap")
    given = [
        n
        for n, v in (
            ("changed_extents", extents),
            ("changed_extents_file", extents_file),
            ("dirty_bitmap", bitmap),
        )
        if v is not None
    ]
    ranges = None
    if mode == INCREMENTAL:
        if len(given) != 1:
            raise UsageError(
                "an incremental disk needs exactly one of changed_extents, "
                f"changed_extents_file or dirty_bitmap (got {len(given)})",
                f"{where}.mode",
            )
        if extents is not None:
            ranges = parse_extent_list(extents, f"{where}.changed_extents")
        elif extents_file is not None:
            path = Path(extents_file)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            ranges = load_extent_file(path, f"{where}.changed_extents_file")
    elif given:
        raise UsageError("only allowed when mode is incremental", f"{where}.{given[0]}")
    return DiskSpec(
        disk_key=key,
        source=source,
        target=target,
        mode=mode,
        target_is_zero=_bool(raw.get("target_is_zero"), f"{where}.target_is_zero"),
        changed_extents=ranges,
        dirty_bitmap=bitmap,
        change_id=_opt_str(raw.get("change_id"), f"{where}.change_id"),
        checkpoint=(
            str(checkpoint_path(checkpoints, key))
            if checkpoints is not None and mode == FULL
            else None
        ),
        source_id=_opt_str(raw.get("source_id"), f"{where}.source_id"),
        target_id=_opt_str(raw.get("target_id"), f"{where}.target_id"),
    )
