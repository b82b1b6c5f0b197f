"""TLS settings of both APIs: plaintext on a non-loopback bind is refused unless allowed
(then a warning), and ``oma serve``'s certificate issued from the OMA CA."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from migration_common import ConfigError


def _oma(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    from oma.config import load_config

    return load_config(environ={"OMA_DATA_DIR": str(tmp_path), **env})


@pytest.mark.parametrize("bind", ["0.0.0.0:8082", "[::]:8082", "10.1.2.3:8082", "oma:8082"])
def test_oma_plaintext_off_loopback_is_refused_naming_the_way_out(tmp_path, bind) -> None:
    with pytest.raises(ConfigError, match="OMA_ALLOW_PLAINTEXT") as caught:
        _oma(tmp_path, OMA_BIND=bind).check_bind()
    assert caught.value.variable == "OMA_BIND"
    warning = _oma(tmp_path, OMA_BIND=bind, OMA_ALLOW_PLAINTEXT="true").check_bind()
    assert warning and "without TLS" in warning


@pytest.mark.parametrize("bind", ["127.0.0.1:8082", "127.0.0.2:8082", "[::1]:8082"])
def test_oma_loopback_or_tls_binds_need_nothing(tmp_path, bind) -> None:
    assert _oma(tmp_path, OMA_BIND=bind).check_bind() is None
    tls = _oma(tmp_path, OMA_BIND="0.0.0.0:8082", OMA_TLS="true")
    assert tls.check_bind() is None and tls.bind_url == "https://127.0.0.1:8082"


def test_oma_cert_and_key_go_together(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        _oma(tmp_path, OMA_TLS_CERT=str(tmp_path / "c.pem"))
    assert caught.value.variable == "OMA_TLS_KEY"
    cfg = _oma(tmp_path, OMA_TLS_CERT="/x/c.pem", OMA_TLS_KEY="/x/k.pem")
    assert cfg.tls and cfg.tls_cert == Path("/x/c.pem")


def test_oma_serve_issues_its_certificate_and_reissues_when_names_change(tmp_path) -> None:
    from oma import pki
    from oma.cli.serve import api_certificate, tls_options

    cfg = _oma(tmp_path, OMA_BIND="0.0.0.0:8443", OMA_TLS="true", OMA_TLS_HOSTNAMES="oma.lab")
    cert, key = api_certificate(cfg)
    assert tls_options(cfg) == {"certfile": str(cert), "keyfile": str(key)}
    assert (cert.stat().st_mode & 0o777, key.stat().st_mode & 0o777) == (0o600, 0o600)
    ca = pki.load_ca(tmp_path)
    assert ca.verifies(cert.read_bytes())
    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "oma.lab" in san.value.get_values_for_type(x509.DNSName)
    first = cert.read_bytes()
    assert api_certificate(cfg)[0].read_bytes() == first  # reused while the names hold
    other = _oma(tmp_path, OMA_BIND="0.0.0.0:8443", OMA_TLS="true", OMA_TLS_HOSTNAMES="b.lab")
    assert api_certificate(other)[0].read_bytes() != first
    assert tls_options(_oma(tmp_path)) == {}


def test_vma_plaintext_off_loopback_is_refused_and_enrollment_turns_tls_on(tmp_path) -> None:
    from vma_api_server.config import check_bind, load_config

    base = {"DATA_DIR": str(tmp_path), "API_TOKEN": "t" * 20}
    with pytest.raises(ConfigError, match="VMA_ALLOW_PLAINTEXT"):
        check_bind(load_config({**base, "BIND": "0.0.0.0:8081"}))
    allowed = load_config({**base, "BIND": "0.0.0.0:8081", "ALLOW_PLAINTEXT": "true"})
    assert "without TLS" in (check_bind(allowed) or "")
    assert check_bind(load_config({**base, "BIND": "127.0.0.1:8081"})) is None

    # an enrolled VMA (server certificate and key in <data dir>/pki) serves HTTPS by default
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    for name in ("server.crt", "client.key", "client.crt", "oma-ca.crt"):
        (pki_dir / name).write_text("x")
    enrolled = load_config({**base, "BIND": "0.0.0.0:8081"})
    assert enrolled["TLS_CERT"] == pki_dir / "server.crt"
    assert check_bind(enrolled) is None
    assert enrolled["PROGRESS_URL"] == "https://127.0.0.1:8081"


def test_vma_enroll_reads_the_servers_settings_and_wants_https(tmp_path, monkeypatch, capsys):
    from vma_api_server.enroll import main

    toml = tmp_path / "vma.toml"
    toml.write_text(f'data_dir = "{tmp_path / "vma"}"\nthreads = 4\n')
    monkeypatch.setenv("VMA_CONFIG", str(toml))
    monkeypatch.delenv("VMA_API_TOKEN", raising=False)
    code = tmp_path / "code"
    code.write_text("c" * 43)
    argv = ["--oma", "http://oma:8082", "--code-file", str(code), "--ca-fingerprint", "ab" * 32]
    assert main(argv) == 1
    assert "https://" in capsys.readouterr().err
    assert main([*argv[:-1], "not-hex"]) == 1
    assert "64 hex digits" in capsys.readouterr().err
    code.write_text("\n")
    assert main(argv) == 1
    assert "is empty" in capsys.readouterr().err
