"""What VDDK asks vCenter before it opens a disk: a TLS connection checked against the
thumbprint, a login, the VM by moref, the snapshot and its disks (vSphere Web Services SOAP,
standard library only: nbdkit's Python plugin runs in the system Python)."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body>'
    "</soapenv:Envelope>"
)
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


class VcenterError(Exception):
    """vCenter refused or does not have what was asked for."""


@dataclass(frozen=True)
class Disk:
    """One virtual disk as recorded in a VM's or snapshot's configuration."""

    key: str
    file_name: str
    change_id: str | None
    capacity: int


def thumbprint_of(der: bytes) -> str:
    """SHA-1 of a DER certificate as VDDK writes thumbprints (``AA:BB:…``, 20 pairs)."""
    digest = hashlib.sha1(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in elem if _local(c.tag) == name), None)


def _text(elem: ET.Element | None, name: str) -> str | None:
    found = None if elem is None else _child(elem, name)
    return None if found is None else (found.text or "")


class Session:
    """One TLS connection to vCenter's SDK endpoint, verified by thumbprint, and its login."""

    def __init__(self, server: str, port: int, thumbprint: str | None, timeout: float = 30.0):
        # VDDK verifies vCenter's certificate by its thumbprint, not by a CA.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.where = f"{server}:{port}"
        self._conn = http.client.HTTPSConnection(server, port, context=ctx, timeout=timeout)
        try:
            self._conn.connect()
        except OSError as exc:
            raise VcenterError(f"Cannot connect to host {self.where}: {exc}") from None
        sock = self._conn.sock
        actual = thumbprint_of(sock.getpeercert(binary_form=True))  # type: ignore[union-attr]
        if (thumbprint or "").upper() != actual:
            self._conn.close()
            raise VcenterError(
                f"VixDiskLibVim: Failed to verify SSL certificate: actual thumbprint={actual} "
                f"expected={thumbprint or ''}"
            )
        self._cookie: str | None = None

    def close(self) -> None:
        """Log out (when logged in) and close the connection."""
        if self._cookie:
            try:
                self._call("Logout", '<_this type="SessionManager">SessionManager</_this>')
            except VcenterError:
                pass
        self._conn.close()

    def _call(self, method: str, args: str) -> ET.Element:
        body = _ENVELOPE.format(f'<{method} xmlns="urn:vim25">{args}</{method}>')
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "urn:vim25/6.5"}
        if self._cookie:
            headers["Cookie"] = f"vmware_soap_session={self._cookie}"
        try:
            self._conn.request("POST", "/sdk", body.encode(), headers)
            res = self._conn.getresponse()
            raw = res.read()
        except (OSError, http.client.HTTPException) as exc:
            raise VcenterError(f"{method}: connection to {self.where} failed: {exc}") from None
        for header, value in res.getheaders():
            if header.lower() == "set-cookie" and value.startswith("vmware_soap_session="):
                self._cookie = value.split(";", 1)[0].split("=", 1)[1].strip('"')
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            raise VcenterError(f"{method}: {self.where} did not answer SOAP") from None
        fault = next((e for e in root.iter() if _local(e.tag) == "Fault"), None)
        if fault is not None:
            detail = _child(fault, "detail")
            kind = next(iter(detail), None) if detail is not None else None
            name = kind.get(_XSI_TYPE, _local(kind.tag)) if kind is not None else "fault"
            raise VcenterError(f"{method}: {name}: {_text(fault, 'faultstring')}")
        return root

    def login(self, user: str, password: str) -> None:
        """SessionManager.Login; an InvalidLogin fault for a wrong user or password."""
        self._call(
            "Login",
            '<_this type="SessionManager">SessionManager</_this>'
            f"<userName>{escape(user)}</userName><password>{escape(password)}</password>",
        )

    def use_cookie(self, cookie: str) -> None:
        """Authenticate with an existing session's ``vmware_soap_session`` cookie."""
        self._cookie = cookie

    def properties(self, kind: str, moref: str, paths: list[str]) -> dict[str, ET.Element]:
        """RetrievePropertiesEx of one object: property path → its ``val`` element."""
        path_set = "".join(f"<pathSet>{escape(p)}</pathSet>" for p in paths)
        root = self._call(
            "RetrievePropertiesEx",
            '<_this type="PropertyCollector">propertyCollector</_this>'
            f"<specSet><propSet><type>{kind}</type>{path_set}</propSet>"
            f'<objectSet><obj type="{kind}">{escape(moref)}</obj></objectSet></specSet>'
            "<options/>",
        )
        found: dict[str, ET.Element] = {}
        for prop in (e for e in root.iter() if _local(e.tag) == "propSet"):
            name, val = _text(prop, "name"), _child(prop, "val")
            if name and val is not None:
                found[name] = val
        return found


def disks_of(devices: ET.Element | None) -> list[Disk]:
    """The VirtualDisks of a ``config.hardware.device`` value."""
    disks = []
    for dev in list(devices) if devices is not None else []:
        if dev.get(_XSI_TYPE) != "VirtualDisk":
            continue
        backing = _child(dev, "backing")
        size = _text(dev, "capacityInBytes") or str(int(_text(dev, "capacityInKB") or 0) * 1024)
        disks.append(
            Disk(
                key=_text(dev, "key") or "",
                file_name=_text(backing, "fileName") or "",
                change_id=_text(backing, "changeId") or None,
                capacity=int(size),
            )
        )
    return disks


@dataclass(frozen=True)
class Located:
    """What vCenter says about the disk to open."""

    vm_uuid: str
    disk: Disk


def locate(session: Session, vm_moref: str, snapshot: str | None, file_name: str) -> Located:
    """Find ``file_name`` among the disks of the VM (as of ``snapshot`` when given)."""
    vm = session.properties("VirtualMachine", vm_moref, ["config.uuid", "config.hardware.device"])
    if "config.uuid" not in vm:
        raise VcenterError(f"Cannot find the virtual machine moref={vm_moref}")
    uuid = vm["config.uuid"].text or ""
    devices = vm.get("config.hardware.device")
    where = f"VM moref={vm_moref}"
    if snapshot:
        snap = session.properties(
            "VirtualMachineSnapshot", snapshot, ["vm", "config.hardware.device"]
        )
        owner = snap["vm"].text if "vm" in snap else None
        if owner != vm_moref:
            raise VcenterError(f"snapshot {snapshot} is not a snapshot of VM moref={vm_moref}")
        devices = snap.get("config.hardware.device")
        where += f" snapshot {snapshot}"
    disks = disks_of(devices)
    for disk in disks:
        if disk.file_name == file_name:
            return Located(uuid, disk)
    names = ", ".join(repr(d.file_name) for d in disks) or "none"
    raise VcenterError(f"file {file_name!r} is not a disk of {where} (its disks: {names})")
