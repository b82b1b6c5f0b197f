"""Unit tests of the demo's parts (the whole demo runs in tests/e2e/test_demo.py)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from demo import preflight, progress, rehearsal, summary
from demo.api import DemoError, OmaApi, error_text
from demo.flow import (
    Outcome,
    SyncResult,
    downtime_seconds,
    final_sync_job_id,
    seconds_between,
)
from demo.rehearsal import TestRun
from demo.verify import file_sha256, zero_tail

MiB = 1 << 20


def test_file_sha256_compares_over_the_source_size(tmp_path: Path) -> None:
    data = b"\x01" * MiB + b"\x00" * MiB
    longer = tmp_path / "volume.img"  # a replica volume larger than the disk
    longer.write_bytes(data + b"\xff" * 4096)
    shorter = tmp_path / "sparse.img"  # a backing file not yet grown to the disk's size
    shorter.write_bytes(b"\x01" * MiB)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(longer, len(data)) == expected
    assert file_sha256(shorter, len(data)) == expected


def test_zero_tail_reads_only_stored_bytes_after_the_source(tmp_path: Path) -> None:
    volume = tmp_path / "volume.img"  # a 64 MiB sparse volume holding a 1 MiB disk
    with open(volume, "wb") as fh:
        fh.write(b"\x01" * MiB)
        fh.truncate(64 * MiB)
    assert zero_tail(volume, MiB) == (63 * MiB, True)
    with open(volume, "r+b") as fh:
        fh.seek(40 * MiB)
        fh.write(b"\x00" * 4096 + b"\x07")  # stored zeroes, then one stray byte
    assert zero_tail(volume, MiB) == (63 * MiB, False)
    assert zero_tail(volume, 64 * MiB) == (0, True)


def test_plain_line_and_rate_sum_the_disks_when_the_job_has_none() -> None:
    p = {
        "job_id": "0123456789abcdef",
        "job_status": "replicating",
        "phase": "copy",
        "percent": 42.04,
        "bytes_done": 3 * MiB,
        "bytes_total": 8 * MiB,
        "throughput_bps": 0,
        "disks": [{"throughput_bps": MiB}, {"throughput_bps": 2 * MiB}],
    }
    assert progress.rate(p) == 3 * MiB
    assert progress.plain_line(p) == (
        "job=01234567 status=replicating phase=copy percent=42.0 done=3.0MiB "
        "total=8.0MiB rate=3.0MiB/s"
    )


def test_failover_record_fields_and_summary_rows() -> None:
    rec = {
        "status": "completed",
        "final_sync_job_id": "job-3",
        "result": {"downtime_seconds": 2.5, "final_sync_job_id": "job-3"},
    }
    assert final_sync_job_id(rec) == "job-3" and downtime_seconds(rec) == 2.5
    assert final_sync_job_id({"steps": [{"data": {"job_id": "j"}}]}) == "j"
    assert downtime_seconds({"status": "failed"}) is None
    assert seconds_between("2026-01-01T00:00:00Z", "2026-01-01T00:00:04.5Z") == 4.5
    assert seconds_between(None, "2026-01-01T00:00:00Z") == 0.0
    job = {
        "sync_type": "full",
        "bytes_done": 64 * MiB,
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:02Z",
    }
    out = Outcome(syncs=[SyncResult("full", job)])
    assert summary.rows(out) == [("full", "full", "64.0 MiB", "2.0 s", "32.0 MiB/s")]


def test_the_test_failover_has_a_summary_row_only_when_checked_clean() -> None:
    test = TestRun("t-1", vm_name="web-test", start_seconds=3.25, end_seconds=1.0, during_job="j")
    out = Outcome(test=test)
    assert summary.rows(out) == []  # not checked clean: no row, the line says so
    assert "CloudStack afterwards NOT as before" in summary._test_lines(out)[0]
    test.clean = True
    assert summary.rows(out) == [("test failover", "VM web-test", "-", "4.2 s", "-")]
    assert summary._test_lines(out) == [
        "test failover during job j: VM web-test running after 3.2 s, ended in 1.0 s; "
        "CloudStack afterwards as before the test (VMs, volumes, snapshots)"
    ]
    assert rehearsal.ended({"status": "ending", "end": {"status": "failed"}})
    assert not rehearsal.ended({"status": "ending", "end": {"status": "running"}})
    assert rehearsal.started({"status": "failed"}) and not rehearsal.started({"status": "running"})


def test_preflight_names_the_apt_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    problems = preflight.missing()
    assert any("apt-get install -y golang-go qemu-utils" in p for p in problems), problems


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = json.dumps(
            {"error": {"code": "invalid", "message": "is required", "field": "vm_context_id"}}
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_api_errors_become_one_line_with_the_field() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = OmaApi(f"http://127.0.0.1:{server.server_address[1]}", "token")
        with pytest.raises(DemoError) as err:
            api.post("replications", {})
    finally:
        server.shutdown()
        server.server_close()
    assert str(err.value) == (
        "POST /api/v1/replications → 400: invalid: is required (field vm_context_id)"
    )
    assert error_text("plain text") == "plain text"


def test_unreachable_api_is_a_demo_error() -> None:
    from labtest.procs import free_port

    with pytest.raises(DemoError, match="OMA API unreachable"):
        OmaApi(f"http://127.0.0.1:{free_port()}", "t", timeout=2).get("health")


def test_add_vm_sizes() -> None:
    from demo.addvm import parse_sizes

    assert parse_sizes("64M,32M") == [64 * MiB, 32 * MiB]
    assert parse_sizes("1G, 512MiB") == [1 << 30, 512 * MiB]
    for bad in ("64X", "", "512K"):
        with pytest.raises(DemoError):
            parse_sizes(bad)


@pytest.mark.slow
def test_add_vm_creates_a_lab_vm_in_the_kept_vcsim(tmp_path: Path, capsys) -> None:
    """What ``--keep`` leaves (vcenter.json, 0600) is what ``add-vm`` needs: the new VM is in
    vcsim, powered on, with one NIC and a qcow2 image per disk where the VMA reads them."""
    from demo.addvm import record_vcenter
    from demo.cli import main

    from labtest.vcsim import vcsim
    from vma.vmware import VSphereClient

    with vcsim(tmp_path / "vc") as vc:
        missing = main(["add-vm", "web-2", "--workdir", str(tmp_path)])
        assert missing == 1 and "no kept lab" in capsys.readouterr().err
        path = record_vcenter(tmp_path, vc)
        assert path.stat().st_mode & 0o777 == 0o600
        assert main(["add-vm", "web-2", "--workdir", str(tmp_path), "--disks", "4M,2M"]) == 0
        out = capsys.readouterr().out
        assert "Add it to the OMA: oma discover --add web-2" in out
        with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as c:
            vm = next(v for v in c.discover() if v["name"] == "web-2")
        assert [d["capacity_bytes"] for d in vm["disks"]] == [4 * MiB, 2 * MiB]
        assert vm["power_state"] == "poweredOn" and len(vm["nics"]) == 1
        images = sorted((tmp_path / "images" / vm["id"]).glob("*.qcow2"))
        assert [p.stem for p in images] == sorted(str(d["key"]) for d in vm["disks"])
    assert main(["add-vm", "--workdir", str(tmp_path)]) == 2
