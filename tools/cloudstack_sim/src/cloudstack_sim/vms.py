"""VM commands: deployVirtualMachine, start/stop/destroyVirtualMachine, listVirtualMachines.

A deployed VM gets a ROOT volume (device 0) sized like its template and one NIC per network,
with an address from the network's CIDR and a MAC (given through ``iptonetworklist[i].mac``
or ``macaddress``, else generated). Custom service offerings need ``details[0].cpuNumber``,
``details[0].cpuSpeed`` and ``details[0].memory``. States: Stopped ⇄ Running through
start/stop (Starting/Stopping while the job runs), Destroyed, or gone after expunge.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from . import views
from .catalog import filter_items, page
from .errors import bad_value, invalid
from .jobs import Call, JobRunner
from .params import Params
from .store import Store, new_id, now_text

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _nic_plan(store: Store, p: Params) -> list[dict[str, Any]]:
    d = store.data
    nets = {n["id"]: n for n in d["networks"]}
    ipmaps = p.maps("iptonetworklist")
    ids = p.listing("networkids")
    if ids and ipmaps:
        raise bad_value("networkids can't be specified along with iptonetworklist")
    plan = [
        {"networkid": m.get("networkid"), "ip": m.get("ip"), "mac": m.get("mac")} for m in ipmaps
    ] or [{"networkid": n, "ip": None, "mac": None} for n in ids]
    if not plan:
        raise bad_value(
            "Can't deploy a VM without a network in an Advanced zone: "
            "specify networkids or iptonetworklist"
        )
    mac = p.get("macaddress")
    if mac and plan[0]["mac"] is None:
        plan[0]["mac"] = mac
    used_macs = {n["macaddress"] for vm in d["vms"].values() for n in vm["nics"]}
    for i, nic in enumerate(plan):
        if nic["networkid"] not in nets:
            raise invalid(p.command, "networkids", str(nic["networkid"]))
        if nic["mac"] is not None:
            nic["mac"] = nic["mac"].lower()
            if not _MAC.match(nic["mac"]):
                raise bad_value(f"Mac address is not valid: {nic['mac']}")
            if nic["mac"] in used_macs:
                raise bad_value(f"The MAC address {nic['mac']} is already in use")
        nic["isdefault"] = i == 0
    return plan


def _allocate(store: Store, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    d = store.data
    nets = {n["id"]: n for n in d["networks"]}
    nics = []
    for nic in plan:
        net = nets[nic["networkid"]]
        used = {
            n["ipaddress"]
            for vm in d["vms"].values()
            for n in vm["nics"]
            if n["networkid"] == net["id"]
        }
        ip = nic["ip"]
        if ip is None:
            hosts = ipaddress.ip_network(net["cidr"]).hosts()
            ip = next(
                str(h) for h in hosts if int(str(h).rsplit(".", 1)[1]) >= 10 and str(h) not in used
            )
        elif ip in used:
            raise bad_value(f"The IP address {ip} is already in use in network {net['name']}")
        mac = nic["mac"]
        if mac is None:
            n = store.next_number()
            mac = (
                f"02:00:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:"
                f"{n & 255:02x}"
            )
        nics.append(
            {
                "id": new_id(),
                "networkid": net["id"],
                "ipaddress": ip,
                "macaddress": mac,
                "isdefault": nic["isdefault"],
            }
        )
    return nics


def deploy_vm(call: Call, p: Params) -> dict[str, Any]:
    """deployVirtualMachine (async create)."""
    store = call.store
    d = store.data
    p.entity(d["zones"], "zoneid")
    offering = p.entity(d["service_offerings"], "serviceofferingid")
    template = p.entity(d["templates"], "templateid")
    details = (p.maps("details") or [{}])[0]
    if offering["iscustomized"]:
        try:
            cpus, speed, memory = (int(details[k]) for k in ("cpunumber", "cpuspeed", "memory"))
        except (KeyError, ValueError):
            raise bad_value(
                "Need to specify custom parameter values cpu, cpu speed and memory "
                "when using custom offering"
            ) from None
        if cpus <= 0 or speed <= 0 or memory <= 0:
            raise bad_value("Custom cpu, cpu speed and memory values must be positive")
    else:
        cpus, speed, memory = offering["cpunumber"], offering["cpuspeed"], offering["memory"]
    vm_id = new_id()
    num = store.next_number()
    name = p.get("name") or f"VM-{vm_id}"
    if any(v["name"] == name for v in d["vms"].values()):
        raise bad_value(f"The vm with hostName {name} already exists in the network domain")
    nics = _allocate(store, _nic_plan(store, p))
    start = p.boolean("startvm", True)
    d["vms"][vm_id] = {
        "id": vm_id,
        "name": name,
        "displayname": p.get("displayname") or name,
        "state": "Starting" if start else "Stopped",
        "zoneid": d["zones"][0]["id"],
        "templateid": template["id"],
        "serviceofferingid": offering["id"],
        "cpunumber": cpus,
        "cpuspeed": speed,
        "memory": memory,
        "instancename": f"i-2-{num}-VM",
        "hostid": new_id(),
        "created": now_text(),
        "nics": nics,
        "details": {k: v for k, v in details.items()},
    }
    jobid = call.job(
        "deployVirtualMachine", "VirtualMachine", vm_id, {"id": vm_id, "start": start, "num": num}
    )
    return {"id": vm_id, "jobid": jobid}


def _finish_deploy(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    vm = store.data["vms"][args["id"]]
    template = next(t for t in store.data["templates"] if t["id"] == vm["templateid"])
    store.add_root_volume(vm["id"], args["num"], template["size"])
    vm["state"] = "Running" if args["start"] else "Stopped"
    return {"virtualmachine": views.vm(store, vm)}


def _undo_deploy(store: Store, args: dict[str, Any]) -> None:
    store.data["vms"].pop(args["id"], None)


def _transition(call: Call, p: Params, command: str, busy: str, **extra: Any) -> dict[str, Any]:
    vm = p.entity(call.store.data["vms"], "id")
    args = {"id": vm["id"], "prev": vm["state"], **extra}
    if vm["state"] in ("Running", "Stopped") and busy:
        vm["state"] = busy
    return {"jobid": call.job(command, "VirtualMachine", vm["id"], args)}


def start_vm(call: Call, p: Params) -> dict[str, Any]:
    """startVirtualMachine (async): id."""
    return _transition(call, p, "startVirtualMachine", "Starting")


def stop_vm(call: Call, p: Params) -> dict[str, Any]:
    """stopVirtualMachine (async): id, forced."""
    return _transition(call, p, "stopVirtualMachine", "Stopping", forced=p.boolean("forced", False))


def destroy_vm(call: Call, p: Params) -> dict[str, Any]:
    """destroyVirtualMachine (async): id, expunge, volumes (data volumes to delete too)."""
    d = call.store.data
    vm = p.entity(d["vms"], "id")
    volumes = p.listing("volumes")
    for vol_id in volumes:
        vol = d["volumes"].get(vol_id)
        if vol is None or vol.get("virtualmachineid") != vm["id"] or vol["type"] != "DATADISK":
            raise invalid(p.command, "volumes", vol_id)
    return _transition(
        call, p, "destroyVirtualMachine", "", expunge=p.boolean("expunge", False), volumes=volumes
    )


def _finish_power(store: Store, args: dict[str, Any], target: str) -> dict[str, Any]:
    vm = store.data["vms"].get(args["id"])
    if vm is None:
        raise bad_value(f"Unable to find VM with id {args['id']}")
    if args["prev"] not in ("Running", "Stopped"):
        raise bad_value(
            f"VM {vm['name']} is in state {args['prev']}; it must be Running or Stopped"
        )
    vm["state"] = target
    return {"virtualmachine": views.vm(store, vm)}


def _undo_power(store: Store, args: dict[str, Any]) -> None:
    vm = store.data["vms"].get(args["id"])
    if vm is not None:
        vm["state"] = args["prev"]


def _finish_destroy(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    d = store.data
    vm = d["vms"].get(args["id"])
    if vm is None:
        raise bad_value(f"Unable to find VM with id {args['id']}")
    allowed = ("Running", "Stopped", "Destroyed") if args["expunge"] else ("Running", "Stopped")
    if vm["state"] not in allowed:
        raise bad_value(f"VM {vm['name']} is in state {vm['state']} and cannot be destroyed")
    vm["state"] = "Destroyed"
    for vol_id in args["volumes"]:
        vol = d["volumes"].pop(vol_id, None)
        if vol is not None:
            store.remove_backing(vol_id)
            store.unlink(vol_id)
    if not args["expunge"]:
        return {"virtualmachine": views.vm(store, vm)}
    vm["state"] = "Expunging"
    result = {"virtualmachine": views.vm(store, vm)}
    for vol in list(d["volumes"].values()):
        if vol.get("virtualmachineid") != vm["id"]:
            continue
        if vol["type"] == "ROOT":
            d["volumes"].pop(vol["id"])
            store.remove_backing(vol["id"])
        else:  # data volumes survive an expunge, detached
            vol.update(virtualmachineid=None, deviceid=None)
            store.unlink(vol["id"])
    d["vms"].pop(vm["id"])
    return result


def list_vms(store: Store, p: Params) -> dict[str, Any]:
    """listVirtualMachines: id, name, state, zoneid, keyword, page/pagesize."""
    d = store.data
    items = sorted(d["vms"].values(), key=lambda v: v["created"])
    if p.get("id") is not None:
        items = [p.entity(d["vms"], "id")]
    items = filter_items(p, items, "name", "state")
    return page(p, "virtualmachine", [views.vm(store, v) for v in items])


def register(store: Store, jobs: JobRunner) -> None:
    """Hook the VM finishers into the job runner."""
    jobs.register(
        "deployVirtualMachine", lambda a: _finish_deploy(store, a), lambda a: _undo_deploy(store, a)
    )
    jobs.register(
        "startVirtualMachine",
        lambda a: _finish_power(store, a, "Running"),
        lambda a: _undo_power(store, a),
    )
    jobs.register(
        "stopVirtualMachine",
        lambda a: _finish_power(store, a, "Stopped"),
        lambda a: _undo_power(store, a),
    )
    jobs.register(
        "destroyVirtualMachine",
        lambda a: _finish_destroy(store, a),
        lambda a: _undo_power(store, a),
    )
