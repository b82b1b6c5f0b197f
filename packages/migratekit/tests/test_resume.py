"""Checkpoints and resumed full copies, against real nbdkit servers and the CLI as a process."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labtest.procs import ManagedProcess, wait_until
from migratekit._plan import parse_plan
from migratekit.errors import UsageError

from .conftest import MiB, copy_json, nbdkit, run_mk, sha256_file

pytestmark = pytest.mark.slow

SIZE = 24 * MiB


def dense(path: Path, size: int = SIZE, seed: int = 5) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def start_copy(src: str, dst: str, checkpoint: Path, log: Path) -> subprocess.Popen:
    """A slow full copy (2 connections) that flushes often, with a checkpoint file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATEKIT_")}
    env["MIGRATEKIT_PROGRESS_INTERVAL"] = "0.1"
    env["MIGRATEKIT_FLUSH_EVERY"] = "1M"
    with open(log, "w") as fh:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "migratekit", "copy", "--json", "--progress", "plain"),
                *("--disk-key", "2000", "--request-size", "64K", "--window", "2"),
                *("--connections", "2", "--checkpoint", str(checkpoint), src, dst),
            ],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            env=env,
        )


def percent(log: Path) -> float:
    found = re.findall(r"phase=copy status=running .*?percent=([\d.]+)", log.read_text())
    return float(found[-1]) if found else 0.0


@pytest.fixture
def servers(tmp_path: Path, sockdir: Path):
    """A delayed dense source and a raw file target, both multi-conn nbdkit servers:
    (source file, target file, source URI, target URI, a function that starts the source
    server again when it died)."""
    src = dense(tmp_path / "src.raw")
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(SIZE))

    def source() -> ManagedProcess:
        argv = ["--filter=delay", "file", f"file={src}", "rdelay=15ms"]
        return nbdkit(argv, sockdir / "s.sock", tmp_path / "s.log")

    procs = [source(), nbdkit(["file", f"file={dst}"], sockdir / "t.sock", tmp_path / "t.log")]

    def revive_source() -> None:
        # nbdkit 1.32's delay filter can abort the whole server when a client vanishes while
        # a reply is delayed ("raw_send_socket: Assertion `sock >= 0' failed" in its log, seen
        # here about once in ten kills): what is under test is the resume, not that server
        if not procs[0].alive():
            procs[0].stop()
            (sockdir / "s.sock").unlink(missing_ok=True)
            procs[0] = source()

    yield (
        src,
        dst,
        f"nbd+unix:///?socket={sockdir / 's.sock'}",
        f"nbd+unix:///?socket={sockdir / 't.sock'}",
        revive_source,
    )
    for p in procs:
        p.stop()


def test_kill_9_at_half_then_resume_moves_the_rest_only(tmp_path: Path, servers) -> None:
    src, dst, src_uri, dst_uri, revive_source = servers
    checkpoint = tmp_path / "cp" / "disk-2000.json"
    log = tmp_path / "mk.log"
    proc = start_copy(src_uri, dst_uri, checkpoint, log)
    try:
        wait_until(lambda: percent(log) >= 50, timeout=120, what="50 % copied", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = json.loads(checkpoint.read_text())
    safe = doc["safe_offset"]
    assert doc["disk_key"] == "2000" and doc["size"] == SIZE and doc["source"] == src_uri
    assert 0 < safe < SIZE
    # everything below the safe offset really is on the target
    assert sha256_file(dst, safe) == sha256_file(src, safe)
    revive_source()

    out = copy_json(
        "--disk-key", "2000", "--checkpoint", str(checkpoint), "--resume", src_uri, dst_uri
    )
    assert out["resumed_from"] == safe
    assert out["bytes_total"] == SIZE - safe
    assert out["bytes_written"] + out["bytes_zeroed"] == SIZE - safe
    assert out["bytes_written"] <= 0.6 * SIZE
    assert sha256_file(dst) == sha256_file(src)
    done = json.loads(checkpoint.read_text())
    assert done["completed"] is True and done["safe_offset"] == SIZE
    # resuming a completed disk (another disk of its job failed) moves nothing
    again = copy_json(
        "--disk-key", "2000", "--checkpoint", str(checkpoint), "--resume", src_uri, dst_uri
    )
    assert again["resumed_from"] == SIZE and again["bytes_total"] == 0
    assert again["bytes_written"] == 0 and again["status"] == "completed"


def test_sigterm_saves_a_checkpoint_of_exactly_what_was_done(tmp_path: Path, servers) -> None:
    src, dst, src_uri, dst_uri, _ = servers
    checkpoint = tmp_path / "disk-2000.json"
    log = tmp_path / "mk.log"
    proc = start_copy(src_uri, dst_uri, checkpoint, log)
    try:
        wait_until(lambda: percent(log) >= 20, timeout=120, what="20 % copied", proc=proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    stopped = json.loads(out)
    assert stopped["status"] == "stopped"
    safe = json.loads(checkpoint.read_text())["safe_offset"]
    # in flight requests completed and were flushed: the checkpoint covers all of them
    assert safe == stopped["bytes_done"] > 0
    assert "checkpoint kept for a resume" in log.read_text()

    out2 = copy_json(
        "--disk-key", "2000", "--checkpoint", str(checkpoint), "--resume", src_uri, dst_uri
    )
    assert out2["resumed_from"] == safe and out2["bytes_total"] == SIZE - safe
    assert sha256_file(dst) == sha256_file(src)


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", SIZE * 2), ("source", "nbd://elsewhere/disk"), ("target", "nbd://other/vol")],
)
def test_a_checkpoint_that_does_not_match_is_ignored(
    tmp_path: Path, servers, field: str, value: object
) -> None:
    src, dst, src_uri, dst_uri, _ = servers
    checkpoint = tmp_path / "disk-2000.json"
    doc = {
        "version": 1,
        "disk_key": "2000",
        "source": src_uri,
        "target": dst_uri,
        "size": SIZE,
        "target_size": SIZE,
        "safe_offset": SIZE // 2,
        "resumed_from": 0,
    }
    doc[field] = value
    checkpoint.write_text(json.dumps(doc))
    res = run_mk(
        "copy",
        "--json",
        "--progress",
        "off",
        "--disk-key",
        "2000",
        "--checkpoint",
        str(checkpoint),
        "--resume",
        src_uri,
        dst_uri,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["resumed_from"] is None and out["bytes_total"] == SIZE
    assert "checkpoint does not match this copy, ignored" in res.stderr
    assert f"field={field}" in res.stderr
    assert sha256_file(dst) == sha256_file(src)


def test_a_verify_mismatch_drops_the_checkpoint(tmp_path: Path, sockdir: Path) -> None:
    """The copy completed but the replica does not read back the source: nothing of it may
    be resumed from."""
    src = dense(tmp_path / "src.raw", size=4 * MiB, seed=8)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(4 * MiB))
    source = nbdkit(["file", f"file={src}"], sockdir / "s.sock", tmp_path / "s.log")
    # writes "succeed" but land nowhere: the target keeps reading zeroes
    target = nbdkit(
        _eval_target(dst, "exit 0", "exit 0", 4 * MiB, pwrite="cat >/dev/null"),
        sockdir / "t.sock",
        tmp_path / "t.log",
    )
    checkpoint = tmp_path / "disk-2000.json"
    try:
        res = run_mk(
            "copy",
            "--verify",
            "--progress",
            "off",
            "--checkpoint",
            str(checkpoint),
            f"nbd+unix:///?socket={sockdir / 's.sock'}",
            f"nbd+unix:///?socket={sockdir / 't.sock'}",
        )
    finally:
        source.stop()
        target.stop()
    assert res.returncode == 3, res.stderr  # every failure a verification mismatch
    assert not checkpoint.exists()


def _eval_target(
    image: Path, flush: str, can_flush: str, size: int = SIZE, pwrite: str | None = None
) -> list[str]:
    """nbdkit eval: a file target whose flush is ``flush`` (shell) and can_flush ``can_flush``
    (``pwrite``: another write method)."""
    write = f"dd of={image} oflag=seek_bytes conv=notrunc seek=$4 status=none"
    return [
        "eval",
        f"get_size=echo {size}",
        f"pread=dd if={image} iflag=skip_bytes,count_bytes skip=$4 count=$3 status=none",
        f"pwrite={pwrite or write}",
        "can_write=exit 0",
        f"can_flush={can_flush}",
        f"flush={flush}",
    ]


def test_no_checkpoint_when_the_target_flush_fails(tmp_path: Path, sockdir: Path) -> None:
    src = dense(tmp_path / "src.raw", seed=6)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(SIZE))
    source = nbdkit(["file", f"file={src}"], sockdir / "s.sock", tmp_path / "s.log")
    target = nbdkit(
        _eval_target(dst, "echo EIO flush refused >&2; exit 1", "exit 0"),
        sockdir / "t.sock",
        tmp_path / "t.log",
    )
    checkpoint = tmp_path / "disk-2000.json"
    try:
        res = run_mk(
            "copy",
            "--progress",
            "off",
            "--disk-key",
            "2000",
            "--checkpoint",
            str(checkpoint),
            f"nbd+unix:///?socket={sockdir / 's.sock'}",
            f"nbd+unix:///?socket={sockdir / 't.sock'}",
            env={"MIGRATEKIT_FLUSH_EVERY": "1M"},
        )
    finally:
        source.stop()
        target.stop()
    assert res.returncode == 1
    assert "flush failed: EIO" in res.stderr
    assert not checkpoint.exists()  # written data was never confirmed durable


def test_no_checkpoint_for_a_target_that_cannot_flush(tmp_path: Path, sockdir: Path) -> None:
    src = dense(tmp_path / "src.raw", size=4 * MiB, seed=7)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(4 * MiB))
    source = nbdkit(["file", f"file={src}"], sockdir / "s.sock", tmp_path / "s.log")
    target = nbdkit(
        _eval_target(dst, "exit 1", "exit 3", 4 * MiB),
        sockdir / "t.sock",
        tmp_path / "t.log",
    )
    checkpoint = tmp_path / "disk-2000.json"
    checkpoint.write_text("{}")
    try:
        res = run_mk(
            "copy",
            "--progress",
            "off",
            "--checkpoint",
            str(checkpoint),
            f"nbd+unix:///?socket={sockdir / 's.sock'}",
            f"nbd+unix:///?socket={sockdir / 't.sock'}",
        )
    finally:
        source.stop()
        target.stop()
    assert res.returncode == 0, res.stderr
    assert "target cannot flush" in res.stderr
    assert not checkpoint.exists()
    assert sha256_file(dst) == sha256_file(src)


def test_plan_checkpoint_dir_and_resume(tmp_path: Path) -> None:
    disk = {"disk_key": "2000", "source": "nbd://h/s", "target": "nbd://h/t"}
    plan = parse_plan(
        {
            "checkpoint_dir": "cp",
            "resume": True,
            "disks": [{**disk, "source_id": "vm-1/snap-2/2000", "target_id": "vol-9"}],
        },
        base_dir=tmp_path,
    )
    assert plan.resume
    spec = plan.disks[0]
    assert spec.checkpoint == str(tmp_path / "cp" / "disk-2000.json")
    assert (spec.source_id, spec.target_id) == ("vm-1/snap-2/2000", "vol-9")
    incremental = parse_plan(
        {"checkpoint_dir": "cp", "disks": [{**disk, "mode": "incremental", "dirty_bitmap": "b"}]}
    )
    assert incremental.disks[0].checkpoint is None  # only full copies keep checkpoints
    with pytest.raises(UsageError, match="resume: resume needs a checkpoint_dir"):
        parse_plan({"resume": True, "disks": [disk]})


def test_resume_needs_a_checkpoint_file() -> None:
    res = run_mk("copy", "--resume", "nbd://127.0.0.1/a", "nbd://127.0.0.1/b")
    assert res.returncode == 2
    assert "--resume: needs --checkpoint FILE" in res.stderr
