"""0009 bandwidth: ``bandwidth_limits``, one bandwidth policy per scope.

``id`` is the scope key: ``global``, ``vma:<appliance id>`` or ``job:<replication job id>``
(so each scope has at most one row on every database); ``vma_id``/``job_id`` reference the
owner and remove the row with it. ``rate_bps`` (null: unlimited) applies outside the
``windows`` (a JSON list of ``{days, start, end, rate_bps}``) evaluated in ``timezone``.
"""

from peewee import BigIntegerField, CharField, ForeignKeyField, Model

from oma.database.fields import JSONField, UtcDateTimeField, UUIDStrField


def up(migrator, db):
    class VmaAppliance(Model):
        id = UUIDStrField(primary_key=True, max_length=36)

        class Meta:
            database = db
            table_name = "vma_appliances"

    class ReplicationJob(Model):
        id = UUIDStrField(primary_key=True, max_length=36)

        class Meta:
            database = db
            table_name = "replication_jobs"

    class BandwidthLimit(Model):
        id = CharField(primary_key=True, max_length=64)
        scope = CharField(max_length=8)
        vma = ForeignKeyField(VmaAppliance, null=True, on_delete="CASCADE")
        job = ForeignKeyField(ReplicationJob, null=True, on_delete="CASCADE")
        rate_bps = BigIntegerField(null=True)
        timezone = CharField(max_length=64, default="UTC")
        windows = JSONField(null=True)
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "bandwidth_limits"

    db.create_tables([BandwidthLimit])


def down(migrator, db):
    migrator.migrate(migrator.drop_table("bandwidth_limits"))
