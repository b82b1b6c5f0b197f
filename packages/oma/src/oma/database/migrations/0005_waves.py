"""0005 waves: machine groups and their members, schedules, schedule runs and their VMs.

``schedule_runs`` is unique per (schedule, occurrence): a second worker firing the same cron
occurrence fails its insert and skips it. ``machine_group_members.context_id`` is unique: a
VM belongs to at most one group.
"""

from peewee import BooleanField, CharField, ForeignKeyField, IntegerField, Model, TextField

from oma.database.fields import UtcDateTimeField, UUIDStrField


def up(migrator, db):
    class VmContext(Model):
        id = UUIDStrField(primary_key=True, max_length=36)

        class Meta:
            database = db
            table_name = "vm_contexts"

    class MachineGroup(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        name = CharField(unique=True, max_length=100)
        description = TextField(null=True)
        priority = IntegerField(default=0)
        max_concurrent = IntegerField(default=0)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "machine_groups"

    class GroupMember(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        group = ForeignKeyField(MachineGroup, on_delete="CASCADE")
        context = ForeignKeyField(VmContext, unique=True, on_delete="CASCADE")
        added_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "machine_group_members"

    class Schedule(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        name = CharField(unique=True, max_length=100)
        cron = CharField(max_length=100)
        timezone = CharField(max_length=64, default="UTC")
        enabled = BooleanField(default=True)
        skip_if_running = BooleanField(default=True)
        context = ForeignKeyField(VmContext, null=True, on_delete="CASCADE")
        group = ForeignKeyField(MachineGroup, null=True, on_delete="CASCADE")
        replication_type = CharField(max_length=16, default="auto")
        active_since = UtcDateTimeField()
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "schedules"

    class ScheduleRun(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        schedule = ForeignKeyField(Schedule, on_delete="CASCADE")
        occurrence = UtcDateTimeField()
        trigger = CharField(max_length=16, default="schedule")
        started_at = UtcDateTimeField()
        finished_at = UtcDateTimeField(null=True)
        eligible = IntegerField(default=0)
        created = IntegerField(default=0)
        skipped = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "schedule_runs"
            indexes = ((("schedule", "occurrence"), True),)

    class ScheduleRunVm(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        run = ForeignKeyField(ScheduleRun, on_delete="CASCADE")
        context = ForeignKeyField(VmContext, null=True, on_delete="SET NULL")
        vm_name = CharField(max_length=255)
        result = CharField(max_length=16)
        reason = TextField(null=True)
        job_id = UUIDStrField(null=True, index=True, max_length=36)
        outcome = CharField(null=True, max_length=16)
        outcome_message = TextField(null=True)
        finished_at = UtcDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "schedule_run_vms"

    db.create_tables([MachineGroup, GroupMember, Schedule, ScheduleRun, ScheduleRunVm])


def down(migrator, db):
    for table in (
        "schedule_run_vms",
        "schedule_runs",
        "schedules",
        "machine_group_members",
        "machine_groups",
    ):
        migrator.migrate(migrator.drop_table(table))
