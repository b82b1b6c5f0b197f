"""One disk's progress update as migratekit sends it, built without pydantic.

The fields, words and JSON are those of the contract's ``migration_common.DiskProgress``,
which the VMA validates every update against on receipt (and migratekit's tests check that
every update it makes passes that validation). Building the pydantic model here cost each
migratekit run about 0.2 s of CPU to import pydantic and the contract's models: more than
copying a small disk.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from migration_common import printable, rfc3339

from .._states import COMPLETED, COPY, FULL, RUNNING


class DiskUpdate(NamedTuple):
    """The fields of ``migration_common.DiskProgress``, the words as plain strings and
    ``sent_at`` as RFC 3339 text (None: the time :meth:`to_dict` is called). A NamedTuple,
    not a dataclass, as the copy path's other records: cheaper to define at start-up."""

    disk_key: str
    sync_type: str = FULL
    phase: str = COPY
    status: str = RUNNING
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_written: int = 0
    bytes_zeroed: int = 0
    throughput_bps: float = 0.0
    change_id: str | None = None
    error: str | None = None
    seq: int = 0
    sent_at: str | None = None
    verified: bool | None = None
    source_sha256: str | None = None
    target_sha256: str | None = None
    limit_bps: int | None = None

    @property
    def percent(self) -> float:
        """Share of bytes_total done, 0-100 (100 when there is nothing to move and it is done)."""
        if self.bytes_total == 0:
            return 100.0 if self.status == COMPLETED else 0.0
        return round(100.0 * self.bytes_done / self.bytes_total, 2)

    def to_dict(self) -> dict[str, Any]:
        """The update as the contract's JSON object; an error's control characters replaced
        by ``?`` as the contract does."""
        doc = self._asdict()
        if doc["sent_at"] is None:
            doc["sent_at"] = now()
        if doc["error"] is not None:
            doc["error"] = printable(doc["error"])
        return doc


def now() -> str:
    """The current time as an update's ``sent_at``."""
    return rfc3339(datetime.now(UTC))
