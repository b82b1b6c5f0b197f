"""Bandwidth limit against real qemu-nbd servers: the measured rate is within 10 % of the
limit, and a limit written to the limit file mid-copy is in force within one progress
interval (measured from the progress updates migratekit posts)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migration_common import DiskProgress, Status, utcnow

from .conftest import MiB, Recorder, sha256_file

pytestmark = pytest.mark.slow
INTERVAL = 0.5


@pytest.fixture
def vma() -> Iterator[Recorder]:
    rec = Recorder()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def write_limit(path: Path, limit: int | None) -> None:
    """Atomically, as the VMA does: a temporary file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"limit_bps": limit}))
    os.replace(tmp, path)


def rate(updates: list[DiskProgress]) -> float:
    """Bytes per second: least-squares slope of bytes_done over sent_at (robust against the
    few requests in flight at any one update)."""
    t0 = updates[0].sent_at
    xs = [(u.sent_at - t0).total_seconds() for u in updates]
    ys = [float(u.bytes_done) for u in updates]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def test_limit_is_held_and_a_change_applies_within_one_progress_interval(
    tmp_path: Path, vma: Recorder, raw_export
) -> None:
    size = 16 * MiB
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    src.write_bytes(random.Random(7).randbytes(size))  # all data: every byte is sent
    dst.write_bytes(bytes(size))
    s, t = raw_export(src, readonly=True), raw_export(dst)
    limit_file = tmp_path / "bandwidth.json"
    first, second = MiB, 2 * MiB
    write_limit(limit_file, first)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATEKIT_")}
    env.update(MIGRATEKIT_PROGRESS_INTERVAL=str(INTERVAL), MIGRATEKIT_PROGRESS_TOKEN="t")
    argv = [sys.executable, "-m", "migratekit", "copy", s.uri, t.uri, "--disk-key", "2000"]
    argv += ["--job-id", "job-1", "--progress-url", vma.url, "--progress", "off"]
    argv += ["--request-size", "64K", "--bandwidth-file", str(limit_file), "--json"]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(u.bytes_done >= 5 * MiB for u in vma.updates("2000")):
            assert proc.poll() is None and time.monotonic() < deadline, "copy ended too early"
            time.sleep(0.05)
        changed_at = utcnow()
        write_limit(limit_file, second)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "completed"
    assert sha256_file(dst) == sha256_file(src)

    updates = vma.updates("2000")
    running = [u for u in updates if u.status is Status.RUNNING and u.bytes_done]
    before = [u for u in running if u.sent_at < changed_at]
    after = [u for u in running if u.sent_at >= changed_at]
    assert {u.limit_bps for u in before} == {first}
    measured_first = rate(before)
    assert abs(measured_first - first) <= 0.1 * first, f"{measured_first / MiB:.2f} MiB/s"

    switched = [u for u in after if u.limit_bps == second]
    assert switched and all(u.limit_bps == second for u in after[after.index(switched[0]) :])
    delay = (switched[0].sent_at - changed_at).total_seconds()
    assert delay <= INTERVAL + 0.1, f"new limit reported {delay:.2f}s after the change"
    final = updates[-1]
    assert final.status is Status.COMPLETED and final.limit_bps == second
    # from one progress interval after the change, until the last requests drain (their
    # bytes, in flight so far, would all be counted at once)
    measured = rate([u for u in switched[1:] if u.bytes_done <= size - 2 * MiB])
    assert abs(measured - second) <= 0.1 * second, f"{measured / MiB:.2f} MiB/s"
    print(
        f"\nrate at 1 MiB/s: {measured_first / MiB:.3f} MiB/s; "
        f"limit changed after {delay:.3f}s; rate at 2 MiB/s: {measured / MiB:.3f} MiB/s"
    )


def test_no_limit_means_no_bucket(tmp_path: Path, raw_export) -> None:
    from migratekit.cli._common import bandwidth
    from migratekit.copy import CopyOptions
    from migratekit.progress import ProgressHub

    options, hub = CopyOptions(), ProgressHub()
    bandwidth({"bandwidth_file": None, "bandwidth_limit": None}, options, hub)
    assert options.throttle is None and hub.limit is None and hub.on_tick == []
