"""0008 VMA identity: enrollment codes and the pinned client certificate of each VMA.

- ``vma_appliances.cert_fingerprint`` (sha256 hex of the VMA's client certificate, pinned at
  enrollment), ``vma_appliances.cert_subject`` (its RFC 4514 subject, used by the NBD exports'
  TLS authorisation) and ``vma_appliances.revoked_at`` (a revoked VMA has no access);
- ``vma_enrollments``: one-time enrollment codes, stored as SHA-256 hashes, each for one VMA
  name, with an expiry and the time it was used (single use).
"""

from peewee import CharField, Model, TextField

from oma.database.fields import UtcDateTimeField, UUIDStrField


def up(migrator, db):
    class VmaEnrollment(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        vma_name = CharField(max_length=100)
        code_hash = CharField(max_length=64, unique=True)
        url = CharField(max_length=500, null=True)
        expires_at = UtcDateTimeField()
        used_at = UtcDateTimeField(null=True)
        vma_id = UUIDStrField(null=True, max_length=36)
        created_by = CharField(max_length=100, null=True)
        created_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "vma_enrollments"

    migrator.migrate(
        migrator.add_column(
            "vma_appliances", "cert_fingerprint", CharField(max_length=64, null=True)
        ),
        migrator.add_column("vma_appliances", "cert_subject", TextField(null=True)),
        migrator.add_column("vma_appliances", "revoked_at", UtcDateTimeField(null=True)),
    )
    db.create_tables([VmaEnrollment])


def down(migrator, db):
    db.execute_sql("DROP TABLE vma_enrollments")
    migrator.migrate(
        migrator.drop_column("vma_appliances", "revoked_at"),
        migrator.drop_column("vma_appliances", "cert_subject"),
        migrator.drop_column("vma_appliances", "cert_fingerprint"),
    )
