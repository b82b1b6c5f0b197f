"""0013 disk order index: a VM's disks by disk key (``LENGTH(disk_key), disk_key``), on SQLite.

The VM-context list renders each VM's disks in that order. SQLite reads them through this
index, already in order, instead of sorting every VM's disks. PostgreSQL and MariaDB sort
inside their JSON aggregate and need no index for it.
"""

from peewee import SqliteDatabase

INDEX = "vmdisk_context_id_disk_order"


def up(migrator, db):
    if isinstance(db, SqliteDatabase):
        db.execute_sql(
            f'CREATE INDEX IF NOT EXISTS "{INDEX}" '
            'ON "vm_disks" ("context_id", LENGTH("disk_key"), "disk_key")'
        )


def down(migrator, db):
    if isinstance(db, SqliteDatabase):
        db.execute_sql(f'DROP INDEX IF EXISTS "{INDEX}"')
