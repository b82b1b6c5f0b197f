"""The contract's status, phase and sync-type words as plain strings.

They are the values of ``migration_common.Status``, ``Phase`` and ``SyncType`` (checked by
``tests/test_states.py``); migratekit uses the strings internally so that copying does not
import pydantic; the VMA validates every update against ``migration_common.DiskProgress``.
"""

from __future__ import annotations

FULL = "full"
INCREMENTAL = "incremental"

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"

COPY = "copy"
VERIFY = "verify"
DONE = "done"

TERMINAL = (COMPLETED, FAILED, STOPPED)
