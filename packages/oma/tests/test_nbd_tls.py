"""Replica exports over TLS: only the job's VMA (its certificate, checked by qemu's authz) gets in.

Real qemu-nbd exports started by the ExportManager with the OMA CA's server certificate; the
clients are migratekit's NBD client (STARTTLS with the CA pinned) and libnbd's nbdinfo.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labtest.nbd import qemu_nbd
from labtest.procs import free_port
from migratekit.errors import NbdConnectionError, NbdHandshakeError
from migratekit.nbd import NbdClient, TlsSettings, parse_uri
from oma.errors import NbdExportError
from oma.nbd import ExportManager
from oma.nbd.tls import gnutls_dn, server_credentials
from oma.pki import load_ca, vma_common_name, write_private

MIB = 1 << 20
VOLUME = "0a1b2c3d-0000-4000-8000-00000000beef"


def _client_files(oma_dir: Path, directory: Path, name: str) -> tuple[TlsSettings, str]:
    """A VMA's client certificate from the OMA CA, in libnbd's tls-certificates layout."""
    ca = load_ca(oma_dir)
    issued = ca.issue_client(vma_common_name(name))
    directory.mkdir(parents=True)
    write_private(directory / "client-key.pem", issued.key_pem)
    (directory / "client-cert.pem").write_bytes(issued.cert_pem)
    (directory / "ca-cert.pem").write_bytes(ca.cert_pem)
    settings = TlsSettings(
        ca=str(directory / "ca-cert.pem"),
        cert=str(directory / "client-cert.pem"),
        key=str(directory / "client-key.pem"),
    )
    return settings, issued.subject


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict]:
    oma_dir = tmp_path / "oma"
    creds = server_credentials(oma_dir, ["127.0.0.1"])
    mine, subject = _client_files(oma_dir, tmp_path / "vma-a", "site-a")
    other, other_subject = _client_files(oma_dir, tmp_path / "vma-b", "site-b")
    base = min(free_port(), 65000)
    manager = ExportManager(
        state_dir=tmp_path / "exports", port_range=(base, base + 8), tls_dir=creds
    )
    device = tmp_path / "vdb"
    with open(device, "wb") as fh:
        fh.truncate(8 * MIB)
    info = manager.start(VOLUME, str(device), client=subject)
    try:
        yield {
            "info": info,
            "mine": mine,
            "other": other,
            "device": device,
            "manager": manager,
            "subject": subject,
            "other_subject": other_subject,
            "tmp": tmp_path,
            "creds": creds,
        }
    finally:
        for running in manager.list_running():
            manager.stop(running.pid, running.volume_id)


def test_server_credentials_private_and_reused(tmp_path: Path) -> None:
    creds = server_credentials(tmp_path / "oma", ["127.0.0.1"])
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(creds / "server-key.pem").st_mode) == 0o600
    cert = (creds / "server-cert.pem").read_bytes()
    assert server_credentials(tmp_path / "oma", ["127.0.0.1"]) == creds
    assert (creds / "server-cert.pem").read_bytes() == cert  # reused
    server_credentials(tmp_path / "oma", ["127.0.0.2"])  # another advertised host: reissued
    assert (creds / "server-cert.pem").read_bytes() != cert


def test_the_jobs_vma_reads_and_writes(lab: dict) -> None:
    info = lab["info"]
    assert info.uri.startswith("nbds://127.0.0.1:")
    data = os.urandom(MIB)
    with NbdClient(parse_uri(info.uri), tls=lab["mine"]) as client:
        assert client.tls
        client.pwrite(MIB, data)
        client.flush()
        assert client.pread(MIB, MIB) == data
    with open(lab["device"], "rb") as fh:
        fh.seek(MIB)
        assert fh.read(MIB) == data


def test_another_vma_of_the_same_ca_is_refused(lab: dict) -> None:
    with pytest.raises(NbdHandshakeError, match="the server refused this client"):
        NbdClient(parse_uri(lab["info"].uri), tls=lab["other"], timeout=10)
    # the export still serves its own VMA
    with NbdClient(parse_uri(lab["info"].uri), tls=lab["mine"]) as client:
        assert client.pread(0, 512) == bytes(512)


def test_a_client_without_certificate_is_refused(lab: dict) -> None:
    anonymous = TlsSettings(ca=lab["mine"].ca)
    with pytest.raises((NbdConnectionError, NbdHandshakeError)):
        NbdClient(parse_uri(lab["info"].uri), tls=anonymous, timeout=10)


def test_a_plaintext_client_is_refused(lab: dict) -> None:
    plain = lab["info"].uri.replace("nbds://", "nbd://")
    with pytest.raises(NbdHandshakeError, match="the server requires TLS"):
        NbdClient(parse_uri(plain), timeout=10)


def test_nbdinfo_with_the_vmas_certificate(lab: dict) -> None:
    """libnbd (nbdcopy's library) gets in with the same files; without them it does not."""
    certs = Path(lab["mine"].ca).parent
    ok = subprocess.run(
        ["nbdinfo", "--size", f"{lab['info'].uri}?tls-certificates={certs}"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(8 * MIB)
    other = Path(lab["other"].ca).parent
    refused = subprocess.run(
        ["nbdinfo", "--size", f"{lab['info'].uri}?tls-certificates={other}"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0


def test_restart_for_another_client_and_reuse_for_the_same(lab: dict) -> None:
    manager, info = lab["manager"], lab["info"]
    assert manager.start(VOLUME, str(lab["device"]), client=lab["subject"]).pid == info.pid
    moved = manager.start(VOLUME, str(lab["device"]), client=lab["other_subject"])
    assert moved.pid != info.pid
    assert manager.admitted(moved.pid) == gnutls_dn(lab["other_subject"])
    with NbdClient(parse_uri(moved.uri), tls=lab["other"]) as client:
        assert client.pread(0, 4096) == bytes(4096)


def test_client_export_needs_tls_configured(tmp_path: Path) -> None:
    device = tmp_path / "vdb"
    device.write_bytes(bytes(MIB))
    manager = ExportManager(state_dir=tmp_path / "exports", port_range=(20000, 20001))
    with pytest.raises(NbdExportError, match="TLS is not configured"):
        manager.start(VOLUME, str(device), client="CN=vma:x,O=OSSEA-Migrate")


def test_nbds_uri_against_a_plaintext_only_server(lab: dict, tmp_path: Path) -> None:
    """migratekit fails with a clear error instead of sending data in plaintext…"""
    image = tmp_path / "plain.raw"
    image.write_bytes(bytes(MIB))
    with qemu_nbd(image, fmt="raw") as plain:
        uri = parse_uri(plain.uri.replace("nbd://", "nbds://"))
        with pytest.raises(NbdHandshakeError, match="does not offer TLS") as caught:
            NbdClient(uri, tls=lab["mine"], timeout=10)
        assert "MIGRATEKIT_TLS_ALLOW_PLAINTEXT" in str(caught.value)
        # …unless told otherwise
        allowed = TlsSettings(lab["mine"].ca, lab["mine"].cert, lab["mine"].key, True)
        with NbdClient(uri, tls=allowed, timeout=10) as client:
            assert not client.tls
            assert client.info.size == MIB


@pytest.fixture
def replica(lab: dict) -> Iterator[tuple]:
    """A replica of a VM whose VMA is enrolled (its certificate subject on the appliance)."""
    from labtest.oma import oma_database
    from oma.database.db import database
    from oma.database.models import ReplicaVolume, VmaAppliance, VmContext

    tmp = lab["tmp"]
    with oma_database(tmp / "oma.db"), database.connection_context():
        vma = VmaAppliance.create(
            name="site-a", url="http://vma", token_encrypted="x", cert_subject=lab["subject"]
        )
        ctx = VmContext.create(vcenter="vc", vm_id="vm-1", name="vm", vma=vma.id)
        device = tmp / "vdc"
        device.write_bytes(bytes(MIB))
        rv = ReplicaVolume.create(
            context=ctx.id,
            disk_key="2000",
            cloudstack_volume_id="0a1b2c3d-0000-4000-8000-00000000cafe",
            size_bytes=MIB,
            device_path=str(device),
            state="attached",
        )
        yield lab["manager"], vma, rv


def test_ensure_export_admits_the_vms_enrolled_vma(replica) -> None:
    from oma.workflows.replicas import ensure_export

    manager, _vma, rv = replica
    uri = ensure_export(manager, rv)
    assert uri.startswith("nbds://127.0.0.1:")
    assert ensure_export(manager, rv) == uri  # kept: same device, same client


def test_ensure_export_refuses_unenrolled_and_revoked_vmas(replica) -> None:
    from migration_common import utcnow
    from oma.errors import WorkflowError
    from oma.workflows.replicas import ensure_export

    manager, vma, rv = replica
    vma.cert_subject = None
    vma.save()
    with pytest.raises(WorkflowError, match=r"site-a has no enrolled certificate.*PLAINTEXT"):
        ensure_export(manager, rv)
    manager.allow_plaintext = True
    assert ensure_export(manager, rv).startswith("nbd://")  # allowed, with a warning
    vma.cert_subject, vma.revoked_at = "CN=vma:site-a,O=OSSEA-Migrate", utcnow()
    vma.save()
    with pytest.raises(WorkflowError, match="site-a is revoked"):
        ensure_export(manager, rv)


def test_a_dead_tls_export_is_restarted_for_the_same_vma(replica, lab: dict) -> None:
    """Reconciliation restarts it with TLS for the same client, on the same port: the URI
    the VMA holds (and a resumed copy compares) stays valid."""
    import signal

    from labtest.procs import wait_until
    from oma.database.models import NbdExport
    from oma.services.exports import reconcile_exports
    from oma.workflows.replicas import ensure_export

    manager, _vma, rv = replica
    uri = ensure_export(manager, rv)
    row = NbdExport.get(NbdExport.volume == rv.id)
    os.kill(row.pid, signal.SIGKILL)
    wait_until(lambda: not manager.is_running(row.pid, rv.cloudstack_volume_id), timeout=10)
    result = reconcile_exports(manager, manager.port_range)
    assert result.restarted == [rv.cloudstack_volume_id]
    row = NbdExport.get_by_id(row.id)
    assert manager.admitted(row.pid) == gnutls_dn(lab["subject"])
    assert ensure_export(manager, rv) == uri
    with NbdClient(parse_uri(uri), tls=lab["mine"]) as client:
        assert client.pread(0, 512) == bytes(512)


def test_reconciliation_closes_the_exports_of_a_revoked_vma(replica) -> None:
    from migration_common import utcnow
    from oma.database.models import NbdExport
    from oma.services.exports import reconcile_exports
    from oma.workflows.replicas import ensure_export

    manager, vma, rv = replica
    ensure_export(manager, rv)
    row = NbdExport.get(NbdExport.volume == rv.id)
    assert reconcile_exports(manager, manager.port_range).kept == [rv.cloudstack_volume_id]
    vma.revoked_at = utcnow()
    vma.save()
    result = reconcile_exports(manager, manager.port_range)
    assert result.refused == [rv.cloudstack_volume_id]
    assert not manager.is_running(row.pid, rv.cloudstack_volume_id)
    assert NbdExport.get_by_id(row.id).state == "stopped"
