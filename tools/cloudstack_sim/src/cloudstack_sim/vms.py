"""VM commands: deployVirtualMachine, start/stop/destroyVirtualMachine, listVirtualMachines.

A deployed VM gets a ROOT volume (device 0) sized like its template and one NIC per network,
with an address from the network's CIDR and a MAC (given through ``iptonetworklist[i].mac``
or ``macaddress``, else generated). States: Stopped ⇄ Running through start/stop
(Starting/Stopping while the job runs), Destroyed, or gone after expunge. Every rule names its
place in apache/cloudstack (``server/src/main/java/com/cloud/vm/UserVmManagerImpl.java``,
``api/src/main/java/org/apache/cloudstack/api/command/user/vm/DeployVMCmd.java``,
``server/src/main/java/com/cloud/api/query/QueryManagerImpl.java``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from . import views
from .catalog import filter_items, page
from .errors import bad_value, invalid, permission_denied
from .jobs import Call, JobRunner
from .params import Params
from .store import Store, new_id, now_text

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# NetUtils.verifyDomainNameLabel(name, true): 1-63 of [a-zA-Z0-9-], no leading digit or hyphen
_HOST_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$")


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


# UserVmManagerImpl.validateCustomParameters bounds: VM_SERVICE_OFFERING_MAX_CPU_CORES/RAM_SIZE
# default 0 = Integer.MAX_VALUE; minimum memory 32 MB (offering details min/max not modelled)
JAVA_INT_MAX = 2147483647
MIN_MEMORY = 32
# DeployVMCmd details names (CloudStack's DynamicParameters) as stored on the VM
_DETAIL_NAMES = {"cpunumber": "cpuNumber", "cpuspeed": "cpuSpeed", "memory": "memory"}


def _parse_int(value: str | None) -> int:
    """``NumbersUtil.parseInt(value, -1)``."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


def _custom_values(offering: dict[str, Any], details: dict[str, str]) -> tuple[int, int, int]:
    """UserVmManagerImpl.validateCustomParameters for a dynamic (custom) service offering."""
    if not details:
        raise bad_value(
            "Need to specify custom parameter values cpu, cpu speed and memory "
            "when using custom offering"
        )
    fixed = "is not customizable. This is predefined in the template."
    oid = offering["id"]
    cpus = offering.get("cpunumber")
    if cpus is None:
        cpus = _parse_int(details.get("cpunumber"))
        if cpus < 1:
            raise bad_value(
                f"Invalid cpu cores value, specify a value between 1 and {JAVA_INT_MAX}"
            )
    elif "cpunumber" in details:
        raise bad_value(f"The cpu cores of this offering id:{oid} {fixed}")
    speed = offering.get("cpuspeed")
    if speed is None:
        speed = _parse_int(details.get("cpuspeed"))
        if speed <= 0:
            raise bad_value(
                f"Invalid cpu speed value, specify a value between 1 and {JAVA_INT_MAX}"
            )
    elif "cpuspeed" in details:
        # ServiceOfferingVO.isCustomCpuSpeedSupported: only when the offering has no speed
        raise bad_value(f"The cpu speed of this offering id:{oid} {fixed}")
    memory = offering.get("memory")
    if memory is None:
        memory = _parse_int(details.get("memory"))
        if memory < MIN_MEMORY:
            raise bad_value(
                f"Invalid memory value, specify a value between {MIN_MEMORY} and {JAVA_INT_MAX}"
            )
    elif "memory" in details:
        raise bad_value(f"The memory of this offering id:{oid} {fixed}")
    return cpus, speed, memory


def check_host_name(name: str) -> None:
    """UserVmManagerImpl.checkNameForRFCCompliance (NetUtils.verifyDomainNameLabel, host name)."""
    if not _HOST_NAME.match(name) or name.endswith("-"):
        raise bad_value(
            "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' "
            "through '9', and the hyphen ('-'), must be between 1 and 63 characters long, and "
            "can't start or end with \"-\" and can't start with digit"
        )


def _boot_detail(p: Params) -> tuple[str, str] | None:
    """DeployVMCmd.getBootType/getBootMode: ``("UEFI", mode)`` for UEFI, None for BIOS."""
    name = p.get("name") or "null"
    boot_type = p.get("boottype")
    kind = None
    if boot_type is not None:
        kind = boot_type.strip().upper()
        if kind not in ("BIOS", "UEFI"):
            raise bad_value(
                f"Invalid bootType {boot_type}Specified for Instance {name} "
                "Valid values are: [BIOS, UEFI]"
            )
    boot_mode = p.get("bootmode")
    if boot_mode is not None:
        mode = boot_mode.strip().upper()
        if mode not in ("LEGACY", "SECURE"):
            raise bad_value(
                f"Invalid bootmode: {boot_mode} specified for Instance: {name}. "
                "Valid values are: [LEGACY, SECURE]"
            )
    elif kind == "UEFI":
        raise bad_value(
            "bootmode must be specified for the Instance with boot type: UEFI. "
            "Valid values are: [LEGACY, SECURE]"
        )
    # DeployVMCmd.getDetails: a UEFI boot becomes the VM detail UEFI=<mode>
    return ("UEFI", mode) if kind == "UEFI" else None


def _check_unique_host_name(store: Store, name: str, nics: list[dict[str, Any]]) -> None:
    """UserVmManagerImpl.checkIfHostNameUniqueInNtwkDomain: VMInstanceDao.listDistinctHostNames
    lists every VM not yet removed (Destroyed ones too) with a NIC in the network."""
    nets = {n["id"]: n for n in store.data["networks"]}
    for nic in nics:
        net = nets[nic["networkid"]]
        for vm in store.data["vms"].values():
            if vm["name"] == name and any(n["networkid"] == net["id"] for n in vm["nics"]):
                raise bad_value(
                    f"The vm with hostName {name} already exists in the network domain: "
                    f"{net.get('networkdomain', 'cs2cloud.internal')}; network={net['name']}"
                )


def deploy_vm(call: Call, p: Params) -> dict[str, Any]:
    """deployVirtualMachine (async create)."""
    store = call.store
    d = store.data
    p.entity(d["zones"], "zoneid")
    offering = p.entity(d["service_offerings"], "serviceofferingid")
    template = p.entity(d["templates"], "templateid")
    details = (p.maps("details") or [{}])[0]
    boot = _boot_detail(p)
    dynamic = any(offering.get(k) is None for k in ("cpunumber", "cpuspeed", "memory"))
    if dynamic:  # ServiceOfferingVO.isDynamic
        cpus, speed, memory = _custom_values(offering, details)
    else:
        cpus, speed, memory = offering["cpunumber"], offering["cpuspeed"], offering["memory"]
    vm_id = new_id()
    num = store.next_number()
    name = p.get("name")
    if name is not None:
        check_host_name(name)
    else:
        name = f"VM-{vm_id}"
    plan = _nic_plan(store, p)
    _check_unique_host_name(store, name, plan)
    nics = _allocate(store, plan)
    start = p.boolean("startvm", True)
    vm_details = {_DETAIL_NAMES.get(k, k): v for k, v in details.items()}
    if boot is not None:
        vm_details[boot[0]] = boot[1]
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
        "num": num,
        "hostid": new_id(),
        "created": now_text(),
        "nics": nics,
        "details": vm_details,
    }
    jobid = call.job(
        "deployVirtualMachine", "VirtualMachine", vm_id, {"id": vm_id, "start": start, "num": num}
    )
    return {"id": vm_id, "jobid": jobid}


def _create_volumes(store: Store, vm: dict[str, Any]) -> None:
    """VolumeOrchestrationManagerImpl.prepare: starting a VM creates its Allocated volumes on
    primary storage (they become Ready)."""
    for vol in store.data["volumes"].values():
        if vol.get("virtualmachineid") == vm["id"] and vol["state"] == "Allocated":
            vol["state"] = "Ready"
            store.create_backing(vol["id"], vol["size"])


def _finish_deploy(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    vm = store.data["vms"][args["id"]]
    template = next(t for t in store.data["templates"] if t["id"] == vm["templateid"])
    # startvm=false: the template's ROOT volume stays Allocated (no storage pool) until the VM
    # first starts (UserVmManagerImpl.createVirtualMachine allocates, startVirtualMachine creates)
    store.add_root_volume(
        vm["id"], args["num"], template["size"], "Ready" if args["start"] else "Allocated"
    )
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
    if target == "Running":
        _create_volumes(store, vm)
    return {"virtualmachine": views.vm(store, vm)}


def _undo_power(store: Store, args: dict[str, Any]) -> None:
    vm = store.data["vms"].get(args["id"])
    if vm is not None:
        vm["state"] = args["prev"]


def _finish_destroy(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    d = store.data
    # UserVmManagerImpl.destroyVm → checkExpungeVmPermission: expunge needs an admin account or
    # allow.user.expunge.recover.vm (and the role's access to expungeVirtualMachine, which the
    # default User role has)
    if (
        args["expunge"]
        and not store.is_admin()
        and not store.setting("allow.user.expunge.recover.vm")
    ):
        raise permission_denied("Account does not have permission for expunging.")
    vm = d["vms"].get(args["id"])
    if vm is None:
        raise bad_value(f"unable to find a virtual machine with id {args['id']}")
    # UserVmManagerImpl.destroyVm: destroying a Destroyed/Expunging VM again is a no-op
    if vm["state"] in ("Destroyed", "Expunging") and not args["expunge"]:
        return {"virtualmachine": views.vm(store, vm)}
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
    snaps = d.setdefault("vm_snapshots", {})
    for snap_id in [i for i, snap in snaps.items() if snap["virtualmachineid"] == vm["id"]]:
        snaps.pop(snap_id)
    return result


def list_vms(store: Store, p: Params) -> dict[str, Any]:
    """listVirtualMachines: id, name (exact), state (or ``present``), keyword, page/pagesize."""
    d = store.data
    items = sorted(d["vms"].values(), key=lambda v: v["created"])
    if p.get("id") is not None:
        items = [p.entity(d["vms"], "id")]
    gone = ("Destroyed", "Expunging")
    # QueryManagerImpl.searchForUserVMsInternal: users see Destroyed and Expunging VMs only with
    # allow.user.view.destroyed.vm; state=present hides them for everyone
    if not store.is_admin() and not store.setting("allow.user.view.destroyed.vm"):
        items = [v for v in items if v["state"] not in gone]
    state = p.get("state")
    if state is not None and state.lower() == "present":
        items = [v for v in items if v["state"] not in gone]
    elif state is not None:
        items = [v for v in items if v["state"].lower() == state.lower()]
    items = filter_items(p, items, "name")
    return page(store, p, "virtualmachine", [views.vm(store, v) for v in items])


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
