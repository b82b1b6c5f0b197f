"""The job runner: turns stored replication jobs into snapshot + disk servers + migratekit.

Lifecycle of a job (all state in the database, so a restarted VMA picks up where it was):

``queued`` → (a slot is free; at most ``max_concurrent_jobs`` run) → ``running`` (claimed) →
snapshot taken (our leftover snapshots swept first: at most one of ours per VM) → source
prepared (one disk server per disk) → plan written → ``migratekit run`` started under
:mod:`vma.services.supervise` in its own process group, with the progress token in its
environment → when the process ends: exit 0 → ``completed`` (the source commits its new change
tracking state), otherwise ``failed`` with "migratekit exited with code N" / "migratekit killed
by signal S (SIG…)". Every exit path stops the disk servers and removes the snapshot — except
after a full copy that failed or was stopped with a checkpoint (``jobs/<id>/checkpoints``,
written by migratekit after target flushes): that snapshot is kept so that a retry with
``resume_from_job`` continues the copy (:mod:`vma.services.resume`); the VM's next job that
does not resume removes it (the leftover sweep).
``stop()`` sends SIGTERM to the job's process group, SIGKILL after the grace period, cleans up
and marks the job ``stopped``. Once after recovery and then every ``prune_interval`` seconds the
supervision thread removes the directories of jobs that finished more than
``job_retention_days`` ago (:mod:`vma.services.retention`; the job rows stay).

One background thread ticks every ``poll_interval`` seconds (and at once when woken); each job
is started in a thread of its own. One lock serialises the job state changes of this process
(ticks and stops; a start thread only touches its own job), and an flock on the data directory
makes one process the supervisor — the API server runs one gunicorn worker (with threads), see
the vma-api-server README.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from peewee import IntegrityError

from migration_common import DiskProgress, Phase, Status, get_logger, utcnow

from ..errors import (
    JobConflictError,
    JobError,
    JobRequestError,
    VmaError,
)
from ..sources.base import DiskRequest, PreparedDisk, SourceState, stop_servers
from ..sources.lab import LabSource
from . import bandwidth, identity, processes, resume
from .progress import apply_update, disk_progress, get_job, hash_token
from .retention import PruneResult, prune_job_dirs
from .store import ACTIVE_STATUSES, Job, JobDisk, database, now_text
from .vcenter import VcenterProvider

log = get_logger(__name__)

SNAPSHOT_PREFIX = "ossea-migrate-"
STOPPED_WHILE_STARTING = "stopped while starting"


@dataclass(frozen=True)
class DiskSpec:
    """One disk of a replicate request."""

    disk_key: str
    target_uri: str
    previous_change_id: str | None = None


@dataclass(frozen=True)
class ReplicateSpec:
    """A validated ``POST /replicate`` body."""

    job_id: str
    vm_id: str
    disks: tuple[DiskSpec, ...]
    verify: bool = False
    target_is_zero: bool = False
    resume_from_job: str | None = None  # a failed full job of this VM to continue

    def canonical(self) -> str:
        """Canonical JSON, compared when the same job id is submitted again."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class RunnerConfig:
    """What the runner needs from the VMA configuration."""

    data_dir: Path
    progress_url: str
    env: Mapping[str, str]
    lab_dir: Path | None = None
    max_concurrent_jobs: int = 4
    max_parallel_disks: int = 2
    stop_grace: float = 10.0
    poll_interval: float = 0.5
    job_retention_days: int = 14  # job directories of finished jobs; 0 = keep forever
    prune_interval: float = 3600.0  # seconds between prune passes (the first: after recovery)
    migratekit: Sequence[str] = field(default_factory=lambda: [sys.executable, "-m", "migratekit"])
    vddk_libdir: str = "/usr/lib/vmware-vix-disklib"
    vddk_plugin: Sequence[str] = ("vddk",)  # nbdkit's words for the VDDK plugin


def tls_environment(data_dir: Path) -> dict[str, str]:
    """migratekit's TLS settings for the OMA's ``nbds://`` exports: the paths of the VMA's
    enrolled identity (never the key itself); empty when the VMA is not enrolled."""
    found = identity.load(data_dir)
    if found is None:
        return {}
    return {
        "MIGRATEKIT_TLS_CA": str(found.ca),
        "MIGRATEKIT_TLS_CERT": str(found.cert),
        "MIGRATEKIT_TLS_KEY": str(found.key),
    }


def describe_exit(returncode: int | None) -> str:
    """Human text for how migratekit ended (Popen convention: negative = signal)."""
    if returncode is None:
        return "migratekit exited without a final status (exit status unknown)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"migratekit killed by signal {-returncode} ({name})"
    return f"migratekit exited with code {returncode}"


class JobRunner:
    """Starts, watches, stops and recovers replication jobs."""

    def __init__(self, config: RunnerConfig, vcenter: VcenterProvider) -> None:
        self.config = config
        self.vcenter = vcenter
        self.lab = LabSource(config.lab_dir, env=config.env) if config.lab_dir else None
        self._lock = threading.RLock()
        self._starting: dict[str, threading.Thread] = {}  # job id -> thread starting it
        self._cancelled: set[str] = set()  # stop() arrived while the job was starting
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0  # time.monotonic() of the next prune pass; 0 = after recovery

    # -- paths ---------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """The per-job directory: plan, logs, exit status."""
        return self.config.data_dir / "jobs" / job_id

    # -- requests ------------------------------------------------------------------------

    def submit(self, spec: ReplicateSpec) -> tuple[Job, bool]:
        """Store a new job (queued); return (job, created). Same id + same body → (job, False)."""
        existing = Job.get_or_none(Job.job_id == spec.job_id)
        if existing is not None:
            if existing.request == spec.canonical():
                return existing, False
            raise JobConflictError(f"job {spec.job_id} exists with different content")
        self._check_vm_idle(spec.vm_id)
        with self.vcenter.client() as vc:
            vm = vc.get_vm(spec.vm_id)
            keys = {str(d["key"]) for d in vm.get("disks", [])}
            for i, disk in enumerate(spec.disks):
                if disk.disk_key not in keys:
                    raise JobRequestError(
                        f"VM {spec.vm_id} has no disk with key {disk.disk_key!r} "
                        f"(disks: {', '.join(sorted(keys)) or 'none'})",
                        field=f"disks.{i}.disk_key",
                    )
            # decided before the job exists, so the runner never starts it undecided
            resume.offer(spec.job_id, spec.vm_id, asdict(spec), vc, self.config.data_dir / "jobs")
        all_incremental = all(d.previous_change_id for d in spec.disks)
        try:
            with database.atomic():
                job = Job.create(
                    job_id=spec.job_id,
                    vm_id=spec.vm_id,
                    request=spec.canonical(),
                    sync_type="incremental" if all_incremental else "full",
                )
                for pos, disk in enumerate(spec.disks):
                    JobDisk.create(
                        job=job,
                        position=pos,
                        disk_key=disk.disk_key,
                        target_uri=disk.target_uri,
                        previous_change_id=disk.previous_change_id,
                    )
        except IntegrityError:
            if Job.get_or_none(Job.job_id == spec.job_id) is not None:
                return self.submit(spec)
            self._check_vm_idle(spec.vm_id)
            raise
        log.info("job queued", job_id=spec.job_id, vm_id=spec.vm_id, disks=len(spec.disks))
        self.wake()
        return job, True

    def resume_document(self, job: Job) -> dict[str, Any] | None:
        """Whether ``job`` resumes a previous job's full copy (None when it did not ask)."""
        return resume.load(self.job_dir(job.job_id))

    def _check_vm_idle(self, vm_id: str, finishing_wait: float = 10.0) -> None:
        """JobConflictError when the VM has an active job.

        A job whose disks all reported ``completed`` is only finishing (migratekit exiting,
        disk servers stopping, snapshot removal); the OMA may already consider it done and send
        the next sync, so wait up to ``finishing_wait`` seconds for it instead of refusing.
        """
        deadline = time.monotonic() + finishing_wait
        while True:
            active = Job.get_or_none((Job.vm_id == vm_id) & (Job.status.in_(ACTIVE_STATUSES)))
            if active is None:
                return
            if not self._disks_completed(active) or time.monotonic() > deadline:
                raise JobConflictError(f"VM {vm_id} already has an active job ({active.job_id})")
            self.wake()
            time.sleep(0.05)

    @staticmethod
    def _disks_completed(job: Job) -> bool:
        disks = list(job.disks)
        return bool(disks) and all(disk_progress(d, job).status is Status.COMPLETED for d in disks)

    def stop(self, job_id: str) -> Job:
        """Stop a job: SIGTERM its process group, SIGKILL after the grace period, clean up.

        A job that is still starting (snapshot, disk servers) is told to give up, and the stop
        completes once its start thread has returned.
        """
        waiting = False
        while True:
            with self._lock:
                starter = self._starting.get(job_id)
                if starter is None:
                    return self._stop_now(job_id)
                self._cancelled.add(job_id)
            if not waiting:
                log.info("stop waits for the job to finish starting", job_id=job_id)
                waiting = True
            starter.join(0.5)

    def _stop_now(self, job_id: str) -> Job:
        job = get_job(job_id)
        self._cancelled.discard(job_id)
        if Status(job.status).is_terminal and not (
            job.status == Status.FAILED.value and job.error == STOPPED_WHILE_STARTING
        ):
            return job
        if job.status == "running":
            processes.stop(job.supervisor_pid, job.supervisor_start, grace=self.config.stop_grace)
            processes.kill(job.pid, job.pid_start)  # in case its supervisor died before
            self._mark_disks(job, Status.STOPPED, None)
            self._cleanup(job, success=False)
        job.status, job.error = Status.STOPPED.value, None
        job.finished_at = now_text()
        job.save()
        log.info("job stopped", job_id=job_id)
        return job

    # -- background supervision ----------------------------------------------------------

    def start(self) -> None:
        """Start the supervision thread (recovers jobs left by a previous process first)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="vma-job-runner", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the supervision thread; running migratekit processes keep running."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for starter in list(self._starting.values()):
            starter.join(timeout)

    def wake(self) -> None:
        """Make the supervision thread tick now."""
        self._wake.set()

    def _loop(self) -> None:
        lock = self._acquire_supervisor_lock()
        if lock is None:
            return
        try:
            first = True
            while not self._stopping.is_set():
                try:
                    with database.connection_context():
                        if first:
                            self.recover()
                            first = False
                        self.tick()
                        self._prune_if_due()
                except Exception:
                    log.exception("job runner tick failed")
                self._wake.wait(self.config.poll_interval)
                self._wake.clear()
        finally:
            lock.close()  # releases the flock

    def _acquire_supervisor_lock(self) -> IO[bytes] | None:
        """Become the one supervisor of this data directory (an flock); None when shutting down.

        Two processes on one data directory (a second gunicorn worker, or a new worker while the
        old one finishes a graceful reload) would otherwise both start and finish jobs. The one
        that does not hold the lock waits and takes over when the holder exits.
        """
        self.config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fh = open(self.config.data_dir / "runner.lock", "ab")  # noqa: SIM115 - held while running
        waited = False
        while not self._stopping.is_set():
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                if waited:
                    log.info("job supervision taken over", pid=os.getpid())
                return fh
            except BlockingIOError:
                if not waited:
                    log.info("another process supervises the jobs; waiting", pid=os.getpid())
                    waited = True
                self._stopping.wait(self.config.poll_interval)
        fh.close()
        return None

    def _prune_if_due(self) -> None:
        if self.config.job_retention_days <= 0 or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.config.prune_interval
        try:
            self.prune()
        except Exception:  # a prune problem must never stop job supervision
            log.exception("job directory prune failed")

    def prune(self, now: datetime | None = None) -> PruneResult:
        """Remove the directories of terminal jobs finished over ``job_retention_days`` ago
        (and the snapshots kept for their resume).

        Logs one line with the count and the bytes freed. ``now`` defaults to the current time.
        """
        days = self.config.job_retention_days
        # a snapshot kept for a resume goes with its job's checkpoints
        resume.release_expired(self.config.data_dir / "jobs", self.vcenter, now or utcnow(), days)
        result = prune_job_dirs(self.config.data_dir / "jobs", days, now or utcnow())
        fields = {"removed": result.removed, "bytes_freed": result.bytes_freed}
        if result.failed:
            log.warning(
                "job directories pruned with errors",
                **fields,
                failed=result.failed,
                error=result.error,
                retention_days=days,
            )
        else:
            log.info("job directories pruned", **fields, retention_days=days)
        return result

    def recover(self) -> None:
        """After a restart: re-attach to live jobs (the next tick fails or finishes dead ones)."""
        for job in Job.select().where(Job.status == "running"):
            if processes.alive(job.supervisor_pid, job.supervisor_start):
                log.info("re-attached to running job", job_id=job.job_id, pid=job.pid)
            else:
                log.warning("job's process is gone", job_id=job.job_id, pid=job.pid)

    def tick(self) -> None:
        """Finish jobs whose process ended, then start queued jobs while slots are free.

        Starting (snapshot, disk servers, migratekit) runs in one thread per job, outside the
        runner lock, so a slow vCenter snapshot never delays other jobs or a stop request.
        """
        with self._lock:
            for job in Job.select().where(Job.status == "running"):
                if job.job_id not in self._starting:
                    self._check(job)
            running = Job.select().where(Job.status == "running").count()
            free = self.config.max_concurrent_jobs - running
            if free <= 0:
                return
            queued = list(
                Job.select().where(Job.status == "queued").order_by(Job.created_at).limit(free)
            )
            for job in queued:
                job.status, job.started_at = Status.RUNNING.value, now_text()
                job.save()
                thread = threading.Thread(
                    target=self._start_thread,
                    args=(job.job_id,),
                    name=f"start-{job.job_id}",
                    daemon=True,
                )
                self._starting[job.job_id] = thread
                thread.start()

    def _start_thread(self, job_id: str) -> None:
        try:
            with database.connection_context():
                self._start(Job.get_by_id(job_id))
        except Exception:
            log.exception("job start crashed", job_id=job_id)
        finally:
            with self._lock:
                self._starting.pop(job_id, None)
            self.wake()

    # -- starting ------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        request = job.request_data()
        work = self.job_dir(job.job_id)
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        log.info("job starting", job_id=job.job_id, vm_id=job.vm_id)
        state: SourceState | None = None
        try:
            disks = [
                DiskRequest(d["disk_key"], d.get("previous_change_id")) for d in request["disks"]
            ]
            with self.vcenter.client() as vc:
                vm = vc.get_vm(job.vm_id)
                source = self._source_for(job.vm_id, vc)
                if source.kind == "vsphere" and not vm.get("cbt_enabled"):
                    self._enable_cbt(vc, job.vm_id)
                previous = resume.take_over(job, vc, work)
                swept = vc.sweep_snapshots(
                    job.vm_id, SNAPSHOT_PREFIX, keep=previous.snapshot_id if previous else None
                )
                if swept:
                    log.info("leftover snapshots removed", vm_id=job.vm_id, snapshots=swept)
                if previous is None:
                    job.snapshot_id = vc.create_snapshot(
                        job.vm_id,
                        SNAPSHOT_PREFIX + job.job_id,
                        f"OSSEA-Migrate replication job {job.job_id}",
                    )
                job.save()
                self._raise_if_cancelled(job.job_id)
                job.source_kind = source.kind
                prepared, state = source.prepare(vm, job.snapshot_id, disks, work)
                if previous is not None:
                    resume.keep_change_ids(previous, prepared, state)
            job.source_state = json.dumps(state.to_dict())
            job.sync_type = (
                "incremental"
                if all(p.mode == "incremental" and not p.note for p in prepared)
                else "full"
            )
            job.save()
            for p in prepared:
                JobDisk.update(change_id=p.change_id).where(
                    (JobDisk.job == job) & (JobDisk.disk_key == p.disk_key)
                ).execute()
            self._raise_if_cancelled(job.job_id)
            self._spawn(job, request, prepared, work)
        except Exception as exc:
            error = str(exc) if isinstance(exc, VmaError) else f"{type(exc).__name__}: {exc}"
            log.error("job failed to start", job_id=job.job_id, error=error)
            if state is not None and not job.source_state:
                job.source_state = json.dumps(state.to_dict())
            processes.stop(job.supervisor_pid, job.supervisor_start, grace=2.0)
            if error == STOPPED_WHILE_STARTING:
                self._mark_disks(job, Status.STOPPED, None)
            else:
                self._mark_disks(job, Status.FAILED, error)
            self._cleanup(job, success=False)
            job.status, job.error, job.finished_at = Status.FAILED.value, error, now_text()
            job.save()

    @staticmethod
    def _enable_cbt(vc: Any, vm_id: str) -> None:
        """Turn CBT on before the snapshot (tracking starts at that stun); full copy if not."""
        try:
            vc.enable_cbt(vm_id)
            log.info("CBT enabled", vm_id=vm_id)
        except VmaError as exc:
            log.warning("CBT could not be enabled; copies stay full", vm_id=vm_id, error=str(exc))

    def _raise_if_cancelled(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._cancelled:
                raise JobError(STOPPED_WHILE_STARTING)

    def _source_for(self, vm_id: str, vc: Any) -> Any:
        if self.lab is not None and self.lab.has_vm(vm_id):
            return self.lab
        from ..sources.vsphere import VSphereSource

        creds = self.vcenter.credentials()
        return VSphereSource(
            vc,
            server=creds.host,
            port=creds.port,
            user=creds.username,
            password=creds.password,
            env=self.config.env,
            libdir=self.config.vddk_libdir,
            plugin=self.config.vddk_plugin,
            thumbprint=vc.server_thumbprint(),
        )

    def _spawn(
        self, job: Job, request: dict[str, Any], prepared: list[PreparedDisk], work: Path
    ) -> None:
        targets = {d["disk_key"]: d["target_uri"] for d in request["disks"]}
        plan = {
            "job_id": job.job_id,
            "max_parallel_disks": self.config.max_parallel_disks,
            "verify": bool(request.get("verify")),
            "checkpoint_dir": resume.CHECKPOINTS,
            "resume": bool(request.get("resume_from_job")),
            "bandwidth_file": bandwidth.LIMIT_FILE,
            "disks": [
                {
                    **p.plan_entry(targets[p.disk_key], bool(request.get("target_is_zero"))),
                    "source_id": resume.source_identity(job, p.disk_key),
                }
                for p in prepared
            ],
        }
        plan_path = work / "plan.json"
        plan_path.write_text(json.dumps(plan, indent=2))
        exit_path, pid_path = work / "exit.json", work / "pid.json"
        exit_path.unlink(missing_ok=True)
        pid_path.unlink(missing_ok=True)
        token = secrets.token_urlsafe(32)
        env = dict(self.config.env)
        env["MIGRATEKIT_PROGRESS_TOKEN"] = token
        env.update(tls_environment(self.config.data_dir))
        argv = [
            sys.executable,
            "-m",
            "vma.services.supervise",
            str(exit_path),
            str(pid_path),
            "--",
            *self.config.migratekit,
            "run",
            "--plan",
            str(plan_path),
            "--job-id",
            job.job_id,
            "--progress-url",
            self.config.progress_url,
        ]
        job.token_hash = hash_token(token)
        job.save()
        pid, start = processes.spawn(argv, log_path=work / "migratekit.log", env=env, cwd=work)
        job.supervisor_pid, job.supervisor_start = pid, start
        job.save()
        deadline = time.monotonic() + 30.0
        while not pid_path.exists():
            if not processes.alive(pid, start):
                break
            if time.monotonic() > deadline:
                raise JobError("migratekit did not start within 30s")
            time.sleep(0.02)
        if pid_path.exists():
            job.pid = int(json.loads(pid_path.read_text())["pid"])
            job.pid_start = processes.start_time(job.pid)
            job.save()
        log.info(
            "migratekit started",
            job_id=job.job_id,
            pid=job.pid,
            disks=[(p.disk_key, p.mode) for p in prepared],
        )

    # -- finishing -----------------------------------------------------------------------

    def _check(self, job: Job) -> None:
        if processes.alive(job.supervisor_pid, job.supervisor_start):
            return
        if job.supervisor_pid is None:
            error = "VMA restarted while the job was starting"
            self._mark_disks(job, Status.FAILED, error)
            self._cleanup(job, success=False)
            job.status, job.error, job.finished_at = Status.FAILED.value, error, now_text()
            job.save()
            return
        self._finalize(job, self._returncode(job))

    def _returncode(self, job: Job) -> int | None:
        exit_path = self.job_dir(job.job_id) / "exit.json"
        try:
            return int(json.loads(exit_path.read_text())["returncode"])
        except (OSError, ValueError, KeyError):
            return None

    def _finalize(self, job: Job, returncode: int | None) -> None:
        if processes.kill(job.pid, job.pid_start):  # the supervisor died, migratekit did not
            log.warning("migratekit outlived its supervisor; killed", job_id=job.job_id)
        if returncode == 0:
            self._complete_disks(job)
            self._cleanup(job, success=True)
            job.status, job.error = Status.COMPLETED.value, None
        else:
            reason = describe_exit(returncode)
            failed = [
                f"disk {d.disk_key}: {p.error}"
                for d in job.disks
                if (p := disk_progress(d, job)).status is Status.FAILED and p.error
            ]
            error = "; ".join([*failed, reason])
            self._mark_disks(job, Status.FAILED, reason)
            self._cleanup(job, success=False)
            job.status, job.error = Status.FAILED.value, error
        job.finished_at = now_text()
        job.save()
        log.info("job finished", job_id=job.job_id, status=job.status, error=job.error)

    def _complete_disks(self, job: Job) -> None:
        """migratekit exited 0 (every disk completed) but a final update may have been lost."""
        for disk in job.disks:
            p = disk_progress(disk, job)
            if p.status is Status.COMPLETED:
                continue
            data = p.to_dict()
            data.update(
                status="completed",
                phase="done",
                bytes_done=p.bytes_total,
                change_id=p.change_id or disk.change_id,
                seq=max(disk.seq, 0) + 1,
                sent_at=now_text(),
                error=None,
                throughput_bps=0,
            )
            apply_update(job.job_id, data)

    def _mark_disks(self, job: Job, status: Status, error: str | None) -> None:
        for disk in job.disks:
            p = disk_progress(disk, job)
            if p.status.is_terminal:
                continue
            data = p.to_dict()
            data.update(
                status=status.value,
                error=error,
                seq=max(disk.seq, 0) + 1,
                sent_at=now_text(),
                throughput_bps=0,
            )
            if p.status is Status.QUEUED:
                data["phase"] = Phase.SNAPSHOT.value
            DiskProgress.model_validate(data)
            JobDisk.update(seq=data["seq"], progress=json.dumps(data)).where(
                JobDisk.id == disk.id
            ).execute()

    def _cleanup(self, job: Job, *, success: bool) -> None:
        """Stop the job's disk servers, commit/keep change tracking, remove the snapshot."""
        state_data = job.state()
        if state_data:
            state = SourceState.from_dict(state_data)
            try:
                if state.kind == "lab" and self.lab is not None:
                    self.lab.finish(state, success=success)
                else:
                    stop_servers(state)
                    for name in state.files:
                        Path(name).unlink(missing_ok=True)
            except VmaError as exc:
                log.warning("source cleanup failed", job_id=job.job_id, error=str(exc))
        if job.snapshot_id and not success and resume.resumable(job, self.job_dir(job.job_id)):
            log.info(
                "snapshot kept: a retry can resume the full copy",
                job_id=job.job_id,
                snapshot=job.snapshot_id,
            )
        elif job.snapshot_id:
            try:
                with self.vcenter.client() as vc:
                    vc.remove_snapshot(job.vm_id, job.snapshot_id)
                log.info("snapshot removed", job_id=job.job_id, snapshot=job.snapshot_id)
            except VmaError as exc:
                log.warning(
                    "snapshot removal failed (swept by the next job)",
                    job_id=job.job_id,
                    error=str(exc),
                )
