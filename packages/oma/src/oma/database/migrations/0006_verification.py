"""0006 verification and canonical VM ids.

- ``replication_jobs.verify``: the job asked the VMA to verify every disk (read source and
  replica back and compare sha256);
- ``job_disks.verified`` (null: not verified, true: equal, false: mismatch),
  ``job_disks.source_sha256`` and ``job_disks.target_sha256`` (hex);
- ``vm_contexts.replication_defaults``: the operator's per-VM replication choices (a JSON
  object, ``{"verify": true}``);
- VM ids of existing contexts in their canonical form (a UUID in lower case, no surrounding
  blanks; :func:`migration_common.canonical_vm_id`) — unless another context of the same
  vCenter already holds that form (two spellings of one VM, added before ids were
  canonicalised): that row is left as it is for the operator to remove.
"""

from peewee import BooleanField, CharField

from migration_common import canonical_vm_id
from oma.database.fields import JSONField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("replication_jobs", "verify", BooleanField(default=False)),
        migrator.add_column("job_disks", "verified", BooleanField(null=True)),
        migrator.add_column("job_disks", "source_sha256", CharField(max_length=64, null=True)),
        migrator.add_column("job_disks", "target_sha256", CharField(max_length=64, null=True)),
        migrator.add_column("vm_contexts", "replication_defaults", JSONField(null=True)),
    )
    canonical_context_ids(db)


def canonical_context_ids(db):
    """Rewrite the contexts' VM ids in canonical form where that makes no duplicate."""
    param = db.param
    rows = db.execute_sql("SELECT id, vcenter, vm_id FROM vm_contexts").fetchall()
    taken = {(vcenter, vm_id) for _, vcenter, vm_id in rows}
    for row_id, vcenter, vm_id in rows:
        try:
            canonical = canonical_vm_id(vm_id)
        except ValueError:
            continue
        if canonical == vm_id or (vcenter, canonical) in taken:
            continue
        db.execute_sql(
            f"UPDATE vm_contexts SET vm_id = {param} WHERE id = {param}", (canonical, row_id)
        )
        taken.add((vcenter, canonical))


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("vm_contexts", "replication_defaults"),
        migrator.drop_column("job_disks", "target_sha256"),
        migrator.drop_column("job_disks", "source_sha256"),
        migrator.drop_column("job_disks", "verified"),
        migrator.drop_column("replication_jobs", "verify"),
    )
