"""Render stored entities in CloudStack's JSON response shapes."""

from __future__ import annotations

from typing import Any

from .store import Store

OWNER = {"account": "admin", "domain": "ROOT"}


def _by_id(items: list[dict[str, Any]], item_id: str | None) -> dict[str, Any] | None:
    return next((i for i in items if i["id"] == item_id), None)


def mark_pending(store: Store, entity_id: str, out: dict[str, Any]) -> None:
    """While an async job works on an entity, lists show its ``jobid`` and ``jobstatus 0``."""
    for job in store.data["jobs"].values():
        if job["jobinstanceid"] == entity_id and job["jobstatus"] == 0:
            out["jobid"] = job["jobid"]
            out["jobstatus"] = 0
            return


def _boot(details: dict[str, str]) -> dict[str, str]:
    """UserVmJoinDaoImpl.newUserVmResponse: a UEFI detail gives boottype Uefi and its mode in
    lower case; otherwise Bios/legacy."""
    mode = details.get("UEFI")
    if mode is not None:
        return {"boottype": "Uefi", "bootmode": mode.lower()}
    return {"boottype": "Bios", "bootmode": "legacy"}


def volume(store: Store, vol: dict[str, Any]) -> dict[str, Any]:
    """A volume as ``listVolumes``/job results show it."""
    d = store.data
    zone = d["zones"][0]
    out: dict[str, Any] = {
        "id": vol["id"],
        "name": vol["name"],
        "zoneid": zone["id"],
        "zonename": zone["name"],
        "type": vol["type"],
        "size": vol["size"],
        "state": vol["state"],
        "provisioningtype": "thin",
        "storagetype": "shared",
        "hypervisor": "KVM",
        "destroyed": False,
        "isextractable": False,
        "domainid": "ROOT",
        "created": vol["created"],
        "tags": [],
        **OWNER,
    }
    if vol.get("diskofferingid"):
        off = _by_id(d["disk_offerings"], vol["diskofferingid"])
        out["diskofferingid"] = vol["diskofferingid"]
        out["diskofferingname"] = off["name"] if off else ""
    if vol["state"] != "Allocated":
        out["storage"] = "pool1"
        out["storageid"] = "5f1b1a5e-0000-4000-8000-000000000001"
        out["path"] = vol["id"]
    vm = d["vms"].get(vol.get("virtualmachineid") or "")
    if vm is not None:
        out.update(
            {
                "virtualmachineid": vm["id"],
                "vmname": vm["name"],
                "vmdisplayname": vm["displayname"],
                "vmstate": vm["state"],
                "deviceid": vol["deviceid"],
                "attached": vol.get("attached"),
            }
        )
    mark_pending(store, vol["id"], out)
    return out


def vm(store: Store, vm_: dict[str, Any]) -> dict[str, Any]:
    """A VM as ``listVirtualMachines``/job results show it."""
    d = store.data
    zone = d["zones"][0]
    tpl = _by_id(d["templates"], vm_["templateid"]) or {}
    so = _by_id(d["service_offerings"], vm_["serviceofferingid"]) or {}
    nets = {n["id"]: n for n in d["networks"]}
    nics = []
    for nic in vm_["nics"]:
        net = nets.get(nic["networkid"], {})
        nics.append(
            {
                "id": nic["id"],
                "networkid": nic["networkid"],
                "networkname": net.get("name", ""),
                "ipaddress": nic["ipaddress"],
                "netmask": net.get("netmask", ""),
                "gateway": net.get("gateway", ""),
                "macaddress": nic["macaddress"],
                "isdefault": nic["isdefault"],
                "traffictype": "Guest",
                "type": net.get("type", "Isolated"),
            }
        )
    out: dict[str, Any] = {
        "id": vm_["id"],
        "name": vm_["name"],
        "displayname": vm_["displayname"],
        "state": vm_["state"],
        "zoneid": zone["id"],
        "zonename": zone["name"],
        "templateid": vm_["templateid"],
        "templatename": tpl.get("name", ""),
        "serviceofferingid": vm_["serviceofferingid"],
        "serviceofferingname": so.get("name", ""),
        "cpunumber": vm_["cpunumber"],
        "cpuspeed": vm_["cpuspeed"],
        "memory": vm_["memory"],
        "guestosid": tpl.get("ostypeid", ""),
        "ostypeid": tpl.get("ostypeid", ""),
        "osdisplayname": tpl.get("ostypename", ""),
        "rootdeviceid": 0,
        "rootdevicetype": "ROOT",
        "hypervisor": "KVM",
        "instancename": vm_["instancename"],
        "nic": nics,
        **_boot(vm_["details"]),
        "details": vm_["details"],
        "securitygroup": [],
        "affinitygroup": [],
        "tags": [],
        "created": vm_["created"],
        **OWNER,
    }
    offering = _by_id(d.get("backup_offerings", []), vm_.get("backupofferingid"))
    if offering is not None:  # UserVmResponse backupofferingid/backupofferingname
        out.update(backupofferingid=offering["id"], backupofferingname=offering["name"])
    if vm_["state"] == "Running":
        out["hostid"] = vm_["hostid"]
        out["hostname"] = "kvm-host-1"
    mark_pending(store, vm_["id"], out)
    return out


def job(jb: dict[str, Any]) -> dict[str, Any]:
    """An async job as ``queryAsyncJobResult``/``listAsyncJobs`` show it."""
    out = {
        k: jb[k]
        for k in (
            "accountid",
            "userid",
            "cmd",
            "jobid",
            "jobstatus",
            "jobprocstatus",
            "jobresultcode",
            "jobinstancetype",
            "jobinstanceid",
            "created",
        )
    }
    if jb["jobstatus"] != 0:
        out["jobresulttype"] = "object"
        out["jobresult"] = jb["jobresult"]
        out["completed"] = jb["completed"]
    return out
