"""0003: what a CloudStack target's disk offering can carry.

``cloudstack_targets.disk_size_max_gib`` — the operator's largest custom disk size in GB for the
target (when the API key cannot read CloudStack's ``custom.diskoffering.size.max``);
``cloudstack_targets.disk_offering_facts`` — the disk offering as last read from CloudStack
(customized?, fixed size, the readable size limit), so a replication request is checked
without a CloudStack round trip.
"""

from peewee import IntegerField

from oma.database.fields import JSONField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("cloudstack_targets", "disk_size_max_gib", IntegerField(null=True)),
        migrator.add_column("cloudstack_targets", "disk_offering_facts", JSONField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("cloudstack_targets", "disk_size_max_gib"),
        migrator.drop_column("cloudstack_targets", "disk_offering_facts"),
    )
