"""TLS on both APIs with real servers: ``oma serve`` and ``vma-api-server`` under gunicorn
serve HTTPS, a VMA enrolls with a one-time code (``vma-api-server enroll``), the OMA and the
``oma`` commands verify certificates against the right CA and fail clearly against a wrong
one, and a non-loopback bind without TLS is refused before anything listens."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from labtest.oma import enroll_vma, oma_services
from labtest.procs import free_port
from labtest.vma import vma_server

pytestmark = pytest.mark.slow


def _enroll_command(*args: str, data_dir: Path, stdin: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMA_")}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from vma_api_server.cli import main; sys.exit(main())",
            "enroll",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _other_ca(tmp_path: Path) -> Path:
    from oma.pki import load_ca

    return load_ca(tmp_path / "elsewhere").cert_path


def test_an_enrolled_vma_serves_https_and_the_oma_verifies_it(tmp_path: Path) -> None:
    from oma.errors import VmaUnreachable
    from oma.vma_client import VmaClient

    with vma_server(tmp_path / "vma") as vma, oma_services(tmp_path / "oma") as oma:
        assert oma.url.startswith("https://")
        first_token = vma.token
        vma_id = enroll_vma(oma, vma, "vma-1")

        assert vma.url.startswith("https://")
        assert vma.request("GET", "jobs")[0] == 200  # the enrolled token
        assert vma.request("GET", "jobs", token=first_token)[0] == 401  # the old one is gone
        with pytest.raises(OSError):  # no plain HTTP any more (the server drops it)
            urllib.request.urlopen(f"http://127.0.0.1:{vma.port}/api/v1/health", timeout=5)
        pki = vma.data_dir / "pki"
        assert stat.S_IMODE(pki.stat().st_mode) == 0o700
        for name in ("client.crt", "client.key", "oma-ca.crt", "server.crt", "api-token.sha256"):
            assert stat.S_IMODE((pki / name).stat().st_mode) == 0o600, name
        assert vma.token not in (pki / "api-token.sha256").read_text()

        status, tested = oma.api("POST", f"vma-appliances/{vma_id}/test")
        assert status == 200 and tested["ok"] is True, tested
        status, row = oma.api("GET", f"vma-appliances/{vma_id}")
        # the subject of the certificate the VMA holds (its own OU: one certificate, not a name)
        from oma.pki import subject

        assert row["cert_subject"] == subject((pki / "client.crt").read_bytes())
        assert row["cert_subject"].startswith("CN=vma:vma-1,OU=id-")

        # the same VMA against a CA that did not sign it: a clear error, not a silent pass
        with (
            VmaClient(vma.url, vma.token, verify=str(_other_ca(tmp_path)), retries=0) as c,
            pytest.raises(VmaUnreachable, match="TLS certificate verification failed"),
        ):
            c.health()

        status, _ = oma.api("POST", f"vma-appliances/{vma_id}/revoke")
        assert status == 200
        status, tested = oma.api("POST", f"vma-appliances/{vma_id}/test")
        assert tested["ok"] is False and "revoked" in tested["error"]


def _oma_cli(oma: Any, *args: str) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    return subprocess.run(
        [sys.executable, "-m", "oma", *args],
        env={**base, **oma.client_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_enroll_command(tmp_path: Path) -> None:
    import json

    with oma_services(tmp_path / "oma") as oma:
        shown = _oma_cli(oma, "vma", "enroll", "vma-x", "--url", "https://127.0.0.1:9")
        assert shown.returncode == 0, shown.stderr
        assert "vma-api-server enroll --oma" in shown.stdout and "--code-file" in shown.stdout
        res = _oma_cli(oma, "vma", "enroll", "vma-x", "--url", "https://127.0.0.1:9", "--json")
        created = json.loads(res.stdout)
        code_file = tmp_path / "code"
        code_file.write_text(created["code"] + "\n")
        data_dir = tmp_path / "vma-data"

        wrong = _enroll_command(
            "--oma", oma.url, "--code-file", str(code_file), "--ca-fingerprint", "ab" * 32,
            data_dir=data_dir,
        )  # fmt: skip
        assert wrong.returncode == 1
        assert "does not have the fingerprint given with --ca-fingerprint" in wrong.stderr
        assert not (data_dir / "pki").exists()

        plain = _enroll_command(
            "--oma", oma.url.replace("https", "http"), "--code-file", "-",
            "--ca-fingerprint", created["ca_fingerprint"], data_dir=data_dir,
            stdin=created["code"],
        )  # fmt: skip
        assert plain.returncode == 1 and "https://" in plain.stderr

        done = _enroll_command(
            "--oma", oma.url, "--code-file", "-",
            "--ca-fingerprint", created["ca_fingerprint"].upper(), data_dir=data_dir,
            stdin=created["code"],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "enrolled as VMA vma-x" in done.stdout
        assert created["code"] not in done.stdout + done.stderr
        assert (data_dir / "pki" / "server.crt").is_file()

        again = _enroll_command(
            "--oma", oma.url, "--code-file", str(code_file),
            "--ca-fingerprint", created["ca_fingerprint"], data_dir=tmp_path / "other",
        )  # fmt: skip
        assert again.returncode == 1 and "already used" in again.stderr

        revoked = _oma_cli(oma, "vma", "revoke", "vma-x")
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        assert oma.api("GET", "vma-appliances")[1]["items"][0]["revoked_at"]


def test_the_oma_commands_verify_the_api_certificate(tmp_path: Path) -> None:
    with oma_services(tmp_path / "oma") as oma:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}

        def run(**env: str) -> Any:
            return subprocess.run(
                [sys.executable, "-m", "oma", "vms"],
                env={**base, **oma.client_env, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )

        assert run().returncode == 0
        wrong = run(OMA_CA_FILE=str(_other_ca(tmp_path)))
        assert wrong.returncode != 0
        assert "certificate" in wrong.stderr and "did not verify" in wrong.stderr
        assert "OMA_CA_FILE" in wrong.stderr
        system_only = {**oma.client_env}
        system_only.pop("OMA_CA_FILE")
        res = subprocess.run(
            [sys.executable, "-m", "oma", "vms"],
            env={**base, **system_only},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode != 0 and "did not verify" in res.stderr
        # and the API really is HTTPS with a certificate from the OMA CA
        context = ssl.create_default_context(cafile=str(oma.ca_file))
        with urllib.request.urlopen(f"{oma.url}/api/v1/health", context=context) as answer:
            assert answer.status in (200, 503)


def test_a_non_loopback_bind_without_tls_is_refused(tmp_path: Path) -> None:
    port = free_port()
    oma_env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    oma_env.update({"OMA_DATA_DIR": str(tmp_path / "oma"), "OMA_BIND": f"0.0.0.0:{port}"})
    res = subprocess.run(
        [sys.executable, "-m", "oma", "serve"],
        env=oma_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 3
    assert "OMA_BIND" in res.stderr and "OMA_ALLOW_PLAINTEXT" in res.stderr
    assert not (tmp_path / "oma" / "oma.db").exists()  # refused before migrating or binding

    vma_env = {k: v for k, v in os.environ.items() if not k.startswith("VMA_")}
    vma_env.update(
        {
            "VMA_DATA_DIR": str(tmp_path / "vma"),
            "VMA_BIND": f"0.0.0.0:{port}",
            "VMA_API_TOKEN": "t" * 24,
        }
    )
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from vma_api_server.cli import main; sys.exit(main())"],
        env=vma_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "VMA_BIND" in res.stderr and "VMA_ALLOW_PLAINTEXT" in res.stderr
