"""Start govmomi's vCenter simulator (vcsim) for tests and the demo, stop it by PID.

``tools/vcsim/build`` builds (or reuses) the launcher binary; :func:`vcsim` starts it on a free
loopback port with a random username and password passed through the environment, waits until
it accepts connections and yields a :class:`VcsimInfo`. The simulator serves the VPX model:
datacenter ``DC0``, cluster ``DC0_C0`` (3 hosts), standalone host ``DC0_H0``, datastore
``LocalDS_0``, network ``VM Network`` and a few VMs (``DC0_H0_VM0``, ``DC0_C0_RP0_VM0``, …).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from labtest.procs import ManagedProcess, free_port

#: The build script, found relative to this file (tools/labtest/src/labtest → tools/vcsim).
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "vcsim" / "build"


@dataclass(frozen=True)
class VcsimInfo:
    """Where a running simulator listens and the login it accepts."""

    host: str
    port: int
    url: str
    username: str
    password: str
    pid: int
    ca_file: str = ""  # the simulator's self-signed certificate (PEM), to verify TLS against

    def __repr__(self) -> str:  # keep the password out of assertion messages and logs
        return f"VcsimInfo(url={self.url!r}, username={self.username!r}, pid={self.pid})"


def build(timeout: float = 600.0) -> Path:
    """Build the launcher if needed (instant when cached) and return the binary's path."""
    if not BUILD_SCRIPT.exists():
        raise FileNotFoundError(f"vcsim build script not found: {BUILD_SCRIPT}")
    result = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"tools/vcsim/build failed (exit {result.returncode}):\n{result.stderr.strip()}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def vcsim(
    tmpdir: str | os.PathLike[str],
    *,
    vms_per_host: int = 2,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30.0,
    extra_env: Mapping[str, str] | None = None,
    vapps_per_cluster: int = 0,
) -> Iterator[VcsimInfo]:
    """Run a vcsim (VPX model, TLS, self-signed) on a free 127.0.0.1 port while the block runs.

    ``tmpdir`` receives the log file ``vcsim.log`` and the simulator's certificate
    ``vcsim-cert.pem`` (``VcsimInfo.ca_file``; P-256, self-signed, valid for 127.0.0.1), so
    clients can verify TLS. The login is random unless given; it reaches the simulator through
    ``VCSIM_USERNAME``/``VCSIM_PASSWORD`` (never argv). The process is stopped by PID when the
    block exits, also on failure. ``extra_env`` reaches the simulator's environment (e.g.
    ``VCSIM_CBT_WINDOW_BYTES``, or ``VCSIM_LAB_DIR`` = the lab directory so that
    QueryChangedDiskAreas reports the lab disks' recorded writes; see tools/vcsim/README.md).
    ``vapps_per_cluster`` adds vApps (``DC0_C0_APP0`` …) holding ``vms_per_host`` VMs each.
    """
    binary = build()
    host = "127.0.0.1"
    port = free_port(host)
    username = username or "lab-" + secrets.token_hex(4)
    password = password or secrets.token_urlsafe(16)
    env = dict(os.environ, **(extra_env or {}))
    env.update(VCSIM_USERNAME=username, VCSIM_PASSWORD=password)
    log_path = Path(tmpdir) / "vcsim.log"
    cert_path = Path(tmpdir) / "vcsim-cert.pem"
    argv = [str(binary), "-host", host, "-port", str(port), "-vm", str(vms_per_host)]
    argv += ["-cert-out", str(cert_path), "-app", str(vapps_per_cluster)]
    proc = ManagedProcess(argv, log_path=log_path, env=env, name="vcsim")
    proc.start()
    try:
        proc.wait_port(port, host=host, timeout=timeout)
        yield VcsimInfo(
            host=host,
            port=port,
            url=f"https://{host}:{port}/sdk",
            username=username,
            password=password,
            pid=proc.pid,
            ca_file=str(cert_path),
        )
    finally:
        proc.stop()
