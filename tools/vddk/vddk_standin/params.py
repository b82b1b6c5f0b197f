"""The parameters of nbdkit's VDDK plugin (nbdkit 1.32), checked as the real plugin checks them.

The accepted keys and their value checks follow ``vddk_config`` and ``vddk_config_complete`` in
nbdkit 1.32's plugins/vddk/vddk.c and the parameter list of nbdkit-vddk-plugin(1); the password
forms (``+FILE``, ``-``, ``-FD``, plain) follow ``nbdkit_read_password`` (server/public.c).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

#: Every parameter nbdkit-vddk-plugin(1) of nbdkit 1.32 documents.
DOCUMENTED = frozenset(
    {
        "compression",
        "config",
        "cookie",
        "create",
        "create-adapter-type",
        "create-hwversion",
        "create-size",
        "create-type",
        "file",
        "libdir",
        "nfchostport",
        "password",
        "port",
        "server",
        "single-link",
        "snapshot",
        "thumbprint",
        "transports",
        "unbuffered",
        "user",
        "vimapiver",
        "vm",
    }
)

_CHOICES = {
    "compression": ("none", "zlib", "fastlz", "skipz"),
    "create-adapter-type": ("ide", "scsi-buslogic", "scsi-lsilogic"),
    "create-type": (
        "monolithic-sparse",
        "monolithic-flat",
        "split-sparse",
        "split-flat",
        "vmfs-flat",
        "stream-optimized",
        "vmfs-thin",
        "vmfs-sparse",
    ),
}
_HWVERSIONS = (
    "workstation4",
    "workstation5",
    "workstation6",
    "esx30",
    "esx4x",
    "esx50",
    "esx51",
    "esx55",
    "esx60",
    "esx65",
)
_BOOLS = {"1": True, "true": True, "on": True, "yes": True}
_BOOLS.update({"0": False, "false": False, "off": False, "no": False})
_SIZE = re.compile(r"^(\d+)([bskmgtpe]?)$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "s": 512, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE_FACTORS.update({"t": 1 << 40, "p": 1 << 50, "e": 1 << 60})


class ParamError(Exception):
    """A parameter the real plugin would refuse (the message is what it prints)."""


@dataclass
class Params:
    """The parsed parameters (only what the stand-in uses is kept typed)."""

    values: dict[str, str] = field(default_factory=dict)
    password: str | None = None
    create: bool = False
    port: int = 0
    nfchostport: int = 0

    def get(self, key: str) -> str | None:
        """The raw value of ``key`` (None when not given)."""
        return self.values.get(key)

    @property
    def is_remote(self) -> bool:
        """As vddk.c: any of these parameters asks for a remote (vCenter/ESXi) connection."""
        return bool(
            self.get("vm")
            or self.get("server")
            or self.get("user")
            or self.password is not None
            or self.get("cookie")
            or self.get("thumbprint")
            or self.port
            or self.nfchostport
        )


def parse_bool(value: str) -> bool:
    """nbdkit_parse_bool."""
    try:
        return _BOOLS[value.strip().lower()]
    except KeyError:
        raise ParamError(f"could not decipher boolean ({value})") from None


def parse_uint16(what: str, value: str) -> int:
    """nbdkit_parse_uint16_t."""
    try:
        number = int(value, 0)
    except ValueError:
        raise ParamError(f'{what}: could not parse number: "{value}"') from None
    if not 0 <= number <= 0xFFFF:
        raise ParamError(f'{what}: could not parse number: "{value}": out of range')
    return number


def parse_size(value: str) -> int:
    """nbdkit_parse_size (the suffixes nbdkit accepts)."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ParamError(f"could not parse size string ({value})")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def read_password(value: str) -> str:
    """nbdkit_read_password: ``-`` (interactive), ``-FD``, ``+FILE`` or the password itself."""
    if value == "-":
        if not sys.stdin.isatty():
            raise ParamError("stdin is not a tty, cannot read password interactively")
        import getpass

        return getpass.getpass("password: ")
    if value.startswith("-"):
        fd = value[1:]
        if not fd.isdigit():
            raise ParamError(f'password file descriptor: could not parse number: "{fd}"')
        if int(fd) <= 2:
            raise ParamError("cannot use password -FD for stdin/stdout/stderr")
        return _first_line(int(fd), fd)
    if value.startswith("+"):
        try:
            fd = os.open(value[1:], os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ParamError(f"open {value[1:]}: {exc.strerror}") from None
        return _first_line(fd, value[1:])
    return value


def _first_line(fd: int, what: str) -> str:
    """The first line of ``fd`` without its newline (as nbdkit's getline), closing ``fd``."""
    try:
        with os.fdopen(fd, "r") as fh:
            line = fh.readline()
    except OSError as exc:
        raise ParamError(f"could not read password from {what}: {exc.strerror}") from None
    return line[:-1] if line.endswith("\n") else line


def realpath(value: str) -> str:
    """nbdkit_realpath: the path must exist."""
    try:
        return os.path.realpath(value, strict=True)
    except OSError as exc:
        raise ParamError(f"realpath: {value}: {exc.strerror}") from None


def config(params: Params, key: str, value: str) -> None:
    """One ``key=value`` from the command line (vddk_config)."""
    if key not in DOCUMENTED:
        raise ParamError(f"unknown parameter '{key}'")
    if key in _CHOICES and value not in _CHOICES[key]:
        kind = "compression type" if key == "compression" else key
        raise ParamError(f"unknown {kind}: {value}")
    if key == "create-hwversion" and value not in _HWVERSIONS:
        try:
            parse_uint16("create-hwversion", value)
        except ParamError:
            raise ParamError(f"unknown create-hwversion: {value}") from None
    if key == "create-size":
        size = parse_size(value)
        if size <= 0 or size % 512:
            raise ParamError("create-size must be greater than zero and a multiple of 512")
    if key in ("config", "libdir"):
        value = realpath(value)
    if key == "create":
        params.create = parse_bool(value)
    if key in ("single-link", "unbuffered"):
        parse_bool(value)
    if key == "port":
        params.port = parse_uint16("port", value)
    if key == "nfchostport":
        params.nfchostport = parse_uint16("nfchostport", value)
    if key == "password":
        params.password = read_password(value)
        return
    if key != "vimapiver":  # ignored for backwards compatibility
        params.values[key] = value


def config_complete(params: Params) -> None:
    """The checks once every parameter is known (vddk_config_complete)."""
    if params.get("file") is None:
        raise ParamError(
            "you must supply the file=<FILENAME> parameter after the plugin name "
            "on the command line"
        )
    if params.is_remote:
        for key in ("server", "user", "password", "vm"):
            given = params.password is not None if key == "password" else params.get(key)
            if not given:
                raise ParamError(f"remote connection requested, missing parameter: {key}")
    if params.create:
        if params.is_remote:
            raise ParamError("create=true can only be used to create local VMDK files")
        if params.get("create-size") is None:
            raise ParamError(
                "if using create=true you must specify the size using the create-size parameter"
            )
