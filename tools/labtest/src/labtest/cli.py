"""The ``oma`` command for CLI tests: a clean environment, one run, and a served API.

``cli_env`` builds an environment without the caller's ``OMA_*`` variables (a data dir and a
fresh secret key in ``tmp_path``); ``run_oma`` runs ``python -m oma`` in it (stdin closed or
given); ``served_oma`` runs a real ``oma serve`` (gunicorn, plain HTTP on a free loopback port)
with an admin token, and stops it by PID when the block exits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .procs import ManagedProcess, free_port, wait_until


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for ``oma`` with its data in ``tmp_path/data`` and nothing inherited
    from ``OMA_*`` (nor a CLI profile from the home directory)."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    env.update(
        OMA_DATA_DIR=str(tmp_path / "data"),
        OMA_SECRET_KEY=Fernet.generate_key().decode(),
        OMA_LOG_LEVEL="WARNING",
        OMA_CLI_CONFIG=str(tmp_path / "no-cli-profiles.toml"),
        **extra,
    )
    return env


def run_oma(
    env: dict[str, str], *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """``oma *args`` to its end; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "oma", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def health(url: str) -> dict[str, Any] | None:
    """The OMA's health document, or None while it does not answer (yet)."""
    import requests

    try:
        r = requests.get(f"{url}/health", timeout=10)
    except requests.RequestException:
        return None
    return r.json() if r.status_code == 200 else None


@contextlib.contextmanager
def served_oma(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real ``oma serve`` with an admin token: ``url``, ``token``, ``env`` (for the
    commands: OMA_URL and OMA_TOKEN set), ``proc`` and ``db`` (its SQLite URL)."""
    port = free_port()
    env = cli_env(tmp_path, OMA_BIND=f"127.0.0.1:{port}", OMA_API_WORKERS="2")
    made = run_oma(env, "token", "create", "--name", "admin", "--role", "admin")
    if made.returncode != 0:
        raise RuntimeError(f"oma token create failed: {made.stderr.strip()}")
    token = made.stdout.split()[-1]
    proc = ManagedProcess(
        [sys.executable, "-m", "oma", "serve"],
        env=env,
        name="oma-serve",
        log_path=tmp_path / "serve.log",
    ).start()
    try:
        proc.wait_port(port)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: health(url) is not None, what="oma serve health", proc=proc.proc)
        yield {
            "url": url,
            "token": token,
            "env": {**env, "OMA_URL": url, "OMA_TOKEN": token},
            "proc": proc,
            "db": f"sqlite:///{tmp_path / 'data' / 'oma.db'}",
        }
    finally:
        proc.stop()


#: The VM the CLI tests add through the served API (two small disks).
CLI_VM: dict[str, Any] = {
    "id": "4202-cli",
    "name": "cli-vm",
    "disks": [
        {"key": "2000", "capacity_bytes": 4 << 20},
        {"key": "2001", "capacity_bytes": 2 << 20},
    ],
}


def add_cli_vm(served: dict[str, Any]) -> dict[str, Any]:
    """Register a VMA and add :data:`CLI_VM` through the served API; the added VM context."""
    import requests

    url, headers = served["url"], {"Authorization": f"Bearer {served['token']}"}
    vma = requests.post(
        f"{url}/api/v1/vma-appliances",
        headers=headers,
        json={"name": "v", "url": "http://127.0.0.1:9", "token": "tok1"},
        timeout=30,
    ).json()
    return requests.post(
        f"{url}/api/v1/discovery/add",
        headers=headers,
        json={"vma_id": vma["id"], "vcenter": "vc", "vms": [CLI_VM]},
        timeout=30,
    ).json()["added"][0]
