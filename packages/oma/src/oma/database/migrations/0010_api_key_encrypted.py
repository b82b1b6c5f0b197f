"""0010 CloudStack API key encrypted: ``cloudstack_targets.api_key_encrypted`` holds the API key
encrypted like the secret key; ``api_key`` then keeps only a hint (``****`` and its last four
characters). Keys stored before are encrypted by the OMA at its next start (it holds the
secret key; a migration does not)."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("cloudstack_targets", "api_key_encrypted", TextField(null=True))
    )


def down(migrator, db):
    migrator.migrate(migrator.drop_column("cloudstack_targets", "api_key_encrypted"))
