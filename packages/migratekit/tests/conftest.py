"""Fixtures: sparse images with random data, real qemu-nbd/nbdkit servers, the CLI as a process."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from labtest import nbd as labnbd
from labtest.procs import ManagedProcess, wait_until
from migration_common import parse_disk_update

MiB = 1 << 20


def sha256_file(path: str | Path, size: int | None = None) -> str:
    """sha256 of a file's first ``size`` bytes (all when None)."""
    digest = hashlib.sha256()
    remaining = size if size is not None else 1 << 62
    with open(path, "rb") as fh:
        while remaining > 0:
            block = fh.read(min(4 * MiB, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def make_sparse_random(path: Path, size: int, seed: int = 1, data_share: float = 0.3) -> Path:
    """A sparse raw file: random-length runs of random data between holes, some zero runs."""
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        fh.truncate(size)
        offset = 0
        while offset < size:
            run = rng.choice([4096, 65536, 300_000, MiB, 3 * MiB + 512])
            if rng.random() < data_share:
                fh.seek(offset)
                fh.write(rng.randbytes(min(run, size - offset)))
            offset += run + rng.choice([0, 4096, 512 * 1024, 2 * MiB])
    return path


def raw_of(qcow2: Path, out: Path) -> Path:
    """Convert a qcow2 image to raw (read shared, the image may be exported)."""
    labnbd.qemu_img("convert", "-U", "-f", "qcow2", "-O", "raw", str(qcow2), str(out))
    return out


def run_mk(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m migratekit ARGS`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATEKIT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "migratekit", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def copy_json(*args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``migratekit copy --json`` and return its JSON (asserting exit 0)."""
    res = run_mk("copy", "--json", "--progress", "off", *args, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def nbdkit(argv: Sequence[str], sock: Path, log: Path) -> ManagedProcess:
    """Start ``nbdkit -f -U sock ARGV`` and wait until its socket accepts connections (the
    path exists from bind(), a moment before listen())."""
    proc = ManagedProcess(
        ["nbdkit", "-f", "-U", str(sock), *argv], log_path=log, name="nbdkit"
    ).start()
    try:
        proc.wait_path(sock)
        wait_until(lambda: _accepts(sock), what=f"nbdkit listening on {sock}")
    except BaseException:
        proc.stop()
        raise
    return proc


def _accepts(sock: Path) -> bool:
    """True once a socket bound to ``sock`` is listening (read from /proc/net/unix, so no
    probe connection counts against a server's connection limit)."""
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(sock) and int(fields[3], 16) & 0x10000:
            return True
    return False


@pytest.fixture
def sockdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A short directory for unix sockets (paths must stay under 108 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mk-") as d:
        yield Path(d)


@pytest.fixture
def raw_export(tmp_path: Path) -> Iterator[callable]:
    """Factory: serve a raw file with qemu-nbd on TCP (or unix); stopped after the test."""
    stack: list = []

    def serve(path: Path, **kw: object) -> labnbd.NbdExport:
        cm = labnbd.qemu_nbd(path, fmt=kw.pop("fmt", "raw"), **kw)  # type: ignore[arg-type]
        export = cm.__enter__()
        stack.append(cm)
        return export

    yield serve
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


class Recorder:
    """A tiny VMA stand-in: records every POST; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[str, str | None, bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.posts.append((self.path, self.headers.get("Authorization"), body))
                payload = b'{"ok": true}'
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def updates(self, disk_key: str) -> list:
        return [
            parse_disk_update(b) for _, _, b in self.posts if json.loads(b)["disk_key"] == disk_key
        ]
