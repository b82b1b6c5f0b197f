"""Run the real VMA API server (``vma-api-server``: gunicorn + Flask) for tests and the demo.

:func:`vma_server` starts it on a free loopback port with a generated token, pointed at a
vCenter (normally a :func:`labtest.vcsim.vcsim`) and a lab directory, waits until
``GET /api/v1/health`` answers, and stops it by PID when the block exits (after asking it to
stop any job still active, so no migratekit or qemu-nbd outlives the test).
If the server died, the processes its active jobs started are stopped by their recorded PIDs.
``VmaInfo.restart()`` stops and starts the server on the same port and data directory — the
jobs' migratekit processes keep running in their own process groups meanwhile.
``VmaInfo.enroll()`` enrolls the VMA with an OMA (``vma-api-server enroll``'s code path) and
restarts it: it then serves HTTPS with the certificate the OMA issued (``url`` becomes
``https://…``, verified with ``ca_file``, the OMA CA) and accepts only the enrolled token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import ManagedProcess, free_port, wait_until


@dataclass
class VmaInfo:
    """A running VMA API server."""

    url: str
    token: str
    data_dir: Path
    process: ManagedProcess
    port: int
    env: dict[str, str] = field(repr=False, default_factory=dict)
    log_dir: Path = Path(".")
    starts: int = 1
    #: the CA the API's HTTPS certificate is verified with (set by :meth:`enroll`)
    ca_file: Path | None = None

    def __repr__(self) -> str:
        return f"VmaInfo(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = "default"
    ) -> tuple[int, Any]:
        """One JSON request to ``/api/v1/<path>``; returns (status, decoded body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v1/{path.lstrip('/')}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        tok = self.token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ssl_context()) as res:
                raw = res.read()
                return res.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context verifying the API's certificate with ``ca_file`` (None for http)."""
        if not self.url.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def enroll(self, oma_url: str, code: str, ca_fingerprint: str) -> str:
        """Enroll with the OMA at ``oma_url`` using a one-time ``code`` and restart over HTTPS
        with the issued certificate and token; returns the VMA's id at the OMA."""
        from vma.services import identity
        from vma_api_server.enroll import enroll

        result = enroll(oma_url, code, ca_fingerprint, self.data_dir)
        self.env.pop("VMA_API_TOKEN", None)
        self.token = result["token"]
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = identity.paths(self.data_dir).ca
        self.restart()
        return str(result["vma_id"])

    def get(self, path: str) -> Any:
        """GET and return the body; AssertionError on a non-2xx status."""
        status, body = self.request("GET", path)
        assert 200 <= status < 300, (status, body)
        return body

    def post(self, path: str, body: Any = None) -> Any:
        """POST and return the body; AssertionError on a non-2xx status."""
        status, data = self.request("POST", path, body if body is not None else {})
        assert 200 <= status < 300, (status, data)
        return data

    def wait_job(
        self,
        job_id: str,
        statuses: tuple[str, ...] = ("completed", "failed", "stopped"),
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Poll ``GET /jobs/{id}`` until its status is one of ``statuses``; return the job."""
        box: dict[str, Any] = {}

        def _done() -> bool:
            status, body = self.request("GET", f"jobs/{job_id}")
            box["job"] = body
            return status == 200 and body["status"] in statuses

        wait_until(_done, timeout, interval=0.1, what=f"job {job_id} to reach {statuses}")
        return box["job"]

    def start(self) -> None:
        """Start the server process (after :meth:`stop`)."""
        log = self.log_dir / f"vma-api-{self.starts}.log"
        self.process = ManagedProcess(_argv(), env=self.env, log_path=log, name="vma-api-server")
        self.process.start()
        _wait_healthy(self)

    def stop(self) -> None:
        """Stop the server by PID (running jobs keep running)."""
        self.process.stop()

    def restart(self) -> None:
        """Stop and start the server on the same port and data directory."""
        self.stop()
        self.starts += 1
        self.start()

    def stop_active_jobs(self) -> None:
        """Ask the server to stop every queued or running job."""
        for state in ("queued", "running"):
            status, body = self.request("GET", f"jobs?status={state}&limit=1000")
            if status != 200:
                return
            for job in body["jobs"]:
                self.request("POST", f"jobs/{job['job_id']}/stop", {})


def _argv() -> list[str]:
    script = Path(sys.executable).with_name("vma-api-server")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from vma_api_server.cli import main; sys.exit(main())",
    ]


def _wait_healthy(info: VmaInfo, timeout: float = 60.0) -> None:
    def _ok() -> bool:
        try:
            with urllib.request.urlopen(
                f"{info.url}/api/v1/health", timeout=2, context=info.ssl_context()
            ) as res:
                return res.status == 200
        except (OSError, urllib.error.URLError):
            return False

    try:
        wait_until(_ok, timeout, interval=0.1, what="vma-api-server health", proc=info.process.proc)
    except (TimeoutError, RuntimeError) as exc:
        raise RuntimeError(
            f"{exc}\n--- server log ---\n{info.process.log_text()[-3000:]}"
        ) from None


@contextlib.contextmanager
def vma_server(
    tmpdir: str | os.PathLike[str],
    *,
    vcenter: Any = None,
    lab_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[VmaInfo]:
    """Run ``vma-api-server`` on a free loopback port while the block runs.

    ``vcenter`` is a :class:`labtest.vcsim.VcsimInfo` (or anything with host, port, username,
    password); ``env`` adds or overrides ``VMA_*`` settings. Yields :class:`VmaInfo`.
    """
    base = Path(tmpdir)
    data_dir = base / "vma-data"
    token = secrets.token_urlsafe(24)
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("VMA_")}
    child_env.update(
        {
            "VMA_API_TOKEN": token,
            "VMA_BIND": f"127.0.0.1:{port}",
            "VMA_DATA_DIR": str(data_dir),
            "VMA_POLL_INTERVAL": "0.1",
            "VMA_STOP_GRACE": "5",
            "VMA_THREADS": "4",
        }
    )
    if lab_dir is not None:
        child_env["VMA_LAB_DIR"] = str(lab_dir)
    if vcenter is not None:
        child_env.update(
            {
                "VMA_VCENTER_HOST": f"{vcenter.host}:{vcenter.port}",
                "VMA_VCENTER_USER": vcenter.username,
                "VMA_VCENTER_PASSWORD": vcenter.password,
                "VMA_VCENTER_INSECURE": "true",
            }
        )
    child_env.update(env or {})
    info = VmaInfo(
        url=f"http://127.0.0.1:{port}",
        token=token,
        data_dir=data_dir,
        process=ManagedProcess(["true"]),
        port=port,
        env=child_env,
        log_dir=base,
    )
    info.start()
    try:
        yield info
    finally:
        try:
            if info.process.alive():
                info.stop_active_jobs()
        finally:
            info.stop()
            _stop_leftover_processes(data_dir)


def _stop_leftover_processes(data_dir: Path) -> None:
    """Stop (by recorded PID and start time) what jobs still active in the database started.

    Only needed when the server could not stop them itself (it crashed or was killed).
    """
    import sqlite3

    from vma.services import processes

    db_path = data_dir / "vma.db"
    if not db_path.exists():
        return
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows = db.execute(
            "SELECT supervisor_pid, supervisor_start, pid, pid_start, source_state FROM job "
            "WHERE status IN ('queued', 'running')"
        ).fetchall()
    for pid, start, child, child_start, state in rows:
        processes.stop(pid, start, grace=2.0)
        # the supervisor stops migratekit as it exits, unless it was killed before it could
        processes.stop(child, child_start, grace=2.0)
        for server in json.loads(state or "{}").get("servers", []):
            processes.stop(server.get("pid"), server.get("start"), grace=2.0)
