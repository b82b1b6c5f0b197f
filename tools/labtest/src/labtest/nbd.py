"""qemu-nbd exports and qcow2 images for tests: real NBD servers on loopback or unix sockets."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .procs import ManagedProcess, free_port


def qemu_img(*args: str) -> str:
    """Run ``qemu-img`` and return its stdout; raise with stderr on failure."""
    res = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def qemu_io(image: str | os.PathLike[str], *commands: str, fmt: str = "qcow2") -> str:
    """Run ``qemu-io`` commands (e.g. ``"write -P 0xab 0 64k"``) against an image file."""
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    res = subprocess.run([*argv, str(image)], capture_output=True, text=True)
    if res.returncode != 0 or "error" in res.stdout.lower():
        raise RuntimeError(f"qemu-io {commands}: {res.stdout.strip()} {res.stderr.strip()}")
    return res.stdout


def create_image(path: str | os.PathLike[str], size: int, fmt: str = "qcow2") -> Path:
    """Create an empty image of ``size`` bytes."""
    qemu_img("create", "-q", "-f", fmt, str(path), str(size))
    return Path(path)


def add_bitmap(image: str | os.PathLike[str], name: str, granularity: int = 65536) -> None:
    """Add a persistent dirty bitmap to a qcow2 image."""
    qemu_img("bitmap", "--add", "-g", str(granularity), str(image), name)


@dataclass
class NbdExport:
    """A running qemu-nbd export; ``uri`` is what NBD clients connect to."""

    uri: str
    process: ManagedProcess
    host: str = "127.0.0.1"
    port: int | None = None
    socket: str | None = None
    export: str = ""


@contextlib.contextmanager
def qemu_nbd(
    image: str | os.PathLike[str],
    *,
    fmt: str = "qcow2",
    readonly: bool = False,
    bitmap: str | None = None,
    export: str = "disk",
    unix_dir: str | None = None,
    connections: int = 4,
    extra: Sequence[str] = (),
    log_path: str | None = None,
    tls_dir: str | os.PathLike[str] | None = None,
    tls_client: str | None = None,
) -> Iterator[NbdExport]:
    """Serve ``image`` with qemu-nbd on a free loopback port (or a unix socket in ``unix_dir``).

    The server keeps running after a client disconnects (``-t``) and accepts ``connections``
    clients at once (``-e``). It is stopped by PID when the block exits. With ``tls_dir`` (a
    directory with ca-cert.pem, server-cert.pem, server-key.pem) and ``tls_client`` (a
    certificate subject, RFC 4514) it requires TLS and admits only that client, as the OMA's
    replica exports do; the URI is then ``nbds://``.
    """
    argv = ["qemu-nbd", "-f", fmt, "-x", export, "-t", "-e", str(connections), "--cache=writeback"]
    if readonly:
        argv.append("-r")
    if bitmap:
        argv += ["-B", bitmap]
    port = sock = None
    if unix_dir:
        sock = str(Path(unix_dir) / f"nbd-{os.getpid()}-{export}.sock")
        argv += ["-k", sock]
        uri = f"nbd+unix:///{export}?socket={sock}"
    else:
        port = free_port()
        argv += ["-b", "127.0.0.1", "-p", str(port)]
        uri = f"nbd://127.0.0.1:{port}/{export}"
    if tls_dir is not None:
        from oma.nbd.tls import qemu_nbd_args

        if tls_client is None:
            raise ValueError("a TLS export needs the client's certificate subject (tls_client)")
        argv += qemu_nbd_args(Path(tls_dir), tls_client)
        uri = uri.replace("nbd://", "nbds://", 1).replace("nbd+unix://", "nbds+unix://", 1)
    argv += [*extra, str(image)]
    proc = ManagedProcess(argv, name="qemu-nbd", log_path=log_path).start()
    try:
        if sock:
            proc.wait_path(sock)
        else:
            assert port is not None
            proc.wait_port(port)
        yield NbdExport(uri=uri, process=proc, port=port, socket=sock, export=export)
    finally:
        proc.stop()
