"""The VMA's job database: peewee models on SQLite under ``VMA_DATA_DIR``.

Two tables: ``job`` (one row per replication job: request, status, the processes and the
snapshot it owns) and ``jobdisk`` (one row per disk of a job: target, change IDs, the last
accepted progress update and its ``seq``). A partial unique index enforces "at most one active
job per VM" in the database itself. Times are stored as RFC 3339 text.

The database is a :class:`peewee.DatabaseProxy` initialized by :func:`init_db`; SQLite runs in
WAL mode with a busy timeout so the API threads and the runner thread can share it.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from peewee import (
    CharField,
    DatabaseProxy,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from migration_common import rfc3339, utcnow

database = DatabaseProxy()

ACTIVE_STATUSES = ("queued", "running")


def now_text() -> str:
    """The current UTC time as RFC 3339 text."""
    return rfc3339(utcnow())


def parse_time(text: str | None) -> datetime | None:
    """Parse a stored RFC 3339 time (None stays None)."""
    return datetime.fromisoformat(text) if text else None


class BaseModel(Model):
    """Base of the VMA models, bound to the proxy."""

    class Meta:
        database = database


class Job(BaseModel):
    """One replication job as requested by the OMA, and what the VMA started for it."""

    job_id = CharField(primary_key=True, max_length=128)
    vm_id = CharField(index=True)
    request = TextField()  # canonical JSON of the replicate request (idempotency check)
    status = CharField(default="queued", index=True)
    sync_type = CharField(default="full")
    source_kind = CharField(null=True)
    snapshot_id = CharField(null=True)
    source_state = TextField(null=True)  # JSON: processes and bitmaps the source owns
    supervisor_pid = IntegerField(null=True)
    supervisor_start = IntegerField(null=True)
    pid = IntegerField(null=True)  # migratekit's PID
    pid_start = IntegerField(null=True)
    token_hash = CharField(null=True)  # sha256 of the job's progress token
    error = TextField(null=True)
    created_at = CharField(default=now_text)
    started_at = CharField(null=True)
    finished_at = CharField(null=True)

    def request_data(self) -> dict[str, Any]:
        """The stored replicate request as a dict."""
        return json.loads(self.request)

    def state(self) -> dict[str, Any]:
        """The source state as a dict (empty before the source was prepared)."""
        return json.loads(self.source_state) if self.source_state else {}


class JobDisk(BaseModel):
    """One disk of a job: where it goes and the last progress update accepted for it."""

    job = ForeignKeyField(Job, backref="disks", on_delete="CASCADE")
    position = IntegerField()
    disk_key = CharField()
    target_uri = TextField()
    previous_change_id = CharField(null=True)
    change_id = CharField(null=True)  # what this sync will report when it completes
    seq = IntegerField(default=-1)
    progress = TextField(null=True)  # last accepted DiskProgress JSON

    class Meta:
        indexes = ((("job", "disk_key"), True),)


MODELS = (Job, JobDisk)


def init_db(path: str | Path) -> SqliteDatabase:
    """Open (and create) the SQLite database at ``path`` and bind the models to it.

    A new database file is created 0600 (SQLite gives its ``-wal``/``-shm`` files the same mode).
    """
    if str(path) != ":memory:":
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "busy_timeout": 10000,
            "foreign_keys": 1,
            "synchronous": "normal",
        },
        check_same_thread=False,
    )
    database.initialize(db)
    with db.connection_context():
        db.create_tables(MODELS)
        db.execute_sql(
            "CREATE UNIQUE INDEX IF NOT EXISTS job_one_active_per_vm ON job (vm_id) "
            "WHERE status IN ('queued', 'running')"
        )
    return db
