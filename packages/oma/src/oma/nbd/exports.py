"""One qemu-nbd process per replica volume: start, find, stop — process level, DB-agnostic.

Each export is ``qemu-nbd -f raw --export-name=vol-<volume id>`` on a free port from the
configured range, writable, persistent (``-t``) and multi-connection (``-e 4``). An export for a
client identity requires TLS with that client's certificate (:mod:`.tls`; URI ``nbds://``);
one without is plaintext (``nbd://``), which only the caller's policy may allow. It is started
with ``--fork``: the launcher exits once the server listens, and the server runs in its own
session, so it survives the worker being killed; the worker later finds it again by PID.

A small JSON state file per export (``<state_dir>/exports/vol-<id>.json``) records what this
manager started, with the process start time, so ``is_running``/``stop`` never act on a reused
PID or on a qemu-nbd someone else started. The database (task E) persists the same facts; the
state file is what lets :meth:`ExportManager.list_running` tell our exports from strangers'.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from migration_common import get_logger

from ..errors import NbdExportError
from . import procfs, tls

log = get_logger("oma.nbd")
EXPORT_PREFIX = "vol-"
_START_ATTEMPTS = 5


@dataclass
class ExportInfo:
    """A running export; ``uri`` is what the VMA's migratekit writes to."""

    volume_id: str
    export_name: str
    host: str
    port: int
    pid: int
    device_path: str
    uri: str


def export_name(volume_id: str) -> str:
    """The NBD export name of a volume: ``vol-<volume id>``."""
    return f"{EXPORT_PREFIX}{volume_id}"


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def export_uri(host: str, port: int, name: str, *, secure: bool) -> str:
    """The URI of an export: ``nbds://`` when it requires TLS, else ``nbd://``."""
    return f"{'nbds' if secure else 'nbd'}://{_uri_host(host)}:{port}/{name}"


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as qemu-nbd does
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class ExportManager:
    """Starts and stops the qemu-nbd exports of replica volumes on this appliance."""

    def __init__(
        self,
        *,
        bind_host: str = "127.0.0.1",
        advertise_host: str | None = None,
        port_range: tuple[int, int] = (10100, 10199),
        state_dir: Path,
        qemu_nbd: str = "qemu-nbd",
        cache: str = "writeback",
        aio: str | None = None,
        start_timeout: float = 30.0,
        tls_dir: Path | None = None,
        allow_plaintext: bool = False,
    ) -> None:
        low, high = port_range
        if not 0 < low <= high < 65536:
            raise ValueError(f"port_range {port_range!r}: expected 0 < low <= high < 65536")
        self.bind_host = bind_host
        self.advertise_host = advertise_host or (
            socket.gethostname() if bind_host in ("0.0.0.0", "::") else bind_host
        )
        self.port_range = (low, high)
        self.state_dir = Path(state_dir)
        self.qemu_nbd = qemu_nbd
        self.cache = cache
        self.aio = aio
        self.start_timeout = start_timeout
        self.tls_dir = Path(tls_dir) if tls_dir is not None else None
        #: whether a replica of a VMA without a certificate may be exported without TLS
        self.allow_plaintext = allow_plaintext
        self._exports = self.state_dir / "exports"
        self._logs = self.state_dir / "logs"
        self._exports.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # ----- state files ------------------------------------------------------------------
    def _state_path(self, volume_id: str) -> Path:
        return self._exports / f"{export_name(volume_id)}.json"

    def _pid_path(self, volume_id: str) -> Path:
        return self._exports / f"{export_name(volume_id)}.pid"

    def _load(self, volume_id: str) -> tuple[ExportInfo, int | None] | None:
        try:
            data = json.loads(self._state_path(volume_id).read_text())
            started = data.pop("start_time", None)
            return ExportInfo(**data), started
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, info: ExportInfo) -> None:
        path = self._state_path(info.volume_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**asdict(info), "start_time": procfs.start_time(info.pid)}))
        os.replace(tmp, path)

    def _forget(self, volume_id: str, pid: int) -> None:
        loaded = self._load(volume_id)
        if loaded is None or loaded[0].pid == pid:
            for path in (self._state_path(volume_id), self._pid_path(volume_id)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _ours(self, info: ExportInfo, started: int | None) -> bool:
        return self.is_running(info.pid, info.volume_id) and (
            started is None or procfs.start_time(info.pid) == started
        )

    # ----- queries ----------------------------------------------------------------------
    def is_running(self, pid: int, volume_id: str) -> bool:
        """True when ``pid`` is a live qemu-nbd serving ``vol-<volume_id>`` (checks /proc)."""
        argv = procfs.cmdline(pid)
        return argv is not None and procfs.export_name_of(argv) == export_name(volume_id)

    def admitted(self, pid: int) -> str | None:
        """The client identity (gnutls DN) export ``pid`` admits; None for plaintext."""
        argv = procfs.cmdline(pid)
        return tls.admitted_identity(argv) if argv else None

    def uri_of(self, pid: int, host: str, port: int, name: str) -> str:
        """The URI of the running export ``pid`` (its scheme from its command line)."""
        return export_uri(host, port, name, secure=self.admitted(pid) is not None)

    def get(self, volume_id: str) -> ExportInfo | None:
        """The running export this manager started for ``volume_id``, if any."""
        loaded = self._load(volume_id)
        if loaded is None or not self._ours(*loaded):
            return None
        return loaded[0]

    def list_running(self) -> list[ExportInfo]:
        """Live qemu-nbd ``vol-*`` processes that this manager started (from /proc).

        Also one started by this manager whose record was never written (its process was
        killed between qemu-nbd's fork and the record): recognised by the pid file in this
        manager's state directory on its command line, so reconciliation can stop it."""
        found = []
        for pid, name in sorted(procfs.qemu_nbd_exports().items()):
            if not name.startswith(EXPORT_PREFIX):
                continue
            volume_id = name[len(EXPORT_PREFIX) :]
            loaded = self._load(volume_id)
            if loaded is not None and loaded[0].pid == pid and self._ours(*loaded):
                found.append(loaded[0])
            elif (unrecorded := self._unrecorded(pid, volume_id)) is not None:
                found.append(unrecorded)
        return found

    def _unrecorded(self, pid: int, volume_id: str) -> ExportInfo | None:
        """The export ``pid`` when its command line names this manager's pid file for it."""
        argv = procfs.cmdline(pid)
        if argv is None or f"--pid-file={self._pid_path(volume_id)}" not in argv:
            return None
        port = int(argv[argv.index("-p") + 1]) if "-p" in argv[:-1] else 0
        name = export_name(volume_id)
        return ExportInfo(
            volume_id=volume_id,
            export_name=name,
            host=self.advertise_host,
            port=port,
            pid=pid,
            device_path=argv[-1],
            uri=export_uri(
                self.advertise_host, port, name, secure=tls.admitted_identity(argv) is not None
            ),
        )

    # ----- start / stop -----------------------------------------------------------------
    def _pick_port(self, excluded: Iterable[int]) -> int:
        skip = set(excluded) | {e.port for e in self.list_running()}
        low, high = self.port_range
        for port in range(low, high + 1):
            if port not in skip and _port_free(self.bind_host, port):
                return port
        raise NbdExportError(
            f"no free port in {low}-{high} on {self.bind_host} ({len(skip)} in use by exports)"
        )

    def start(
        self,
        volume_id: str,
        device_path: str,
        *,
        used_ports: Iterable[int] = frozenset(),
        client: str | None = None,
    ) -> ExportInfo:
        """Export ``device_path`` as ``vol-<volume_id>``; return once it accepts connections.

        ``client`` (a certificate subject, RFC 4514) makes the export require TLS and admit
        only that client; None exports without TLS (the caller decides whether it may).
        Idempotent: if this volume's export already runs for the same device and client it is
        returned unchanged; any other is stopped first (no stale exports).
        """
        if not Path(device_path).exists():
            raise NbdExportError(f"volume {volume_id}: device {device_path} does not exist")
        if client is not None and self.tls_dir is None:
            raise NbdExportError(f"volume {volume_id}: NBD TLS is not configured on this OMA")
        wanted = tls.gnutls_dn(client) if client is not None else None
        with self._lock:
            current = self._load(volume_id)
            if current is not None and self._ours(*current):
                if (
                    current[0].device_path == str(device_path)
                    and self.admitted(current[0].pid) == wanted
                ):
                    return current[0]
                self.stop(current[0].pid, volume_id)
            tried: set[int] = set(used_ports)
            for _ in range(_START_ATTEMPTS):
                port = self._pick_port(tried)
                info = self._launch(volume_id, str(device_path), port, client)
                if info is not None:
                    self._save(info)
                    log.info(
                        "nbd export started",
                        volume_id=volume_id,
                        port=port,
                        pid=info.pid,
                        device=str(device_path),
                    )
                    return info
                tried.add(port)  # lost a race for the port: try the next one
            raise NbdExportError(
                f"volume {volume_id}: qemu-nbd could not bind a port after "
                f"{_START_ATTEMPTS} attempts; see {self._log_path(volume_id)}"
            )

    def _log_path(self, volume_id: str) -> Path:
        return self._logs / f"{export_name(volume_id)}.log"

    def _launch(
        self, volume_id: str, device_path: str, port: int, client: str | None
    ) -> ExportInfo | None:
        name = export_name(volume_id)
        pid_path = self._pid_path(volume_id)
        with contextlib.suppress(FileNotFoundError):
            pid_path.unlink()
        argv = [
            self.qemu_nbd,
            "-f",
            "raw",
            f"--export-name={name}",
            "-t",
            "-e",
            "4",
            "-b",
            self.bind_host,
            "-p",
            str(port),
            f"--cache={self.cache}",
            "--discard=unmap",
            "--fork",
            f"--pid-file={pid_path}",
        ]
        if self.aio:
            argv.append(f"--aio={self.aio}")
        if client is not None:
            assert self.tls_dir is not None
            argv += tls.qemu_nbd_args(self.tls_dir, client)
        argv.append(device_path)
        log_path = self._log_path(volume_id)
        with open(log_path, "ab") as log_fh:
            mark = log_fh.tell()
            try:
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    timeout=self.start_timeout,
                    check=False,
                ).returncode
            except FileNotFoundError as exc:
                raise NbdExportError(f"{self.qemu_nbd} not found: {exc}") from exc
            except subprocess.TimeoutExpired as exc:
                raise NbdExportError(
                    f"volume {volume_id}: qemu-nbd did not start within "
                    f"{self.start_timeout:g}s; see {log_path}"
                ) from exc
        if rc != 0:
            with open(log_path, "rb") as fh:
                fh.seek(mark)
                tail = fh.read().decode("utf-8", "replace").strip()
            if "Address already in use" in tail:
                return None
            raise NbdExportError(f"volume {volume_id}: qemu-nbd exited with {rc}: {tail[-500:]}")
        pid = int(pid_path.read_text().strip())
        self._wait_listening(port, pid, volume_id)
        host = self.advertise_host
        return ExportInfo(
            volume_id=volume_id,
            export_name=name,
            host=host,
            port=port,
            pid=pid,
            device_path=device_path,
            uri=export_uri(host, port, name, secure=client is not None),
        )

    def _wait_listening(self, port: int, pid: int, volume_id: str) -> None:
        connect_host = (
            "127.0.0.1"
            if self.bind_host == "0.0.0.0"
            else ("::1" if self.bind_host == "::" else self.bind_host)
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.is_running(pid, volume_id):
                raise NbdExportError(
                    f"volume {volume_id}: qemu-nbd {pid} died after start; "
                    f"see {self._log_path(volume_id)}"
                )
            with contextlib.suppress(OSError), socket.create_connection((connect_host, port), 1):
                return
            time.sleep(0.05)
        raise NbdExportError(f"volume {volume_id}: port {port} not accepting connections")

    def stop(self, pid: int, volume_id: str, timeout: float = 10.0) -> None:
        """Stop the export (SIGTERM, then SIGKILL after ``timeout``); only if it is ours."""
        if self.is_running(pid, volume_id):
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, volume_id, timeout):
                log.warning("qemu-nbd ignored SIGTERM", pid=pid, volume_id=volume_id)
                self._signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid, volume_id, 5.0):
                    raise NbdExportError(f"volume {volume_id}: qemu-nbd {pid} survived SIGKILL")
            log.info("nbd export stopped", volume_id=volume_id, pid=pid)
        self._forget(volume_id, pid)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_gone(self, pid: int, volume_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_running(pid, volume_id):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop_volume(self, volume_id: str, timeout: float = 10.0) -> bool:
        """Stop this volume's export if this manager runs one; True when one was stopped."""
        info = self.get(volume_id)
        if info is None:
            return False
        self.stop(info.pid, volume_id, timeout)
        return True
