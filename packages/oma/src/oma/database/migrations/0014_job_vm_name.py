"""0014 job VM name: ``replication_jobs.vm_name``, the VM's name copied onto each job.

A page of jobs shows each job's VM name. Read from ``vm_contexts``, that is one lookup of a
row scattered across the table for every job of the page; copied onto the job when it is
created (a context's name never changes), it is read with the job's own row. Existing jobs
get their context's name here; a job without one still shows its context's.
"""

from peewee import CharField


def copy_names(db):
    """Copy each job's context name onto every job that has none."""
    name = "SELECT c.name FROM vm_contexts c WHERE c.id = replication_jobs.context_id"
    db.execute_sql(f"UPDATE replication_jobs SET vm_name = ({name}) WHERE vm_name IS NULL")


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("replication_jobs", "vm_name", CharField(max_length=255, null=True))
    )
    copy_names(db)


def down(migrator, db):
    migrator.migrate(migrator.drop_column("replication_jobs", "vm_name"))
