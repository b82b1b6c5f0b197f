"""The OMA's CloudStack client: a thin, typed layer over the ``cs`` library.

Every call goes through :meth:`CloudStackClient._call`, the one place where ``cs`` and
``requests`` exceptions become :class:`~oma.errors.CloudStackError` (carrying CloudStack's
``errorcode`` and ``errortext`` and the command) or :class:`~oma.errors.CloudStackUnreachable`.
Async commands wait for their job (``queryAsyncJobResult`` every ``poll_interval`` seconds, at
most ``job_timeout``) and return the job's entity. Requests are POSTed (form body), so API keys
and signatures stay out of proxy and server access logs; the secret key is registered for log
redaction and never logged. What offerings allow is decided in :mod:`.offerings`; offerings and
settings are looked up once per client.
"""

from __future__ import annotations

import math
from typing import Any

import cs
import requests

from migration_common import get_logger, register_secret

from ..errors import CloudStackError, CloudStackUnreachable, OfferingMismatch
from .offerings import (
    CUSTOM_DISK_MAX_SETTING,
    MAX_VOLUME_SETTING,
    disk_offering_facts,
    disk_problem,
    offering_details,
    size_in_gib,
)

log = get_logger("oma.cloudstack")

REMOVED_VM_STATES = frozenset({"Destroyed", "Expunging", "Expunged"})
"""VM states of a VM that is gone for the OMA; admins still see the first two in
listVirtualMachines (``QueryManagerImpl.searchForUserVMsInternal`` lists every state but
Expunged for them)."""
ADMIN_READS = frozenset({"listConfigurations"})
"""Commands only admins may run, tried for optional facts: a refusal is expected (logged at
info, not as a warning)."""
PERMISSION_DENIED = 531
"""CloudStack's errorcode for a PermissionDeniedException (``ApiErrorCode.ACCOUNT_ERROR``)."""


def is_removed(vm: dict[str, Any]) -> bool:
    """Whether a VM found by id is gone for the OMA (Destroyed, Expunging or Expunged)."""
    return vm.get("state") in REMOVED_VM_STATES


class CloudStackClient:
    """Volumes, VMs and the catalog of one CloudStack endpoint (``…/client/api``)."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        secret_key: str,
        *,
        poll_interval: float = 2.0,
        job_timeout: float = 600.0,
        verify: bool = True,
        request_timeout: int = 30,
        retries: int = 2,
    ) -> None:
        """``retries``: extra attempts on connection errors, for list and job-poll calls only
        (``cs`` never retries commands that change state); ``request_timeout`` per HTTP call.
        """
        register_secret(secret_key)
        self.endpoint = endpoint
        self._cs = cs.CloudStack(
            endpoint=endpoint,
            key=api_key,
            secret=secret_key,
            method="post",
            poll_interval=poll_interval,
            job_timeout=max(1, math.ceil(job_timeout)),
            timeout=request_timeout,
            verify=verify,
            dangerous_no_tls_verify=not verify,
            fetch_result=True,
            retry=retries,
        )
        self._offerings: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._settings: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"CloudStackClient({self.endpoint!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._cs.session.close()

    def __enter__(self) -> CloudStackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the one adapter ------------------------------------------------------------------
    def _call(self, command: str, **params: Any) -> Any:
        """Run ``command``; translate every ``cs``/``requests`` failure into our errors."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            return getattr(self._cs, command)(**params)
        except cs.CloudStackApiException as exc:
            err = exc.error if isinstance(exc.error, dict) else {}
            status = getattr(exc.response, "status_code", None)
            code = err.get("errorcode") or status
            text = err.get("errortext") or str(exc.args[0] if exc.args else exc)
            level = log.info if command in ADMIN_READS else log.warning
            level("cloudstack error", command=command, errorcode=code, errortext=text)
            raise CloudStackError(text, errorcode=code, command=command) from exc
        except cs.CloudStackException as exc:  # job timeout, non-JSON answer (wrong URL)
            status = getattr(exc.response, "status_code", None)
            text = " ".join(str(a) for a in exc.args) or type(exc).__name__
            log.warning("cloudstack error", command=command, errorcode=status, errortext=text)
            raise CloudStackError(text, errorcode=status, command=command) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            # the exception text holds the request URL: report only its kind and the endpoint
            text = f"cannot reach CloudStack at {self.endpoint} ({type(exc).__name__})"
            log.warning("cloudstack unreachable", command=command, endpoint=self.endpoint)
            raise CloudStackUnreachable(text, command=command) from exc
        except requests.RequestException as exc:
            text = f"request to CloudStack at {self.endpoint} failed ({type(exc).__name__})"
            raise CloudStackUnreachable(text, command=command) from exc

    def _list(self, command: str, **params: Any) -> list[dict[str, Any]]:
        return list(self._call(command, fetch_list=True, **params))

    def _one(self, command: str, **params: Any) -> dict[str, Any] | None:
        """First item of a list filtered by id; None when CloudStack says it does not exist."""
        try:
            items = self._list(command, **params)
        except CloudStackError as exc:
            if exc.errorcode == 431:  # "Invalid parameter id value=… entity does not exist"
                return None
            raise
        return items[0] if items else None

    # ----- catalog --------------------------------------------------------------------------
    def test(self) -> dict[str, Any]:
        """Prove endpoint and credentials work with a cheap ``listZones``."""
        zones = self.list_zones()
        return {"ok": True, "zones": [{"id": z["id"], "name": z.get("name")} for z in zones]}

    def list_zones(self) -> list[dict[str, Any]]:
        """Every zone."""
        return self._list("listZones")

    def list_service_offerings(self) -> list[dict[str, Any]]:
        """Every compute offering."""
        return self._list("listServiceOfferings")

    def list_disk_offerings(self) -> list[dict[str, Any]]:
        """Every disk offering."""
        return self._list("listDiskOfferings")

    def service_offering(self, offering_id: str) -> dict[str, Any] | None:
        """The compute offering (looked up once per client), or None when it does not exist."""
        return self._offering("listServiceOfferings", offering_id)

    def disk_offering(self, offering_id: str) -> dict[str, Any] | None:
        """The disk offering (looked up once per client), or None when it does not exist."""
        return self._offering("listDiskOfferings", offering_id)

    def _offering(self, command: str, offering_id: str) -> dict[str, Any] | None:
        key = (command, offering_id)
        if key not in self._offerings:
            self._offerings[key] = self._one(command, id=offering_id)
        return self._offerings[key]

    def setting(self, name: str) -> str | None:
        """A global setting's value (``listConfigurations``, looked up once per client), or None
        when the key may not read it (only admins may) or it does not exist."""
        if name not in self._settings:
            try:
                items = self._list("listConfigurations", name=name)
            except CloudStackUnreachable:
                raise
            except CloudStackError:
                items = []
            value = next((i.get("value") for i in items if i.get("name") == name), None)
            self._settings[name] = None if value is None else str(value)
        return self._settings[name]

    def custom_disk_max_gib(self) -> int | None:
        """The largest custom disk size CloudStack accepts in GB: the lower of
        ``custom.diskoffering.size.max`` and ``storage.max.volume.size``; None when the key cannot
        read them (``VolumeApiServiceImpl.validateCustomDiskOfferingSizeRange`` and
        ``validateVolumeSizeInBytes`` apply both)."""
        values = []
        for name in (CUSTOM_DISK_MAX_SETTING, MAX_VOLUME_SETTING):
            value = self.setting(name)
            if value is not None and value.strip().isdigit():
                values.append(int(value))
        return min(values) if values else None

    def list_networks(self, zone_id: str | None = None) -> list[dict[str, Any]]:
        """Networks (of one zone)."""
        return self._list("listNetworks", zoneid=zone_id, listall=True)

    def list_templates(
        self, zone_id: str | None = None, templatefilter: str = "executable"
    ) -> list[dict[str, Any]]:
        """Templates visible through ``templatefilter``."""
        return self._list("listTemplates", templatefilter=templatefilter, zoneid=zone_id)

    # ----- volumes --------------------------------------------------------------------------
    def create_volume(
        self, name: str, *, zone_id: str, disk_offering_id: str, size_bytes: int
    ) -> dict[str, Any]:
        """Create a data volume of at least ``size_bytes``.

        A customized disk offering gets ``size`` (whole GiB, rounded up; checked against
        :meth:`custom_disk_max_gib` when the key can read it); a fixed one gets no ``size``
        (CloudStack refuses one, ``VolumeApiServiceImpl.allocVolume``) and its own size, which
        must hold the disk. :class:`OfferingMismatch` when the offering cannot carry the disk.
        """
        offering = self.disk_offering(disk_offering_id)
        if offering is None:
            raise OfferingMismatch(
                f"disk offering {disk_offering_id} does not exist", command="createVolume"
            )
        facts = disk_offering_facts(
            offering, max_gib=self.custom_disk_max_gib(), max_source="cloudstack"
        )
        problem = disk_problem(facts, name, size_bytes)
        if problem:
            raise OfferingMismatch(problem, command="createVolume")
        size = size_in_gib(size_bytes) if facts["customized"] else None
        log.info("creating volume", name=name, size_gib=size, offering=offering.get("name"))
        result = self._call(
            "createVolume", name=name, zoneid=zone_id, diskofferingid=disk_offering_id, size=size
        )
        return dict(result["volume"])

    def create_volume_from_snapshot(
        self, name: str, *, snapshot_id: str, zone_id: str | None = None
    ) -> dict[str, Any]:
        """Create a volume from a (BackedUp) snapshot and wait; it gets the snapshot's size and
        disk offering (CloudStack refuses an offering for a data volume's snapshot,
        ``VolumeApiServiceImpl.allocVolume``) and is ``Ready`` with the snapshot's content."""
        log.info("creating volume from snapshot", name=name, snapshot_id=snapshot_id)
        result = self._call("createVolume", name=name, snapshotid=snapshot_id, zoneid=zone_id)
        return dict(result["volume"])

    def get_volume(self, volume_id: str) -> dict[str, Any] | None:
        """The volume, or None when it does not exist."""
        return self._one("listVolumes", id=volume_id, listall=True)

    def list_volumes(
        self, *, vm_id: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Volumes, optionally of one VM and/or with exactly this name."""
        items = self._list("listVolumes", virtualmachineid=vm_id, name=name, listall=True)
        return [v for v in items if name is None or v.get("name") == name]

    def attach_volume(
        self, volume_id: str, vm_id: str, device_id: int | None = None
    ) -> dict[str, Any]:
        """Attach and wait; returns the volume (with ``deviceid``, ``virtualmachineid``)."""
        log.info("attaching volume", volume_id=volume_id, vm_id=vm_id, device_id=device_id)
        result = self._call(
            "attachVolume", id=volume_id, virtualmachineid=vm_id, deviceid=device_id
        )
        return dict(result["volume"])

    def detach_volume(self, volume_id: str) -> dict[str, Any]:
        """Detach and wait; returns the volume."""
        log.info("detaching volume", volume_id=volume_id)
        return dict(self._call("detachVolume", id=volume_id)["volume"])

    def delete_volume(self, volume_id: str, *, missing_ok: bool = False) -> None:
        """Delete a detached volume; with ``missing_ok`` a volume already gone is fine."""
        if missing_ok and self.get_volume(volume_id) is None:
            return
        log.info("deleting volume", volume_id=volume_id)
        self._call("deleteVolume", id=volume_id)

    # ----- virtual machines -----------------------------------------------------------------
    def deploy_vm(
        self,
        *,
        name: str,
        zone_id: str,
        service_offering_id: str,
        template_id: str,
        network_ids: list[str],
        start: bool = False,
        macs: dict[str, str] | None = None,
        cpus: int | None = None,
        memory_mb: int | None = None,
        cpu_speed_mhz: int = 1000,
        boot_type: str | None = None,
        boot_mode: str | None = None,
    ) -> dict[str, Any]:
        """Deploy a VM from a template (stopped unless ``start``); returns the VM.

        ``macs`` maps network id → MAC to keep the source VM's addresses (sent as
        ``iptonetworklist``, which CloudStack does not accept together with ``networkids``).
        ``cpus``/``memory_mb``/``cpu_speed_mhz`` become ``details`` only where the service
        offering leaves them open (:func:`offering_details`); a fixed offering gets none.
        ``boot_type`` (``BIOS``/``UEFI``) and ``boot_mode`` (``LEGACY``/``SECURE``) are sent as
        ``boottype``/``bootmode`` when given.
        """
        params: dict[str, Any] = {
            "name": name,
            "displayname": name,
            "zoneid": zone_id,
            "serviceofferingid": service_offering_id,
            "templateid": template_id,
            "startvm": start,
            "boottype": boot_type,
            "bootmode": boot_mode,
        }
        if macs:
            params["iptonetworklist"] = [
                {"networkid": n, **({"mac": macs[n]} if n in macs else {})} for n in network_ids
            ]
        else:
            params["networkids"] = list(network_ids)
        offering = self.service_offering(service_offering_id)
        if offering is not None:
            details = offering_details(
                offering, cpus=cpus, memory_mb=memory_mb, cpu_speed_mhz=cpu_speed_mhz
            )
            if details:
                params["details"] = details
        log.info("deploying vm", name=name, start=start, boot_type=boot_type, boot_mode=boot_mode)
        return dict(self._call("deployVirtualMachine", **params)["virtualmachine"])

    def start_vm(self, vm_id: str) -> dict[str, Any]:
        """Start and wait; returns the VM."""
        return dict(self._call("startVirtualMachine", id=vm_id)["virtualmachine"])

    def stop_vm(self, vm_id: str, forced: bool = False) -> dict[str, Any]:
        """Stop and wait; returns the VM."""
        return dict(self._call("stopVirtualMachine", id=vm_id, forced=forced)["virtualmachine"])

    def destroy_vm(self, vm_id: str, expunge: bool = True) -> dict[str, Any]:
        """Destroy (and by default expunge) a VM; its data volumes are detached and kept.

        Only admins, or users when ``allow.user.expunge.recover.vm`` is true, may expunge
        (``VmDestroyPermissionServiceImpl.checkExpungeVmPermission``); when CloudStack refuses the
        expunge, the VM is destroyed without it (it stays Destroyed until CloudStack's expunge
        interval passes). The returned VM carries ``expunged``: whether it was expunged.
        """
        log.info("destroying vm", vm_id=vm_id, expunge=expunge)
        try:
            vm = self._call("destroyVirtualMachine", id=vm_id, expunge=expunge)["virtualmachine"]
        except CloudStackUnreachable:
            raise
        except CloudStackError as exc:
            if not (expunge and _expunge_refused(exc)):
                raise
            log.warning("expunge refused; destroying without expunge", vm_id=vm_id)
            expunge = False
            vm = self._call("destroyVirtualMachine", id=vm_id, expunge=False)["virtualmachine"]
        return {**vm, "expunged": expunge}

    def get_vm(self, vm_id: str) -> dict[str, Any] | None:
        """The VM, or None when it does not exist (or was expunged).

        A Destroyed or Expunging VM is returned as it is (see :func:`is_removed`)."""
        return self._one("listVirtualMachines", id=vm_id, listall=True)

    def list_vms(
        self, name: str | None = None, *, include_removed: bool = False
    ) -> list[dict[str, Any]]:
        """Live VMs, optionally only those named exactly ``name``.

        Destroyed, Expunging and Expunged VMs are left out unless ``include_removed``: a name
        found here belongs to a VM that workflows may adopt or must not clash with. (A Destroyed
        VM still holds its host name in its networks until it is expunged.)"""
        items = self._list("listVirtualMachines", name=name, listall=True)
        return [
            v
            for v in items
            if (name is None or v.get("name") == name) and (include_removed or not is_removed(v))
        ]

    # ----- volume snapshots -------------------------------------------------------------
    def create_snapshot(self, volume_id: str, name: str | None = None) -> dict[str, Any]:
        """Snapshot a volume and wait; returns the snapshot (``state`` BackedUp)."""
        log.info("creating snapshot", volume_id=volume_id, name=name)
        return dict(self._call("createSnapshot", volumeid=volume_id, name=name)["snapshot"])

    def list_snapshots(self, volume_id: str | None = None) -> list[dict[str, Any]]:
        """Snapshots, optionally of one volume."""
        return self._list("listSnapshots", volumeid=volume_id, listall=True)

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any] | None:
        """The snapshot, or None when it does not exist."""
        return self._one("listSnapshots", id=snapshot_id, listall=True)

    def revert_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """Revert the snapshot's volume to it (volume detached or its VM stopped)."""
        log.info("reverting snapshot", snapshot_id=snapshot_id)
        return dict(self._call("revertSnapshot", id=snapshot_id)["snapshot"])

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot and wait."""
        log.info("deleting snapshot", snapshot_id=snapshot_id)
        self._call("deleteSnapshot", id=snapshot_id)


def _expunge_refused(exc: CloudStackError) -> bool:
    """Whether CloudStack refused ``expunge=true`` for lack of permission."""
    text = (exc.errortext or "").lower()
    return exc.errorcode == PERMISSION_DENIED or ("expung" in text and "permission" in text)
