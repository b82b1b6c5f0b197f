"""The lab's stand-in for nbdkit's VDDK plugin (an nbdkit Python plugin script).

Run as ``nbdkit [options] python /path/to/tools/vddk/plugin.py <vddk parameters>``, the words
``python /path/to/plugin.py`` taking the place of ``vddk``. It takes exactly the parameters of
nbdkit-vddk-plugin(1) (nbdkit 1.32) and refuses unknown ones as that plugin does. At each client
connection it does what VDDK does against vCenter (the lab's vcsim): verify the server's TLS
certificate by ``thumbprint=``, log in as ``user=``/``password=`` (or ``cookie=``), find
``vm=moref=`` and ``snapshot=``, and check ``file=`` is a disk of that VM in that snapshot.
The disk's bytes come from the lab's image of it under ``$VDDK_LAB_DIR`` (see
vddk_standin/disk.py). Read-only; extents (``base:allocation``) follow the image's allocation.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path


def _own_stdlib_first() -> None:
    """nbdkit's Python plugin embeds the system libpython, but Python derives its standard
    library's location from the first ``python3`` on PATH: with a virtualenv's or pyenv's
    Python 3.11 first, that installation's C extension modules (``_ssl``, ``_hashlib``) would
    be loaded into this interpreter and fail. Put the running libpython's own library first."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    libpython = next((m.split()[-1] for m in maps if "/libpython3" in m.split()[-1]), None)
    if libpython is None:
        return
    prefix = libpython.split("/lib/", 1)[0]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    own = [f"{prefix}/lib/{version}", f"{prefix}/lib/{version}/lib-dynload"]
    sys.path[:0] = [p for p in own if os.path.isdir(p)]


_own_stdlib_first()
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbdkit  # noqa: E402  (provided by nbdkit's Python plugin)
from vddk_standin import disk, params, vcenter  # noqa: E402

API_VERSION = 2
LAB_DIR_VARIABLE = "VDDK_LAB_DIR"

_params = params.Params()


def thread_model() -> int:
    """Reads are plain preads of the image: any number at once."""
    return nbdkit.THREAD_MODEL_PARALLEL


def config(key: str, value: str) -> None:
    """One ``key=value`` parameter."""
    params.config(_params, key, value)


def config_complete() -> None:
    """Every parameter is known: the checks of the real plugin, then the stand-in's limits."""
    params.config_complete(_params)
    if not _params.is_remote:
        raise params.ParamError(
            "the VDDK stand-in serves vCenter snapshot disks of lab VMs only "
            "(give server=, user=, password=, vm=)"
        )
    if not (_params.get("vm") or "").startswith("moref="):
        raise params.ParamError("vm=: the VDDK stand-in understands vm=moref=ID only")
    if not os.environ.get(LAB_DIR_VARIABLE):
        raise params.ParamError(f"{LAB_DIR_VARIABLE} is not set: the lab's disk images are unknown")


def _locate() -> vcenter.Located:
    server = _params.get("server") or ""
    session = vcenter.Session(server, _params.port or 443, _params.get("thumbprint"))
    try:
        cookie = _params.get("cookie")
        if cookie:
            session.use_cookie(cookie)
        else:
            session.login(_params.get("user") or "", _params.password or "")
        moref = (_params.get("vm") or "").removeprefix("moref=")
        snapshot, file_name = _params.get("snapshot"), _params.get("file") or ""
        return vcenter.locate(session, moref, snapshot, file_name)
    finally:
        session.close()


def open(readonly: bool) -> disk.LabDisk:  # nbdkit's callback name
    """Per connection, as VixDiskLib_ConnectEx + VixDiskLib_Open: ask vCenter, open the disk."""
    try:
        found = _locate()
        return disk.open_snapshot_disk(
            Path(os.environ[LAB_DIR_VARIABLE]),
            found.vm_uuid,
            found.disk.key,
            found.disk.change_id,
            found.disk.capacity,
        )
    except (vcenter.VcenterError, disk.DiskError) as exc:
        nbdkit.set_error(errno.EACCES)
        raise RuntimeError(f"VixDiskLib_Open: {_params.get('file')}: {exc}") from None


def close(h: disk.LabDisk) -> None:
    """Close the image."""
    h.close()


def get_size(h: disk.LabDisk) -> int:
    """The disk's virtual size."""
    return h.size


def can_write(h: disk.LabDisk) -> bool:
    """Snapshot disks are read-only."""
    return False


def can_multi_conn(h: disk.LabDisk) -> bool:
    """Every connection sees the same unchanging image."""
    return True


def can_extents(h: disk.LabDisk) -> bool:
    """Allocation is known (VixDiskLib_QueryAllocatedBlocks in the real plugin)."""
    return True


def pread(h: disk.LabDisk, buf: bytearray, offset: int, flags: int) -> None:
    """Read guest bytes."""
    h.pread(buf, offset)


def extents(h: disk.LabDisk, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    """Allocation of ``[offset, offset + count)``; only the first extent with REQ_ONE."""
    found = h.allocation(offset, count)
    return found[:1] if flags & nbdkit.FLAG_REQ_ONE else found
