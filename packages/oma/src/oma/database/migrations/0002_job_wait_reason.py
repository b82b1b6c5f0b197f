"""0002: ``replication_jobs.wait_reason`` — why a pending job has not started yet.

A job waits in ``pending`` while the OMA VM it needs has no room for its replica volumes
within the attach budget; the reason is shown to the operator and cleared when it starts.
"""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("replication_jobs", "wait_reason", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("replication_jobs", "wait_reason"))
