"""A running job's bandwidth limit: the small file migratekit re-reads every progress tick.

The OMA decides each job's effective limit and sets it through the VMA API
(``PUT /api/v1/jobs/{id}/bandwidth``); it is stored as ``jobs/<id>/bandwidth.json``,
``{"limit_bps": N | null, "updated_at": "…"}`` (null: unlimited), written atomically (a
temporary file renamed over the old one), so migratekit never reads half a file. The runner
names the file in every plan (``bandwidth_file``), so a limit set while the job is still
queued is in force from its first byte, and a change reaches a running copy within one
progress interval.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from migration_common import rfc3339, utcnow

LIMIT_FILE = "bandwidth.json"
"""The limit file's name inside the job directory (the plan names it relative to it)."""


def write_limit(job_dir: Path, limit_bps: int | None) -> dict[str, Any]:
    """Store ``limit_bps`` (bytes/s; None or 0: unlimited) for the job; return the document."""
    if limit_bps is not None and limit_bps < 0:
        raise ValueError(f"limit_bps must be >= 0 or null, got {limit_bps}")
    job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"limit_bps": limit_bps or None, "updated_at": rfc3339(utcnow())}
    # a unique temporary file (0600) per write: two API threads never share one
    fd, tmp = tempfile.mkstemp(dir=job_dir, prefix=f".{LIMIT_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, job_dir / LIMIT_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return doc


def read_limit(job_dir: Path) -> dict[str, Any]:
    """The job's limit document (``limit_bps`` null and ``updated_at`` null when never set)."""
    try:
        data = json.loads((job_dir / LIMIT_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {"limit_bps": None, "updated_at": None}
    return {"limit_bps": data.get("limit_bps"), "updated_at": data.get("updated_at")}
