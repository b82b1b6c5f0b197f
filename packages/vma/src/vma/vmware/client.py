"""VSphereClient: the VMA's one way to talk to vCenter (pyVmomi).

Every public method translates pyVmomi faults and socket errors into ``vma.errors`` at one edge
(``faults.vsphere_errors``); inventory is read in bulk through the PropertyCollector, never by
attribute access to possibly unset properties. One client holds one vCenter session; it is not
thread-safe (use one client per thread or request).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from migration_common import get_logger, register_secret
from vma.errors import (
    SnapshotNotFoundError,
    VmNotFoundError,
    VmwareConnectionError,
    VmwareError,
)
from vma.vmware import cbt, inventory, power, provisioning, snapshots
from vma.vmware.faults import vsphere_errors
from vma.vmware.properties import retrieve_one
from vma.vmware.tasks import DEFAULT_TASK_TIMEOUT_S, wait_for_task

T = TypeVar("T")
log = get_logger("vma.vmware")


class VSphereClient:
    """A vCenter session: discovery, snapshots, CBT and power operations.

    Connects lazily on first use, logs out on ``close()`` (or leaving the ``with`` block) and
    logs in again once if vCenter reports the session expired. TLS is verified unless
    ``insecure`` (optionally against ``ca_file``). ``datacenter`` limits discovery and
    placement to one datacenter. The password is registered for log redaction and never logged.
    """

    def __init__(
        self,
        host: str,
        username: str,
        password: str,
        *,
        port: int = 443,
        insecure: bool = False,
        datacenter: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 60.0,
        task_timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
    ) -> None:
        register_secret(password)
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.insecure = insecure
        self.datacenter = datacenter
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self._si: vim.ServiceInstance | None = None
        self._thumbprint: str | None = None

    def __repr__(self) -> str:
        return f"VSphereClient({self.where!r}, username={self.username!r})"

    @property
    def where(self) -> str:
        """``host:port`` of the vCenter (for messages)."""
        return f"{self.host}:{self.port}"

    # -- session -------------------------------------------------------------------------

    def connect(self) -> None:
        """Log in now (otherwise the first call does); raise VmwareConnectionError on failure."""
        if self._si is not None:
            return
        # Always pass an explicit context: pyVmomi silently skips certificate checks for
        # localhost/127.0.0.1 when it gets none.
        ctx = self._tls_context()
        try:
            with vsphere_errors("connect", where=self.where):
                self._si = SmartConnect(
                    host=self.host,
                    port=self.port,
                    user=self.username,
                    pwd=self._password,
                    sslContext=ctx,
                    disableSslCertValidation=self.insecure,
                    httpConnectionTimeout=self.timeout_s,
                )
        except VmwareError:
            raise
        except Exception as exc:  # pyVmomi raises a bare Exception for "not a VIM server"
            raise VmwareConnectionError(
                f"connect: {self.where} does not answer as a vCenter SDK endpoint ({exc})"
            ) from exc
        log.info("vcenter connected", vcenter=self.where, username=self.username)

    def close(self) -> None:
        """Log out and drop the connections (safe to call twice)."""
        si, self._si = self._si, None
        if si is not None:
            Disconnect(si)
            log.info("vcenter disconnected", vcenter=self.where)

    def _tls_context(self) -> ssl.SSLContext | None:
        """The TLS trust of this client: None = no verification (``insecure``)."""
        return None if self.insecure else ssl.create_default_context(cafile=self.ca_file)

    def server_thumbprint(self) -> str:
        """SHA-1 thumbprint of vCenter's TLS certificate (``AA:BB:…``), as nbdkit-vddk's
        ``thumbprint=`` wants; VDDK then pins that certificate. The certificate is read over a
        TLS connection verified exactly as the API session is (CA file, host name), unless
        ``insecure``; the answer is kept for the life of the client."""
        if self._thumbprint is None:
            self._thumbprint = self._read_thumbprint()
        return self._thumbprint

    def _read_thumbprint(self) -> str:
        ctx = self._tls_context()
        if ctx is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with (
            vsphere_errors("read certificate", where=self.where),
            socket.create_connection((self.host, self.port), timeout=self.timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=self.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        if not der:
            raise VmwareConnectionError(f"read certificate: {self.where} sent no certificate")
        digest = hashlib.sha1(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    def __enter__(self) -> VSphereClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, action: str, fn: Callable[[vim.ServiceInstance], T], *, vm_id: str | None = None
    ) -> T:
        """Run ``fn(service_instance)`` with faults translated; re-login once if expired."""
        for attempt in (1, 2):
            self.connect()
            assert self._si is not None
            try:
                with vsphere_errors(action, vm_id=vm_id, where=self.where):
                    return fn(self._si)
            except VmwareConnectionError as exc:
                expired = isinstance(exc.__cause__, vim.fault.NotAuthenticated)
                if attempt == 2 or not expired:
                    raise
                log.info("vcenter session expired, logging in again", vcenter=self.where)
                self.close()  # drops the old connections; its logout fails quietly
        raise AssertionError("unreachable")

    # -- lookup --------------------------------------------------------------------------

    def _vm(self, si: vim.ServiceInstance, vm_id: str) -> vim.VirtualMachine:
        index = si.content.searchIndex
        ref = index.FindByUuid(uuid=vm_id, vmSearch=True, instanceUuid=False)
        if ref is None and vm_id != vm_id.lower():
            ref = index.FindByUuid(uuid=vm_id.lower(), vmSearch=True, instanceUuid=False)
        if ref is None:
            raise VmNotFoundError(f"VM {vm_id} not found in vCenter {self.where}", vm_id=vm_id)
        return ref

    def _snapshot(self, si: vim.ServiceInstance, vm: Any, vm_id: str, snapshot_id: str) -> Any:
        entry = snapshots.find_snapshot(si, vm, snapshot_id)
        if entry is None:
            raise SnapshotNotFoundError(f"VM {vm_id} has no snapshot {snapshot_id}", vm_id=vm_id)
        return entry.ref

    def _wait(self, si: vim.ServiceInstance, task: Any, action: str, vm_id: str | None) -> Any:
        return wait_for_task(si, task, action=action, vm_id=vm_id, timeout_s=self.task_timeout_s)

    # -- inventory -----------------------------------------------------------------------

    def discover(self) -> list[dict]:
        """Every VM (not templates) with disks and NICs, read in bulk, sorted by path."""
        vms = self._call("discover", lambda si: inventory.list_vms(si, self.datacenter))
        log.info("vcenter discovery", vcenter=self.where, vms=len(vms))
        return vms

    def get_vm(self, vm_id: str) -> dict:
        """One VM by its ``config.uuid``; VmNotFoundError when there is none."""

        def run(si: vim.ServiceInstance) -> dict:
            vm = inventory.read_vm(si, self._vm(si, vm_id))
            if not inventory.in_datacenter(vm, self.datacenter):
                raise VmNotFoundError(
                    f"VM {vm_id} not found in datacenter {self.datacenter}", vm_id=vm_id
                )
            return vm

        return self._call("get VM", run, vm_id=vm_id)

    def create_vm(
        self,
        name: str,
        *,
        disks_bytes: list[int],
        cpus: int = 2,
        memory_mb: int = 2048,
        guest_id: str = "otherLinux64Guest",
        firmware: str = "bios",
        networks: list[str] | None = None,
        datastore: str | None = None,
    ) -> dict:
        """Create a powered-off VM (thin disks on one PVSCSI controller, a vmxnet3 NIC per
        network name; ``networks=None`` = no NIC) in the datacenter (the configured one, else
        the first) and return its VM dict."""

        def run(si: vim.ServiceInstance) -> dict:
            names = inventory.read_names(si)
            if not names.datacenters:
                raise VmwareError("vCenter has no datacenter")
            dc_name = self.datacenter or sorted(names.datacenters)[0]
            if dc_name not in names.datacenters:
                raise VmwareError(f"datacenter {dc_name!r} not found")
            placement = provisioning.find_placement(si, names.datacenters[dc_name], datastore)
            spec = provisioning.vm_config_spec(
                si,
                placement,
                name,
                disks_bytes=disks_bytes,
                cpus=cpus,
                memory_mb=memory_mb,
                guest_id=guest_id,
                firmware=firmware,
                networks=list(networks or []),
            )
            task = placement.folder.CreateVM_Task(config=spec, pool=placement.pool)
            vm = self._wait(si, task, f"create VM {name!r}", None)
            return inventory.read_vm(si, vm)

        created = self._call("create VM", run)
        log.info("vm created", vm_id=created["id"], name=name, disks=len(created["disks"]))
        return created

    # -- power ---------------------------------------------------------------------------

    def power_state(self, vm_id: str) -> str:
        """``poweredOn`` | ``poweredOff`` | ``suspended``."""
        return self._call(
            "power state", lambda si: power.power_state(si, self._vm(si, vm_id)), vm_id=vm_id
        )

    def power_on(self, vm_id: str) -> None:
        """Power the VM on (no-op when it is already on)."""
        self._call(
            "power on",
            lambda si: power.power_on(
                si, self._vm(si, vm_id), vm_id=vm_id, task_timeout_s=self.task_timeout_s
            ),
            vm_id=vm_id,
        )
        log.info("vm powered on", vm_id=vm_id)

    def power_off(
        self,
        vm_id: str,
        *,
        graceful: bool = True,
        timeout_s: float = 300.0,
        force_after_timeout: bool = True,
        poll_s: float = 1.0,
    ) -> dict:
        """Power the VM off and say how.

        ``graceful``: ask the guest to shut down (ShutdownGuest, needs VMware Tools) and wait up
        to ``timeout_s`` for ``poweredOff``; if the guest refuses or is still running then,
        power off hard when ``force_after_timeout`` (else raise VmwareError, VM untouched).
        Returns ``{"method": "graceful"|"forced"|"already_off", "seconds": float}`` plus
        ``"reason"`` when a graceful attempt fell back to forcing.
        """
        result = self._call(
            "power off",
            lambda si: power.power_off(
                si,
                self._vm(si, vm_id),
                vm_id=vm_id,
                graceful=graceful,
                timeout_s=timeout_s,
                force_after_timeout=force_after_timeout,
                poll_s=poll_s,
                task_timeout_s=self.task_timeout_s,
            ),
            vm_id=vm_id,
        )
        log.info("vm powered off", vm_id=vm_id, **result)
        return result

    # -- CBT -----------------------------------------------------------------------------

    def cbt_status(self, vm_id: str) -> dict:
        """``{"enabled": bool, "supported": bool}`` for the VM's changed block tracking."""

        def run(si: vim.ServiceInstance) -> dict:
            props = retrieve_one(
                si,
                self._vm(si, vm_id),
                ["config.changeTrackingEnabled", "capability.changeTrackingSupported"],
            )
            return {
                "enabled": bool(props.get("config.changeTrackingEnabled", False)),
                "supported": bool(props.get("capability.changeTrackingSupported", False)),
            }

        return self._call("CBT status", run, vm_id=vm_id)

    def enable_cbt(self, vm_id: str) -> dict:
        """Turn changed block tracking on (no-op when on) and return ``cbt_status``.

        vSphere starts tracking at the next stun/unstun of the VM; the replication snapshot
        that follows is one, so no extra snapshot is taken here.
        """
        status = self.cbt_status(vm_id)
        if status["enabled"]:
            return status
        if not status["supported"]:
            raise VmwareError(f"VM {vm_id} does not support changed block tracking", vm_id=vm_id)

        def run(si: vim.ServiceInstance) -> None:
            spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
            self._wait(si, self._vm(si, vm_id).ReconfigVM_Task(spec=spec), "enable CBT", vm_id)

        self._call("enable CBT", run, vm_id=vm_id)
        log.info("cbt enabled", vm_id=vm_id)
        return self.cbt_status(vm_id)

    def disk_change_ids(self, vm_id: str, snapshot_id: str) -> dict[str, str | None]:
        """disk key → the disk's changeId in the snapshot (None where CBT was off)."""

        def run(si: vim.ServiceInstance) -> dict[str, str | None]:
            vm = self._vm(si, vm_id)
            return cbt.change_ids(si, self._snapshot(si, vm, vm_id, snapshot_id))

        return self._call("read change IDs", run, vm_id=vm_id)

    def query_changed_areas(
        self, vm_id: str, snapshot_id: str, disk_key: str, change_id: str
    ) -> list[tuple[int, int]]:
        """Sorted, merged ``(offset, length)`` areas of a disk changed since ``change_id``
        (``"*"`` = every allocated area), paged to the end of the disk."""

        def run(si: vim.ServiceInstance) -> list[tuple[int, int]]:
            vm = self._vm(si, vm_id)
            snap = self._snapshot(si, vm, vm_id, snapshot_id)
            return cbt.changed_areas(si, vm, snap, disk_key, change_id, vm_id=vm_id)

        return self._call("query changed areas", run, vm_id=vm_id)

    # -- snapshots -----------------------------------------------------------------------

    def list_snapshots(self, vm_id: str) -> list[dict]:
        """The VM's snapshots, parents first: ``[{"id", "name", "description", "depth"}]``."""

        def run(si: vim.ServiceInstance) -> list[dict]:
            entries = snapshots.list_snapshots(si, self._vm(si, vm_id))
            return [
                {"id": e.id, "name": e.name, "description": e.description, "depth": e.depth}
                for e in entries
            ]

        return self._call("list snapshots", run, vm_id=vm_id)

    def create_snapshot(
        self, vm_id: str, name: str, description: str = "", *, quiesce: bool = False
    ) -> str:
        """Take a disk-only snapshot (no memory) and return its moref id (``snapshot-N``)."""

        def run(si: vim.ServiceInstance) -> str:
            task = self._vm(si, vm_id).CreateSnapshot_Task(
                name=name, description=description, memory=False, quiesce=quiesce
            )
            return self._wait(si, task, f"create snapshot {name!r}", vm_id)._moId

        snapshot_id = self._call("create snapshot", run, vm_id=vm_id)
        log.info("snapshot created", vm_id=vm_id, snapshot_id=snapshot_id, name=name)
        return snapshot_id

    def remove_snapshot(self, vm_id: str, snapshot_id: str) -> None:
        """Remove one snapshot (its children stay; its changes are consolidated)."""

        def run(si: vim.ServiceInstance) -> None:
            snap = self._snapshot(si, self._vm(si, vm_id), vm_id, snapshot_id)
            task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
            self._wait(si, task, f"remove snapshot {snapshot_id}", vm_id)

        self._call("remove snapshot", run, vm_id=vm_id)
        log.info("snapshot removed", vm_id=vm_id, snapshot_id=snapshot_id)

    def sweep_snapshots(self, vm_id: str, prefix: str, keep: str | None = None) -> list[str]:
        """Remove every snapshot whose name starts with ``prefix`` except ``keep`` (an id);
        deepest first. Returns the removed ids. Other snapshots are never touched."""
        if not prefix:
            raise ValueError("sweep_snapshots needs a non-empty name prefix")

        def run(si: vim.ServiceInstance) -> list[str]:
            vm = self._vm(si, vm_id)
            doomed = [
                e
                for e in snapshots.list_snapshots(si, vm)
                if e.name.startswith(prefix) and e.id != keep
            ]
            removed = []
            for entry in sorted(doomed, key=lambda e: -e.depth):
                task = entry.ref.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
                self._wait(si, task, f"remove snapshot {entry.id}", vm_id)
                removed.append(entry.id)
            return removed

        removed = self._call("sweep snapshots", run, vm_id=vm_id)
        if removed:
            log.info("snapshots swept", vm_id=vm_id, prefix=prefix, removed=",".join(removed))
        return removed
