"""The migration itself, driven only through the OMA's public API (plus writes into the lab
VM's disks, which stand in for the running guest, and the final byte check).

Order: register the VMA and the CloudStack target, save the vCenter login, discover, add the
VM, full replication, new guest writes, incremental replication with a test failover started
while it runs (ended, CloudStack checked clean), more guest writes, live failover (whose final
sync moves the last writes), byte verification.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import progress, rehearsal
from .api import DemoError, OmaApi
from .rehearsal import TestRun
from .stack import Lab
from .verify import DiskCheck, check_context

MiB = 1 << 20
FAILOVER_TERMINAL = {"completed", "done", "failed", "rolled_back", "cancelled"}
_JOB_DONE = {"completed", "failed", "stopped"}


@dataclass
class SyncResult:
    """One replication as the summary shows it."""

    label: str
    job: dict[str, Any]

    @property
    def bytes_moved(self) -> int:
        """Bytes the sync moved (allocated bytes of a full copy, changed bytes otherwise)."""
        return int(self.job.get("bytes_done") or 0)

    @property
    def seconds(self) -> float:
        """started_at → finished_at of the job (0 when unknown)."""
        return seconds_between(self.job.get("started_at"), self.job.get("finished_at"))


@dataclass
class Outcome:
    """Everything the summary needs."""

    context_id: str = ""
    syncs: list[SyncResult] = field(default_factory=list)
    failover: dict[str, Any] | None = None
    test: TestRun | None = None
    checks: list[DiskCheck] = field(default_factory=list)
    written: int = 0


def seconds_between(start: str | None, end: str | None) -> float:
    """Seconds between two RFC 3339 timestamps (0 when one is missing)."""
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


class Migration:
    """Runs the steps; ``say(tag, text)`` prints progress lines."""

    def __init__(
        self,
        lab: Lab,
        say: Callable[[str, str], None],
        *,
        tty: bool | None = None,
        disk_offering: str = "custom",
    ) -> None:
        self.lab = lab
        self.disk_offering = disk_offering
        self.say = say
        self.tty = tty
        self.api = OmaApi(lab.oma.url, lab.oma.admin_token, ca_file=lab.oma.ca_file)
        self.out = Outcome()

    # -- setup through the API ------------------------------------------------------------

    def register(self) -> str:
        """Register VMA, CloudStack target and vCenter login; discover; add the VM → context id.

        The VMA enrolls with a one-time code: it gets its certificate from the OMA's CA and
        serves HTTPS with it, and the replicas go over NBD with TLS."""
        from labtest.oma import enroll_vma

        from .stack import _secret_file

        lab, api = self.lab, self.api
        vma = api.get(f"vma-appliances/{enroll_vma(lab.oma, lab.vma, 'vma-lab')}")
        _secret_file(lab.workdir / "vma-token", lab.vma.token)  # the token the OMA issued
        api.post(f"vma-appliances/{vma['id']}/test")
        self.say(
            "register",
            f"VMA {vma['name']} ({lab.vma.url}) enrolled (one-time code, certificate from the "
            "OMA CA) and reachable over HTTPS",
        )
        target = api.post(
            "cloudstack-targets",
            {
                "name": "cloudstack-lab",
                "endpoint": lab.sim.endpoint,
                "api_key": lab.sim.api_key,
                "secret_key": lab.sim.secret_key,
                "zone_id": lab.sim.zone_id,
                "oma_vm_id": lab.sim.oma_vm_id,
                "disk_offering_id": self.disk_offering_id(),
                "is_default": True,
            },
        )
        self.say("register", f"CloudStack target {target['name']} ({lab.sim.endpoint}) registered")
        cred = api.post(
            "vmware-credentials",
            {
                "name": "vcsim",
                "vcenter": f"{lab.vc.host}:{lab.vc.port}",
                "username": lab.vc.username,
                "password": lab.vc.password,
                "insecure": True,
                "is_default": True,
            },
        )
        found = api.post("discovery", {"vma_id": vma["id"], "credential_id": cred["id"]})
        vms = [v for v in found["vms"] if v.get("id") == lab.vm["id"]]
        if not vms:
            raise DemoError(f"discovery did not list the lab VM {lab.vm['id']}")
        self.say(
            "discover", f"{len(found['vms'])} VMs in {found['vcenter']}; adding {vms[0]['name']}"
        )
        added = api.post(
            "discovery/add", {"vma_id": vma["id"], "credential_id": cred["id"], "vms": vms}
        )
        if not added.get("added"):
            raise DemoError(f"discovery/add added nothing: {added}")
        self.out.context_id = added["added"][0]["id"]
        self.test_target(target["id"])
        return self.out.context_id

    def disk_offering_id(self) -> str:
        """The simulator's disk offering for ``--disk-offering``: Custom, or Small (5 GB fixed)."""
        if self.disk_offering == "fixed":
            return str(self.lab.sim.fixture["disk_offering_ids"]["Small"])
        return str(self.lab.sim.custom_disk_offering_id)

    def test_target(self, target_id: str) -> None:
        """``POST /cloudstack-targets/{id}/test`` once the VM is known: the disk offering's
        notes are shown; a problem (it cannot carry the VM's disks) ends the demo."""
        result = self.api.post(f"cloudstack-targets/{target_id}/test")
        offering = result.get("disk_offering") or {}
        for note in offering.get("notes") or []:
            self.say("register", note)
        if not result.get("ok"):
            raise DemoError(f"CloudStack target test: {result.get('error')}")

    # -- replication ------------------------------------------------------------------------

    def replicate(self, kind: str, label: str) -> SyncResult:
        """Request a replication of ``kind`` and follow it with a progress bar."""
        job = self.api.post("replications", {"vm_context_id": self.out.context_id, "type": kind})
        self.say(label, f"job {job['id']} requested ({kind})")
        return self._follow_sync(job, label, kind)

    def replicate_with_test(self, kind: str, label: str) -> SyncResult:
        """Request a ``kind`` sync, start a test failover while it runs, follow both; end the
        test and check CloudStack holds exactly what it held before the test."""
        before = rehearsal.inventory(self.lab.sim)
        job = self.api.post("replications", {"vm_context_id": self.out.context_id, "type": kind})
        self.say(label, f"job {job['id']} requested ({kind})")
        rec = rehearsal.start(
            self.api,
            self.out.context_id,
            self.lab.sim.network_ids["guest-net-2"],  # the isolated test network
            {
                "service_offering_id": self.lab.sim.custom_service_offering_id,
                "template_id": self.lab.sim.template_id,
            },
        )
        state = self.api.get(f"replications/{job['id']}")["status"]
        test = TestRun(rec["id"], during_job=job["id"] if state not in _JOB_DONE else None)
        self.out.test = test
        self.say("test", f"test failover {rec['id']} accepted while job {job['id']} is {state}")
        result = self._follow_sync(job, label, kind)
        rec = rehearsal.follow(
            self.api, test.id, self.say, settled=rehearsal.started, steps=lambda r: r["steps"]
        )
        if rec["status"] != "completed":
            raise DemoError(f"test failover {rec['status']}: {rec.get('error')}")
        test.vm_name = (rec.get("result") or {}).get("test_vm_name") or ""
        test.start_seconds = seconds_between(rec.get("created_at"), rec.get("finished_at"))
        self.say("test", f"test VM {test.vm_name} running on copies of the replicas")
        status, ended = self.api.request(
            "POST", f"vm-contexts/{self.out.context_id}/test-failover/end", {}
        )
        if status != 202:
            raise DemoError(f"POST /vm-contexts/{{id}}/test-failover/end → {status}: {ended}")
        rec = rehearsal.follow(
            self.api, test.id, self.say, settled=rehearsal.ended, steps=rehearsal.end_steps
        )
        if rec["status"] != "ended":
            raise DemoError(
                f"ending the test failover failed: {(rec.get('end') or {}).get('error')}"
            )
        end = rec.get("end") or {}
        test.end_seconds = seconds_between(end.get("created_at"), end.get("finished_at"))
        after = rehearsal.inventory(self.lab.sim)
        test.clean = after == before
        if not test.clean:
            raise DemoError(f"CloudStack is not as before the test: {before} → {after}")
        self.say(
            "test",
            f"ended in {test.end_seconds:.1f} s; CloudStack holds what it held before the test "
            f"({len(after['vms'])} VMs, {len(after['volumes'])} volumes, "
            f"{len(after['snapshots'])} snapshots)",
        )
        return result

    def _follow_sync(self, job: dict[str, Any], label: str, kind: str) -> SyncResult:
        done = progress.follow(self.api, job["id"], f"{label} sync", tty=self.tty)
        if done["status"] != "completed":
            raise DemoError(
                f"{label} replication {done['id']} {done['status']}: "
                f"{done.get('error_class')}: {done.get('error_message')}"
            )
        result = SyncResult(label, done)
        self.out.syncs.append(result)
        self.say(
            label,
            f"completed: {_size(result.bytes_moved)} moved in {result.seconds:.1f} s "
            f"({done.get('sync_type')})",
        )
        return result

    def guest_writes(self, label: str, per_disk: int, seed: int) -> int:
        """Write new data into every source disk (random blocks and a zeroed range)."""
        from labtest.labvm import write_lab_disk

        rng = random.Random(seed)
        total = 0
        for disk in self.lab.vm["disks"]:
            key, size = str(disk["key"]), int(disk["capacity_bytes"])
            chunk = max(per_disk // 4, 64 * 1024)
            for _ in range(3):
                offset = rng.randrange(0, (size - chunk) // 65536) * 65536
                total += write_lab_disk(
                    self.lab.images, self.lab.vm["id"], key, offset, os.urandom(chunk)
                )
            offset = rng.randrange(0, (size - chunk) // 65536) * 65536
            total += write_lab_disk(self.lab.images, self.lab.vm["id"], key, offset, (0, chunk))
        self.out.written += total
        self.say(label, f"the guest wrote {_size(total)} across {len(self.lab.vm['disks'])} disks")
        return total

    # -- failover ----------------------------------------------------------------------------

    def failover(self, graceful_timeout_s: int = 5) -> dict[str, Any]:
        """Live failover through ``POST /vm-contexts/{id}/failover``; follow its steps."""
        ctx = self.api.get(f"vm-contexts/{self.out.context_id}")
        nics = (ctx.get("spec") or {}).get("nics") or self.lab.vm.get("nics") or []
        mappings = {n["network"]: self.lab.sim.network_id for n in nics if n.get("network")}
        body = {
            "type": "live",
            "network_mappings": mappings,
            "service_offering_id": self.lab.sim.custom_service_offering_id,
            "template_id": self.lab.sim.template_id,
            "keep_macs": True,
            "graceful_timeout_s": graceful_timeout_s,
            "force": True,
        }
        status, rec = self.api.request("POST", f"vm-contexts/{self.out.context_id}/failover", body)
        if status == 404 and not (
            isinstance(rec, dict) and "error" in rec and rec["error"].get("field")
        ):
            raise DemoError(
                "this OMA has no live failover endpoint (POST /vm-contexts/{id}/failover → 404)"
            )
        if status != 202:
            from .api import error_text

            raise DemoError(f"POST /vm-contexts/{{id}}/failover → {status}: {error_text(rec)}")
        self.say("failover", f"live failover {rec['id']} accepted")
        rec = self._follow_failover(rec["id"])
        self.out.failover = rec
        if rec.get("status") not in ("completed", "done"):
            failed = [s for s in rec.get("steps") or [] if s.get("status") == "failed"]
            why = failed[0].get("error") if failed else rec.get("error")
            name = failed[0].get("name") if failed else "?"
            raise DemoError(f"live failover {rec['status']} at step {name}: {why}")
        job_id = final_sync_job_id(rec)
        if job_id:
            self.out.syncs.append(
                SyncResult("final (failover)", self.api.get(f"replications/{job_id}"))
            )
        self.say("failover", f"completed: downtime {downtime_seconds(rec) or 0:.1f} s")
        return rec

    def _follow_failover(self, failover_id: str, timeout: float = 600.0) -> dict[str, Any]:
        seen: dict[str, str] = {}
        followed: set[str] = set()
        deadline = time.monotonic() + timeout
        while True:
            rec = self.api.get(f"failovers/{failover_id}")
            for step in rec.get("steps") or []:
                name, status = step.get("name"), step.get("status")
                if seen.get(name) != status and status != "pending":
                    seen[name] = status
                    took = seconds_between(step.get("started_at"), step.get("finished_at"))
                    extra = (
                        f" ({took:.1f} s)"
                        if status in ("done", "completed", "skipped") and took
                        else ""
                    )
                    err = f": {step.get('error')}" if step.get("error") else ""
                    self.say("failover", f"  step {name}: {status}{extra}{err}")
            if rec.get("status") in FAILOVER_TERMINAL:
                return rec
            job_id = rec.get("final_sync_job_id")
            if job_id and job_id not in followed and seen.get("final_sync") == "running":
                followed.add(job_id)  # show the final sync like the other syncs
                progress.follow(self.api, job_id, "final sync", tty=self.tty)
                continue
            if time.monotonic() > deadline:
                raise DemoError(
                    f"live failover {failover_id} still {rec.get('status')} after {timeout:.0f} s"
                )
            time.sleep(0.25)

    # -- verification ---------------------------------------------------------------------

    def verify(self) -> list[DiskCheck]:
        """sha256 of every source disk vs its replica volume; raise when one differs."""
        ctx = self.api.get(f"vm-contexts/{self.out.context_id}")
        checks = check_context(ctx, self.lab.vm["images"], self.lab.sim)
        self.out.checks = checks
        for c in checks:
            mark = "equal" if c.source_sha256 == c.replica_sha256 else "DIFFERENT"
            tail = ""
            if c.tail_bytes:
                zero = "all zero" if c.tail_zero else "NOT ZERO"
                tail = f"; the volume's {_size(c.tail_bytes)} after them: {zero}"
            self.say(
                "verify",
                f"disk {c.disk_key} ({_size(c.size)}) → volume {c.volume_id}: "
                f"sha256 of the source's {_size(c.size)} {c.source_sha256[:16]}… {mark}{tail}",
            )
        bad = [c.disk_key for c in checks if not c.equal]
        if bad:
            raise DemoError(f"replica bytes differ from the source for disk(s) {', '.join(bad)}")
        return checks


def final_sync_job_id(rec: dict[str, Any]) -> str | None:
    """The job id of the failover's final sync, wherever the record keeps it."""
    for where in (rec.get("result") or {}, rec):
        for key in ("final_sync_job_id", "job_id"):
            if where.get(key):
                return str(where[key])
    for step in rec.get("steps") or []:
        data = step.get("data") or {}
        if isinstance(data, dict) and data.get("job_id"):
            return str(data["job_id"])
    return None


def downtime_seconds(rec: dict[str, Any]) -> float | None:
    """The measured downtime of a failover record (source off → target running)."""
    for where in (rec.get("result") or {}, rec):
        if where.get("downtime_seconds") is not None:
            return float(where["downtime_seconds"])
    return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
