"""OMA lab fixtures: a stub VMA HTTP server, and the real OMA services (API + worker).

``StubVma`` is a real HTTP server (``ThreadingHTTPServer`` on a free loopback port) that speaks
the VMA's API as far as the OMA uses it: bearer auth, ``POST /replicate``, ``GET /jobs/{id}``,
``POST /jobs/{id}/stop``, ``GET /progress/{id}``, the batched ``GET /progress?job_ids=``,
``POST /discover`` (answers ``vms``), ``/vms/{id}/power|power-off|power-on`` and
``/vms/{id}/cbt|cbt/enable``.
Tests set each job's progress document (``set_progress``), forget jobs (→ ``not_found``) or
switch the server off; optionally a replicated job copies real bytes from a source image to
each disk's ``target_uri`` with ``qemu-img convert`` and then reports completion with a
change ID (and, when the request asks to verify, ``verified`` with the sha256 of the source
image and of the target read back over NBD, as migratekit reports them for a full copy), so a
workflow test gets byte-exact results without a full VMA.

``oma_services`` starts the real ``oma serve`` (gunicorn, HTTPS with a certificate from the
OMA's CA: ``OmaInfo.ca_file`` verifies it) and ``oma worker`` processes on a SQLite database
(or ``OMA_DATABASE_URL`` in ``extra_env``), with ``kill_worker()`` / ``restart_worker()`` for
crash tests, ``api()`` for JSON calls and ``client_env`` for the ``oma`` commands;
``stop_exports`` stops the qemu-nbd exports an OMA left behind. ``register_lab`` enrolls a
real VMA (``enroll_vma``: one-time code, certificates, HTTPS) and registers a stub by token.

For in-process tests and the poller benchmark: ``oma_database`` binds the OMA's database
(a SQLite path or a URL) with the schema applied, ``throwaway_database`` creates and drops
a database on the local PostgreSQL/MariaDB, and ``seed_replicating_jobs`` bulk-inserts
VMAs, contexts and replicating jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .procs import ManagedProcess, free_port, wait_until


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def progress_doc(
    job_id: str,
    status: str,
    disks: list[dict[str, Any]],
    *,
    error: str | None = None,
    sync_type: str = "full",
) -> dict[str, Any]:
    """A JobProgress-shaped dict built from per-disk dicts (sums like JobProgress.aggregate)."""
    full = []
    for d in disks:
        disk = {
            "disk_key": str(d["disk_key"]),
            "sync_type": d.get("sync_type", sync_type),
            "phase": d.get("phase", "copy"),
            "status": d.get("status", "running"),
            "bytes_total": d.get("bytes_total", 0),
            "bytes_done": d.get("bytes_done", 0),
            "bytes_written": d.get("bytes_written", 0),
            "bytes_zeroed": d.get("bytes_zeroed", 0),
            "throughput_bps": d.get("throughput_bps", 0.0),
            "change_id": d.get("change_id"),
            "error": d.get("error"),
            "seq": d.get("seq", 1),
            "sent_at": d.get("sent_at", _now()),
        }
        disk.update({k: d[k] for k in ("verified", "source_sha256", "target_sha256") if k in d})
        full.append(disk)
    total = sum(d["bytes_total"] for d in full)
    done = sum(d["bytes_done"] for d in full)
    percent = 100.0 if status == "completed" else (round(100.0 * done / total, 2) if total else 0)
    order = ["snapshot", "copy", "verify", "done"]
    phase = min((d["phase"] for d in full), key=order.index) if full else "snapshot"
    return {
        "job_id": job_id,
        "status": status,
        "sync_type": sync_type,
        "phase": phase,
        "percent": percent,
        "bytes_total": total,
        "bytes_done": done,
        "throughput_bps": sum(d["throughput_bps"] for d in full),
        "eta_seconds": None,
        "started_at": _now(),
        "updated_at": _now(),
        "error": error,
        "disks": full,
    }


@dataclass
class StubVma:
    """A stub VMA API on a free loopback port. Use as a context manager (or start/stop)."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    host: str = "127.0.0.1"
    #: (vm_id, disk_key) -> source image; when set, POST /replicate copies real bytes.
    sources: dict[tuple[str, str], Path] = field(default_factory=dict)
    #: When set, a copying job waits for this event before it copies (crash tests).
    gate: threading.Event | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicate_calls: list[dict[str, Any]] = field(default_factory=list)
    stop_calls: list[str] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    #: answered by POST /discover (the request body is recorded in ``discover_calls``)
    vms: list[dict[str, Any]] = field(default_factory=list)
    discover_calls: list[dict[str, Any]] = field(default_factory=list)
    #: vm_id -> power state (default poweredOn) and CBT flag, for /vms/{id}/power|cbt
    power: dict[str, str] = field(default_factory=dict)
    cbt: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._copiers: list[threading.Thread] = []
        self._generation = 0

    @property
    def url(self) -> str:
        """Base URL (without /api/v1)."""
        return f"http://{self.host}:{self.port}"

    # -- state used by tests -------------------------------------------------------------

    def set_progress(self, job_id: str, doc: dict[str, Any]) -> None:
        """Make ``GET /progress`` answer ``doc`` for ``job_id`` (the job becomes known)."""
        with self._lock:
            self.jobs[job_id] = doc

    def forget(self, job_id: str) -> None:
        """Forget ``job_id`` (the VMA answers it as not_found)."""
        with self._lock:
            self.jobs.pop(job_id, None)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> StubVma:
        """Listen on the configured port (or a free one) and serve in a thread."""
        stub = self

        class Handler(_Handler):
            vma = stub

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (the port stays reserved in ``port``)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.gate is not None:
            self.gate.set()
        for t in self._copiers:
            t.join(60)

    def __enter__(self) -> StubVma:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour --------------------------------------------------------------------------

    def _replicate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            return 400, _err("invalid", "job_id is required", "job_id")
        disks = body.get("disks")
        if not isinstance(disks, list) or not disks:
            return 400, _err("invalid", "disks must be a non-empty list", "disks")
        with self._lock:
            self.replicate_calls.append(body)
            if job_id in self.jobs:
                return 202, {"job_id": job_id, "status": self.jobs[job_id]["status"]}
            self.jobs[job_id] = progress_doc(
                job_id,
                "queued",
                [
                    {"disk_key": d["disk_key"], "phase": "snapshot", "status": "queued"}
                    for d in disks
                ],
            )
        if self.sources:
            t = threading.Thread(target=self._copy, args=(body,), daemon=True)
            self._copiers.append(t)
            t.start()
        return 202, {"job_id": job_id, "status": "queued"}

    def _copy(self, body: dict[str, Any]) -> None:
        job_id, vm_id = body["job_id"], body["vm_id"]
        disks = body["disks"]
        kind = "incremental" if all(d.get("previous_change_id") for d in disks) else "full"
        self.set_progress(
            job_id,
            progress_doc(
                job_id,
                "running",
                [{"disk_key": d["disk_key"], "status": "running", "bytes_total": 1} for d in disks],
                sync_type=kind,
            ),
        )
        if self.gate is not None:
            self.gate.wait()
        done = []
        for d in disks:
            src = self.sources.get((vm_id, str(d["disk_key"])))
            if src is None:
                self.set_progress(
                    job_id,
                    progress_doc(
                        job_id,
                        "failed",
                        [{"disk_key": d["disk_key"], "status": "failed", "error": "no source"}],
                        error=f"no source image for disk {d['disk_key']}",
                    ),
                )
                return
            res = subprocess.run(
                ["qemu-img", "convert", "-n", "-O", "raw", str(src), d["target_uri"]],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                msg = res.stderr.strip() or f"qemu-img exited with {res.returncode}"
                self.set_progress(
                    job_id,
                    progress_doc(
                        job_id,
                        "failed",
                        [{"disk_key": d["disk_key"], "status": "failed", "error": msg}],
                        error=msg,
                    ),
                )
                return
            size = src.stat().st_size
            with self._lock:
                self._generation += 1
                gen = self._generation
            done.append(
                {
                    "disk_key": d["disk_key"],
                    "status": "completed",
                    "phase": "done",
                    "bytes_total": size,
                    "bytes_done": size,
                    "bytes_written": size,
                    "change_id": f"gen-{gen}",
                    "seq": 2,
                    **(
                        _verify(src, d["target_uri"])
                        if body.get("options", {}).get("verify")
                        else {}
                    ),
                }
            )
        with self._lock:
            if self.jobs.get(job_id, {}).get("status") == "stopped":
                return
        self.set_progress(job_id, progress_doc(job_id, "completed", done, sync_type=kind))


def _verify(source: Path, target_uri: str) -> dict[str, Any]:
    """``verified`` and both digests over the source's virtual size (a full copy's range)."""
    import hashlib
    import tempfile

    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(source)],
        capture_output=True,
        text=True,
        check=True,
    )
    size = int(json.loads(info.stdout)["virtual-size"])
    digests = []
    with tempfile.TemporaryDirectory() as tmp:
        for image, fmt in ((str(source), "qcow2"), (target_uri, "raw")):
            raw = Path(tmp) / "contents.raw"
            subprocess.run(
                ["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", image, str(raw)],
                capture_output=True,
                check=True,
            )
            digest, left = hashlib.sha256(), size
            with open(raw, "rb") as fh:
                while left and (block := fh.read(min(left, 1 << 20))):
                    digest.update(block)
                    left -= len(block)
            digest.update(bytes(left))
            digests.append(digest.hexdigest())
            raw.unlink()
    return {
        "verified": digests[0] == digests[1],
        "source_sha256": digests[0],
        "target_sha256": digests[1],
    }


def _err(code: str, message: str, field_name: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field_name}}


class _Handler(BaseHTTPRequestHandler):
    vma: StubVma
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.vma.token}":
            return True
        self._send(401, _err("unauthorized", "missing or invalid bearer token"))
        return False

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _vm_route(self, method: str, path: str, body: dict[str, Any] | None = None) -> bool:
        """``vms/{id}/power``, ``power-off``, ``power-on``, ``cbt``, ``cbt/enable``."""
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "vms":
            return False
        vm_id, action = parts[1], "/".join(parts[2:])
        vma = self.vma
        with vma._lock:
            if (method, action) == ("GET", "power"):
                answer = {"vm_id": vm_id, "power_state": vma.power.get(vm_id, "poweredOn")}
            elif (method, action) == ("POST", "power-off"):
                was = vma.power.get(vm_id, "poweredOn")
                vma.power[vm_id] = "poweredOff"
                graceful = (body or {}).get("graceful", True)
                method_used = (
                    "already_off" if was == "poweredOff" else ("graceful" if graceful else "forced")
                )
                answer = {"vm_id": vm_id, "power_state": "poweredOff", "method": method_used}
            elif (method, action) == ("POST", "power-on"):
                vma.power[vm_id] = "poweredOn"
                answer = {"vm_id": vm_id, "power_state": "poweredOn"}
            elif (method, action) == ("GET", "cbt"):
                answer = {"vm_id": vm_id, "cbt_enabled": vma.cbt.get(vm_id, False)}
            elif (method, action) == ("POST", "cbt/enable"):
                vma.cbt[vm_id] = True
                answer = {"vm_id": vm_id, "cbt_enabled": True}
            else:
                return False
        self._send(200, answer)
        return True

    def do_GET(self) -> None:
        """health, progress (single and batched), jobs."""
        parts = urlsplit(self.path)
        path = parts.path.removeprefix("/api/v1").strip("/")
        with self.vma._lock:
            self.vma.requests += 1
        if path == "health":
            self._send(200, {"status": "ok"})
            return
        if not self._authorized():
            return
        if self._vm_route("GET", path):
            return
        if path == "progress":
            ids = [i for i in parse_qs(parts.query).get("job_ids", [""])[0].split(",") if i]
            with self.vma._lock:
                found = [self.vma.jobs[i] for i in ids if i in self.vma.jobs]
                missing = [i for i in ids if i not in self.vma.jobs]
            self._send(200, {"jobs": found, "not_found": missing})
            return
        for prefix in ("progress/", "jobs/"):
            if path.startswith(prefix):
                job_id = path.removeprefix(prefix)
                with self.vma._lock:
                    doc = self.vma.jobs.get(job_id)
                if doc is None:
                    self._send(404, _err("not_found", f"job {job_id} not found", "job_id"))
                elif prefix == "jobs/":
                    self._send(
                        200,
                        {
                            "job_id": job_id,
                            "status": doc["status"],
                            "pid": None,
                            "error": doc["error"],
                            "progress": doc,
                        },
                    )
                else:
                    self._send(200, doc)
                return
        self._send(404, _err("not_found", f"no route {parts.path}"))

    def do_POST(self) -> None:
        """replicate, stop."""
        path = urlsplit(self.path).path.removeprefix("/api/v1").strip("/")
        with self.vma._lock:
            self.vma.requests += 1
        if not self._authorized():
            return
        body = self._body()
        if path == "replicate":
            self._send(*self.vma._replicate(body))
            return
        if path == "discover":
            with self.vma._lock:
                self.vma.discover_calls.append(body)
            self._send(200, {"vms": self.vma.vms})
            return
        if self._vm_route("POST", path, body):
            return
        if path.startswith("jobs/") and path.endswith("/stop"):
            job_id = path.removeprefix("jobs/").removesuffix("/stop")
            with self.vma._lock:
                doc = self.vma.jobs.get(job_id)
                self.vma.stop_calls.append(job_id)
                if doc is not None and doc["status"] not in ("completed", "failed"):
                    doc["status"] = "stopped"
            if doc is None:
                self._send(404, _err("not_found", f"job {job_id} not found", "job_id"))
            else:
                self._send(200, {"job_id": job_id, "status": doc["status"]})
            return
        self._send(404, _err("not_found", f"no route {path}"))


# ---------------------------------------------------------------------------------------------
# The real OMA services


@dataclass
class OmaInfo:
    """A running OMA: API URL, admin token, data dir, processes and the env they run with."""

    url: str
    admin_token: str
    data_dir: Path
    api_process: ManagedProcess
    worker_process: ManagedProcess
    config_env: dict[str, str]

    def api(
        self, method: str, path: str, body: Any = None, token: str | None = "admin"
    ) -> tuple[int, Any]:
        """One JSON request to the OMA API (``path`` under /api/v1); (status, decoded body)."""
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v1/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        tok = self.admin_token if token == "admin" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ssl_context()) as res:
                raw = res.read()
                return res.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            return exc.code, json.loads(raw) if raw else None

    @property
    def ca_file(self) -> Path:
        """The OMA CA's certificate (verifies the API's HTTPS certificate)."""
        return self.data_dir / "pki" / "ca.crt"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context verifying the API with :attr:`ca_file` (None when it serves http)."""
        if not self.url.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def client_env(self) -> dict[str, str]:
        """``OMA_URL``, ``OMA_TOKEN`` (admin) and ``OMA_CA_FILE`` for the ``oma`` commands."""
        ca = str(self.ca_file)
        return {"OMA_URL": self.url, "OMA_TOKEN": self.admin_token, "OMA_CA_FILE": ca}

    restart_worker: Callable[[], ManagedProcess] = field(repr=False, default=lambda: None)  # type: ignore[assignment, return-value]
    kill_worker: Callable[[], None] = field(repr=False, default=lambda: None)
    #: every worker started with the services, in order (``workers[0]`` is ``worker_process``
    #: until ``restart_worker()``); worker ``i`` runs with ``OMA_WORKER_ID`` ``worker_ids[i]``
    workers: list[ManagedProcess] = field(repr=False, default_factory=list)
    worker_ids: list[str] = field(default_factory=list)


def _ok(answer: tuple[int, Any], expected: int) -> Any:
    status, body = answer
    if status != expected:
        raise AssertionError(f"OMA API answered {status}, expected {expected}: {body}")
    return body


def enroll_vma(oma: OmaInfo, vma: Any, name: str) -> str:
    """Enroll a real VMA (a ``labtest.vma.VmaInfo``) as ``name``: a one-time code from
    ``POST /vma-enrollments``, the VMA's enrollment with it (CA pinned by fingerprint), and
    the VMA restarted on HTTPS; returns its id. The OMA then holds its pinned certificate."""
    created = _ok(
        oma.api("POST", "vma-enrollments", {"name": name, "url": f"https://127.0.0.1:{vma.port}"}),
        201,
    )
    return str(vma.enroll(oma.url, created["code"], created["ca_fingerprint"]))


def register_lab(oma: OmaInfo, *, vma: Any, sim: Any) -> str:
    """Register the lab's VMA (``vma-1``) and the simulator as the default CloudStack target
    ``lab`` (customized disk offering) through the OMA's API; returns the VMA's id. A real
    VMA is enrolled (:func:`enroll_vma`); a :class:`StubVma` is registered with its token."""
    if hasattr(vma, "enroll"):
        vma_id = enroll_vma(oma, vma, "vma-1")
    else:
        appliance = _ok(
            oma.api(
                "POST", "vma-appliances", {"name": "vma-1", "url": vma.url, "token": vma.token}
            ),
            201,
        )
        vma_id = str(appliance["id"])
    _ok(
        oma.api(
            "POST",
            "cloudstack-targets",
            {
                "name": "lab",
                "endpoint": sim.endpoint,
                "api_key": sim.api_key,
                "secret_key": sim.secret_key,
                "zone_id": sim.zone_id,
                "oma_vm_id": sim.oma_vm_id,
                "disk_offering_id": sim.custom_disk_offering_id,
                "is_default": True,
            },
        ),
        201,
    )
    return vma_id


def add_lab_vms(oma: OmaInfo, *, vma_id: str, vc: Any, vm_ids: list[str]) -> list[str]:
    """Add vcsim VMs through ``POST /discovery/add``; their context ids, in ``vm_ids`` order."""
    added = _ok(
        oma.api(
            "POST",
            "discovery/add",
            {
                "vma_id": vma_id,
                "vcenter": f"{vc.host}:{vc.port}",
                "username": vc.username,
                "password": vc.password,
                "insecure": True,
                "vm_ids": list(vm_ids),
            },
        ),
        201,
    )
    by_vm = {a["vm_id"]: a["id"] for a in added["added"]}
    return [by_vm[v] for v in vm_ids]


def _oma_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "oma", *args]


@contextlib.contextmanager
def oma_services(
    tmpdir: str | os.PathLike[str],
    *,
    cloudstack: Any = None,
    vma: Any = None,
    extra_env: Mapping[str, str] | None = None,
    poll_interval: float = 0.5,
    workers: int = 1,
    tls: bool = True,
) -> Iterator[OmaInfo]:
    """Start the real ``oma serve`` and ``oma worker`` with a SQLite DB on free ports.

    ``cloudstack`` is a ``labtest.cloudstack.SimInfo`` (its by-id dir becomes OMA_BY_ID_DIR);
    ``vma`` a ``VmaInfo``/``StubVma`` (only used by callers to register it through the API).
    Yields :class:`OmaInfo`; ``restart_worker()`` starts a fresh worker process and
    ``kill_worker()`` sends it SIGKILL (crash tests). Everything is stopped by PID on exit.
    ``workers`` > 1 starts that many ``oma worker`` processes sharing the database (give a
    PostgreSQL/MariaDB ``OMA_DATABASE_URL`` in ``extra_env``), the first as ``lab-worker``,
    the others as ``lab-worker-2``, ``lab-worker-3``, … (``OmaInfo.workers``/``worker_ids``).
    The API serves HTTPS (``OMA_TLS``) unless ``tls`` is false.
    """
    base = Path(tmpdir)
    data_dir = base / "oma-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lo = min(free_port(), 65000)  # the export manager skips ports that are busy
    env = dict(os.environ)
    env.update(
        {
            "OMA_DATA_DIR": str(data_dir),
            "OMA_BIND": f"127.0.0.1:{port}",
            "OMA_SECRET_KEY": _fernet_key(),
            "OMA_POLL_INTERVAL": str(poll_interval),
            "OMA_NBD_BIND_HOST": "127.0.0.1",
            "OMA_NBD_PORT_RANGE": f"{lo}-{lo + 40}",
            "OMA_CLOUDSTACK_POLL_INTERVAL": "0.05",
            "OMA_DEVICE_TIMEOUT": "20",
            "OMA_LOG_LEVEL": "INFO",
            # a fixed worker id: a restarted worker takes its dead predecessor's leases at once
            "OMA_WORKER_ID": "lab-worker",
            "OMA_LEASE_TIMEOUT": "10",
            "OMA_TLS": "true" if tls else "false",
        }
    )
    if cloudstack is not None:
        env["OMA_BY_ID_DIR"] = str(cloudstack.by_id_dir)
    env.update(extra_env or {})
    res = subprocess.run(_oma_argv("db", "upgrade"), env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"oma db upgrade failed: {res.stderr.strip()}")
    res = subprocess.run(
        _oma_argv("token", "create", "--name", "lab-admin", "--role", "admin"),
        env=env,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(f"oma token create failed: {res.stderr.strip()}")
    token = res.stdout.strip().splitlines()[-1].strip()
    api = ManagedProcess(
        _oma_argv("serve"), env=env, name="oma-serve", log_path=data_dir / "logs" / "api.log"
    ).start()
    started: list[ManagedProcess] = []

    def start_worker(index: int = 0) -> ManagedProcess:
        suffix = f"-{index + 1}" if index else ""
        proc = ManagedProcess(
            _oma_argv("worker"),
            env={**env, "OMA_WORKER_ID": env["OMA_WORKER_ID"] + suffix} if index else env,
            name=f"oma-worker{suffix}",
            log_path=data_dir / "logs" / f"worker{suffix}.log",
        ).start()
        started.append(proc)
        return proc

    info = OmaInfo(
        url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        admin_token=token,
        data_dir=data_dir,
        api_process=api,
        worker_process=start_worker(),
        config_env=env,
    )
    info.workers = [info.worker_process, *(start_worker(i) for i in range(1, workers))]
    info.worker_ids = [
        env["OMA_WORKER_ID"],
        *(f"{env['OMA_WORKER_ID']}-{i + 1}" for i in range(1, workers)),
    ]

    def restart_worker() -> ManagedProcess:
        info.worker_process.stop()
        info.worker_process = start_worker()
        return info.worker_process

    def kill_worker() -> None:
        info.worker_process.kill()

    info.restart_worker = restart_worker
    info.kill_worker = kill_worker
    try:
        api.wait_port(port, timeout=60)
        for proc in info.workers:
            wait_until(proc.alive, timeout=5, what=proc.name)
        yield info
    finally:
        for proc in started:
            proc.stop()
        api.stop()
        stop_exports(data_dir / "exports")


def stop_exports(state_dir: str | os.PathLike[str]) -> list[int]:
    """Stop every qemu-nbd export an OMA ExportManager recorded in ``state_dir`` (by PID)."""
    from oma.nbd import ExportManager

    if not Path(state_dir).exists():
        return []
    manager = ExportManager(state_dir=Path(state_dir))
    stopped = []
    for export in manager.list_running():
        manager.stop(export.pid, export.volume_id)
        stopped.append(export.pid)
    return stopped


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode()


# ---------------------------------------------------------------------------------------------
# An OMA database for in-process tests and the poller benchmark


@contextlib.contextmanager
def oma_database(path_or_url: str | os.PathLike[str]) -> Iterator[Any]:
    """Bind the OMA's database to a fresh SQLite file (a path) or a database URL, migrated."""
    from oma.database.db import database, init_db
    from oma.database.migrate import upgrade

    text = str(path_or_url)
    url = text if "://" in text else f"sqlite:///{Path(text).resolve()}"
    db = init_db(url)
    upgrade()
    try:
        yield db
    finally:
        if not db.is_closed():
            db.close()
        database.initialize(None)


@contextlib.contextmanager
def throwaway_database(kind: str) -> Iterator[str]:
    """A new empty database ``oma_lab_<random>`` on the local PostgreSQL (``postgresql``) or
    MariaDB (``mariadb``) server, dropped afterwards; yields its URL."""
    name = f"oma_lab_{secrets.token_hex(4)}"
    if kind == "postgresql":
        import psycopg2

        admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3)
        admin.autocommit = True
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    elif kind == "mariadb":
        import pymysql

        admin = pymysql.connect(
            host="127.0.0.1",
            port=3306,
            user="root",
            password="",
            connect_timeout=3,
            autocommit=True,
        )
        create, drop = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4", f"DROP DATABASE `{name}`"
        url = f"mysql://root@127.0.0.1:3306/{name}"
    else:
        raise ValueError(f"unknown database kind {kind!r} (postgresql or mariadb)")
    try:
        with admin.cursor() as cur:
            cur.execute(create)
        try:
            yield url
        finally:
            with admin.cursor() as cur:
                cur.execute(drop)
    finally:
        admin.close()


def seed_replicating_jobs(
    vmas: list[tuple[str, str]],
    jobs_per_vma: int,
    *,
    disks_per_job: int = 2,
    disk_size: int = 1 << 30,
) -> dict[str, list[str]]:
    """Insert VMAs, contexts (with disks) and one ``replicating`` job each; return ids per VMA.

    ``vmas`` is a list of (name, url). Tokens are stored as the literal text ``token:<name>``
    (pass a matching ``token_for`` to the poller). Rows are inserted in bulk.
    """
    import uuid

    from migration_common import utcnow
    from oma.database.db import database
    from oma.database.models import JobDisk, ReplicationJob, VmaAppliance, VmContext, VmDisk

    now = utcnow()
    out: dict[str, list[str]] = {}
    with database.connection_context(), database.atomic():
        for name, url in vmas:
            vma = VmaAppliance.create(name=name, url=url, token_encrypted=f"token:{name}")
            ctx_rows, disk_rows, job_rows, jd_rows = [], [], [], []
            ids = []
            for _ in range(jobs_per_vma):
                ctx_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
                ids.append(job_id)
                ctx_rows.append(
                    {
                        "id": ctx_id,
                        "vma": vma.id,
                        "vcenter": "vc.lab",
                        "vm_id": str(uuid.uuid4()),
                        "name": f"vm-{ctx_id[:8]}",
                        "state": "replicating",
                        "active_job_id": job_id,
                    }
                )
                job_rows.append(
                    {
                        "id": job_id,
                        "context": ctx_id,
                        "vma": vma.id,
                        "status": "replicating",
                        "active_context_id": ctx_id,
                        "effective_type": "full",
                        "started_at": now,
                        "last_progress_at": now,
                        "vma_seen_at": now,
                    }
                )
                for k in range(disks_per_job):
                    key = str(2000 + k)
                    disk_rows.append(
                        {
                            "id": str(uuid.uuid4()),
                            "context": ctx_id,
                            "disk_key": key,
                            "capacity_bytes": disk_size,
                        }
                    )
                    jd_rows.append(
                        {
                            "id": str(uuid.uuid4()),
                            "job": job_id,
                            "disk_key": key,
                            "status": "queued",
                        }
                    )
            for model, rows in (
                (VmContext, ctx_rows),
                (VmDisk, disk_rows),
                (ReplicationJob, job_rows),
                (JobDisk, jd_rows),
            ):
                for start in range(0, len(rows), 200):
                    model.insert_many(rows[start : start + 200]).execute()
            out[vma.id] = ids
    return out
