"""``migratekit copy`` to an ``nbds://`` target: STARTTLS with the CA pinned, client certificate
from ``MIGRATEKIT_TLS_*`` (file paths), real qemu-nbd servers that require TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from labtest.nbd import qemu_nbd
from oma.nbd.tls import server_credentials
from oma.pki import load_ca, vma_common_name, write_private

from .conftest import MiB, copy_json, make_sparse_random, run_mk, sha256_file

SIZE = 8 * MiB


def _client(oma_dir: Path, out: Path, name: str = "site-a") -> tuple[dict[str, str], str]:
    ca = load_ca(oma_dir)
    issued = ca.issue_client(vma_common_name(name))
    out.mkdir(parents=True)
    write_private(out / "client.key", issued.key_pem)
    (out / "client.crt").write_bytes(issued.cert_pem)
    (out / "ca.crt").write_bytes(ca.cert_pem)
    env = {
        "MIGRATEKIT_TLS_CA": str(out / "ca.crt"),
        "MIGRATEKIT_TLS_CERT": str(out / "client.crt"),
        "MIGRATEKIT_TLS_KEY": str(out / "client.key"),
    }
    return env, issued.subject


@pytest.fixture
def tls_pair(tmp_path: Path, sockdir: Path):
    """A plaintext source on a unix socket (as the VMA's disk server) and a TLS target on TCP
    (as the OMA's export) admitting only site-a."""
    oma_dir = tmp_path / "oma"
    creds = server_credentials(oma_dir, ["127.0.0.1"])
    env, subject = _client(oma_dir, tmp_path / "vma")
    src = make_sparse_random(tmp_path / "src.raw", SIZE, seed=5)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\xee" * SIZE)
    with (
        qemu_nbd(src, fmt="raw", readonly=True, unix_dir=str(sockdir)) as source,
        qemu_nbd(dst, fmt="raw", tls_dir=creds, tls_client=subject) as target,
    ):
        yield {
            "src": src,
            "dst": dst,
            "source": source.uri,
            "target": target.uri,
            "env": env,
            "oma": oma_dir,
            "tmp": tmp_path,
        }


def test_copy_over_tls_is_byte_identical(tls_pair: dict) -> None:
    assert tls_pair["target"].startswith("nbds://127.0.0.1:")
    doc = copy_json("--verify", tls_pair["source"], tls_pair["target"], env=tls_pair["env"])
    assert doc["status"] == "completed" and doc["digest"]
    assert sha256_file(tls_pair["dst"], SIZE) == sha256_file(tls_pair["src"])


def test_nbds_without_tls_settings_is_a_clear_error(tls_pair: dict) -> None:
    res = run_mk("copy", "--progress", "off", tls_pair["source"], tls_pair["target"])
    assert res.returncode != 0
    assert "an nbds:// URI needs TLS settings (MIGRATEKIT_TLS_CA" in res.stderr


def test_another_vmas_certificate_is_refused(tls_pair: dict) -> None:
    env, _ = _client(tls_pair["oma"], tls_pair["tmp"] / "other", "site-b")
    res = run_mk("copy", "--progress", "off", tls_pair["source"], tls_pair["target"], env=env)
    assert res.returncode != 0
    assert "after the TLS handshake: the server refused this client" in res.stderr
    assert sha256_file(tls_pair["dst"], SIZE) == sha256_file_of(b"\xee" * SIZE)


def test_a_server_from_another_ca_is_not_trusted(tls_pair: dict, tmp_path: Path) -> None:
    env, _ = _client(tmp_path / "other-oma", tmp_path / "stranger")
    res = run_mk("copy", "--progress", "off", tls_pair["source"], tls_pair["target"], env=env)
    assert res.returncode != 0
    assert "TLS handshake failed: certificate verify failed" in res.stderr


def test_plaintext_only_server_is_refused_unless_allowed(tls_pair: dict, tmp_path: Path) -> None:
    plain_dst = tmp_path / "plain.raw"
    plain_dst.write_bytes(bytes(SIZE))
    with qemu_nbd(plain_dst, fmt="raw") as plain:
        uri = plain.uri.replace("nbd://", "nbds://")
        res = run_mk("copy", "--progress", "off", tls_pair["source"], uri, env=tls_pair["env"])
        assert res.returncode != 0
        assert f"the NBD server at {uri} does not offer TLS" in res.stderr
        assert sha256_file(plain_dst) == sha256_file_of(bytes(SIZE))  # nothing was sent
        allowed = {**tls_pair["env"], "MIGRATEKIT_TLS_ALLOW_PLAINTEXT": "true"}
        copy_json(tls_pair["source"], uri, env=allowed)
    assert sha256_file(plain_dst) == sha256_file(tls_pair["src"])


def test_certificate_without_key_names_the_missing_setting(tls_pair: dict) -> None:
    env = dict(tls_pair["env"])
    del env["MIGRATEKIT_TLS_KEY"]
    res = run_mk("copy", "--progress", "off", tls_pair["source"], tls_pair["target"], env=env)
    assert res.returncode != 0
    assert "MIGRATEKIT_TLS_KEY" in res.stderr


def sha256_file_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
