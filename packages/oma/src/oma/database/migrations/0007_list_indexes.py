"""0007 list indexes: every API list is served by an index matching its filter and order.

- ``replication_jobs``: newest first (``created_at DESC, id DESC``), alone or filtered by VM,
  VMA or status;
- ``vm_contexts``: by name (``name, id``), alone or filtered by state or VMA;
- ``job_events``: a job's or a VM's newest events (``at DESC, id DESC``);
- ``workflows``: newest first; ``schedule_runs``: newest first, alone or per schedule.
"""

INDEXES = (
    ("replication_jobs", ("created_at", "id")),
    ("replication_jobs", ("context_id", "created_at", "id")),
    ("replication_jobs", ("vma_id", "created_at", "id")),
    ("replication_jobs", ("status", "created_at", "id")),
    ("vm_contexts", ("name", "id")),
    ("vm_contexts", ("state", "name", "id")),
    ("vm_contexts", ("vma_id", "name", "id")),
    ("job_events", ("job_id", "at", "id")),
    ("job_events", ("context_id", "at", "id")),
    ("workflows", ("created_at", "id")),
    ("schedule_runs", ("started_at", "id")),
    ("schedule_runs", ("schedule_id", "started_at", "id")),
)


def up(migrator, db):
    migrator.migrate(*(migrator.add_index(table, columns, False) for table, columns in INDEXES))


def down(migrator, db):
    migrator.migrate(
        *(
            migrator.drop_index(table, "_".join((table, *columns)))
            for table, columns in reversed(INDEXES)
        )
    )
