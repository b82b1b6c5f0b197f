"""Secret encryption: Fernet with OMA_SECRET_KEY or a generated 0600 key file."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from migration_common import ConfigError
from oma.config import load_config
from oma.errors import SecretsError
from oma.secrets import SecretBox, load_key, secret_box


def test_round_trip_and_wrong_key() -> None:
    box = SecretBox(Fernet.generate_key().decode())
    token = box.encrypt("s3cret-value")
    assert "s3cret-value" not in token
    assert box.decrypt(token) == "s3cret-value"
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(SecretsError) as err:
        other.decrypt(token)
    assert "OMA_SECRET_KEY" in str(err.value)


def test_invalid_key_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        SecretBox("not-a-fernet-key")
    assert err.value.variable == "OMA_SECRET_KEY"


def test_generated_key_file_is_0600_reused_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        key = load_key(None, tmp_path)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key
    assert any("OMA_SECRET_KEY is not set" in r.getMessage() for r in caplog.records)
    assert key not in caplog.text
    assert load_key(None, tmp_path) == key
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_secret_box_prefers_configured_key(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    cfg = load_config(environ={"OMA_DATA_DIR": str(tmp_path), "OMA_SECRET_KEY": key})
    box = secret_box(cfg)
    assert SecretBox(key).decrypt(box.encrypt("x1y2")) == "x1y2"
    assert not (tmp_path / "secret.key").exists()
