"""0004: ``vm_contexts.failover_defaults`` — the operator's per-VM failover choices.

A JSON object with ``boot_disk_key`` and/or ``template_id``: used by a failover request that
does not name them itself.
"""

from oma.database.fields import JSONField


def up(migrator, db):
    migrator.migrate(migrator.add_column("vm_contexts", "failover_defaults", JSONField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("vm_contexts", "failover_defaults"))
