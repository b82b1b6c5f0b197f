"""0001 initial schema: every OMA table (frozen copies of the models as of this migration).

Python-side defaults (ids, timestamps) live in the application models; only server-visible
defaults matter here. Generated with playhouse.migrations.template and reviewed by hand.
"""

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from oma.database.fields import JSONField, UtcDateTimeField, UUIDStrField


def up(migrator, db):
    class ApiToken(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        name = CharField(unique=True, max_length=100)
        role = CharField(max_length=16)
        token_hash = CharField(unique=True, max_length=128)
        created_at = UtcDateTimeField()
        last_used_at = UtcDateTimeField(null=True)
        revoked_at = UtcDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_tokens"

    db.create_tables([ApiToken])

    class CloudStackTarget(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        name = CharField(unique=True, max_length=100)
        endpoint = CharField(max_length=500)
        api_key = CharField()
        secret_key_encrypted = TextField()
        zone_id = CharField(max_length=64)
        oma_vm_id = CharField(max_length=64)
        disk_offering_id = CharField(null=True, max_length=64)
        verify_tls = BooleanField(default=True)
        is_default = BooleanField(default=False)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "cloudstack_targets"

    db.create_tables([CloudStackTarget])

    class VmaAppliance(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        name = CharField(unique=True, max_length=100)
        url = CharField(max_length=500)
        token_encrypted = TextField()
        version = CharField(null=True, max_length=50)
        last_seen_at = UtcDateTimeField(null=True)
        last_error = TextField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "vma_appliances"

    db.create_tables([VmaAppliance])

    class VmwareCredential(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        name = CharField(unique=True, max_length=100)
        vcenter = CharField()
        username = CharField()
        password_encrypted = TextField()
        datacenter = CharField(null=True)
        insecure = BooleanField(default=False)
        is_default = BooleanField(default=False)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "vmware_credentials"

    db.create_tables([VmwareCredential])

    class VmContext(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        vma = ForeignKeyField(VmaAppliance, null=True, on_delete="SET NULL")
        credential = ForeignKeyField(VmwareCredential, null=True, on_delete="SET NULL")
        target = ForeignKeyField(CloudStackTarget, null=True, on_delete="SET NULL")
        vcenter = CharField()
        vm_id = CharField(max_length=100)
        name = CharField()
        path = CharField(null=True, max_length=1000)
        state = CharField(index=True, max_length=32, default="discovered")
        spec = JSONField(null=True)
        ready_for_failover = BooleanField(default=False)
        active_job_id = UUIDStrField(unique=True, null=True, max_length=36)
        last_job_id = UUIDStrField(null=True, max_length=36)
        last_success_at = UtcDateTimeField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "vm_contexts"
            indexes = ((("vcenter", "vm_id"), True),)

    db.create_tables([VmContext])

    class ReplicationJob(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        context = ForeignKeyField(VmContext, on_delete="CASCADE")
        vma = ForeignKeyField(VmaAppliance, null=True, on_delete="SET NULL")
        requested_type = CharField(max_length=16, default="auto")
        effective_type = CharField(null=True, max_length=16)
        status = CharField(index=True, max_length=16, default="pending")
        active_context_id = UUIDStrField(unique=True, null=True, max_length=36)
        phase = CharField(null=True, max_length=16)
        percent = FloatField(default=0.0)
        bytes_total = BigIntegerField(default=0)
        bytes_done = BigIntegerField(default=0)
        throughput_bps = FloatField(default=0.0)
        eta_seconds = FloatField(null=True)
        error_class = CharField(null=True, max_length=64)
        error_message = TextField(null=True)
        attempts = IntegerField(default=0)
        claimed_by = CharField(null=True)
        lease_until = UtcDateTimeField(null=True)
        vma_seen_at = UtcDateTimeField(null=True)
        last_progress_at = UtcDateTimeField(null=True)
        stop_requested = BooleanField(default=False)
        created_at = UtcDateTimeField(index=True)
        started_at = UtcDateTimeField(null=True)
        updated_at = UtcDateTimeField()
        finished_at = UtcDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "replication_jobs"

    db.create_tables([ReplicationJob])

    class JobDisk(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        job = ForeignKeyField(ReplicationJob, on_delete="CASCADE")
        disk_key = CharField(max_length=32)
        status = CharField(max_length=16, default="queued")
        phase = CharField(null=True, max_length=16)
        sync_type = CharField(null=True, max_length=16)
        bytes_total = BigIntegerField(default=0)
        bytes_done = BigIntegerField(default=0)
        bytes_written = BigIntegerField(default=0)
        bytes_zeroed = BigIntegerField(default=0)
        throughput_bps = FloatField(default=0.0)
        change_id = CharField(null=True)
        previous_change_id = CharField(null=True)
        target_uri = CharField(null=True, max_length=500)
        error = TextField(null=True)
        seq = IntegerField(default=0)
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "job_disks"
            indexes = ((("job", "disk_key"), True),)

    db.create_tables([JobDisk])

    class JobEvent(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        job = ForeignKeyField(ReplicationJob, null=True, on_delete="CASCADE")
        context = ForeignKeyField(VmContext, null=True, on_delete="CASCADE")
        at = UtcDateTimeField(index=True)
        kind = CharField(max_length=64)
        message = TextField()
        data = JSONField(null=True)

        class Meta:
            database = db
            table_name = "job_events"

    db.create_tables([JobEvent])

    class ReplicaVolume(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        context = ForeignKeyField(VmContext, on_delete="CASCADE")
        disk_key = CharField(max_length=32)
        cloudstack_volume_id = CharField(unique=True, null=True, max_length=64)
        name = CharField(null=True)
        size_bytes = BigIntegerField()
        attached_vm_id = CharField(null=True, max_length=64)
        device_id = IntegerField(null=True)
        device_path = CharField(null=True, max_length=500)
        state = CharField(index=True, max_length=32, default="creating")
        error = TextField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "replica_volumes"
            indexes = ((("context", "disk_key"), False),)

    db.create_tables([ReplicaVolume])

    class NbdExport(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        volume = ForeignKeyField(ReplicaVolume, on_delete="CASCADE")
        host = CharField()
        port = IntegerField()
        export_name = CharField()
        device_path = CharField(null=True, max_length=500)
        pid = IntegerField(null=True)
        worker_id = CharField(null=True)
        state = CharField(index=True, max_length=16, default="starting")
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "nbd_exports"

    db.create_tables([NbdExport])

    class VmDisk(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        context = ForeignKeyField(VmContext, on_delete="CASCADE")
        disk_key = CharField(max_length=32)
        capacity_bytes = BigIntegerField()
        label = CharField(null=True)
        unit_number = IntegerField(null=True)
        controller_key = IntegerField(null=True)
        path = CharField(null=True, max_length=1000)
        replica_volume = ForeignKeyField(ReplicaVolume, null=True, on_delete="SET NULL")
        change_id = CharField(null=True)
        change_id_at = UtcDateTimeField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "vm_disks"
            indexes = ((("context", "disk_key"), True),)

    db.create_tables([VmDisk])

    class WorkerHeartbeat(Model):
        worker_id = CharField(primary_key=True)
        hostname = CharField()
        pid = IntegerField()
        version = CharField(null=True, max_length=50)
        started_at = UtcDateTimeField()
        seen_at = UtcDateTimeField(index=True)

        class Meta:
            database = db
            table_name = "worker_heartbeats"

    db.create_tables([WorkerHeartbeat])

    class Workflow(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        kind = CharField(max_length=32)
        context = ForeignKeyField(VmContext, null=True, on_delete="CASCADE")
        job = ForeignKeyField(ReplicationJob, null=True, on_delete="CASCADE")
        status = CharField(index=True, max_length=16, default="pending")
        params = JSONField(null=True)
        result = JSONField(null=True)
        error = TextField(null=True)
        claimed_by = CharField(null=True)
        lease_until = UtcDateTimeField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()
        finished_at = UtcDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "workflows"

    db.create_tables([Workflow])

    class WorkflowStep(Model):
        id = UUIDStrField(primary_key=True, max_length=36)
        workflow = ForeignKeyField(Workflow, on_delete="CASCADE")
        name = CharField(max_length=64)
        position = IntegerField()
        status = CharField(max_length=16, default="pending")
        attempts = IntegerField(default=0)
        error = TextField(null=True)
        data = JSONField(null=True)
        claimed_by = CharField(null=True)
        lease_until = UtcDateTimeField(null=True)
        started_at = UtcDateTimeField(null=True)
        finished_at = UtcDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "workflow_steps"
            indexes = ((("workflow", "name"), True),)

    db.create_tables([WorkflowStep])


def down(migrator, db):
    migrator.migrate(migrator.drop_table("workflow_steps"))
    migrator.migrate(migrator.drop_table("workflows"))
    migrator.migrate(migrator.drop_table("worker_heartbeats"))
    migrator.migrate(migrator.drop_table("vm_disks"))
    migrator.migrate(migrator.drop_table("nbd_exports"))
    migrator.migrate(migrator.drop_table("replica_volumes"))
    migrator.migrate(migrator.drop_table("job_events"))
    migrator.migrate(migrator.drop_table("job_disks"))
    migrator.migrate(migrator.drop_table("replication_jobs"))
    migrator.migrate(migrator.drop_table("vm_contexts"))
    migrator.migrate(migrator.drop_table("vmware_credentials"))
    migrator.migrate(migrator.drop_table("vma_appliances"))
    migrator.migrate(migrator.drop_table("cloudstack_targets"))
    migrator.migrate(migrator.drop_table("api_tokens"))
