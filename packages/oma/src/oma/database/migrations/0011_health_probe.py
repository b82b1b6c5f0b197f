"""0011 health probe: a one-row table ``/health`` writes to, so a database that answers reads
but refuses writes (read-only, full) is reported unhealthy instead of failing every request."""

from peewee import IntegerField, Model

from oma.database.fields import UtcDateTimeField


def up(migrator, db):
    class HealthProbe(Model):
        id = IntegerField(primary_key=True)
        checked_at = UtcDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "health_probe"

    db.create_tables([HealthProbe])


def down(migrator, db):
    db.execute_sql("DROP TABLE health_probe")
