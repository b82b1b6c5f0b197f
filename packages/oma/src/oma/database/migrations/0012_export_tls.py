"""0012 export TLS: ``nbd_exports.tls`` — the export requires TLS (its URI is ``nbds://``)."""

from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(migrator.add_column("nbd_exports", "tls", BooleanField(default=False)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("nbd_exports", "tls"))
