"""vCenter credentials: address parsing, remembered credentials (0600), configured ones win."""

from __future__ import annotations

import json
import stat

import pytest

from vma.errors import VcenterNotConfiguredError
from vma.services.vcenter import VcenterCredentials, VcenterProvider, split_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vc.example", ("vc.example", 443)),
        ("vc:8443", ("vc", 8443)),
        ("[::1]:9443", ("::1", 9443)),
        ("[fe80::1]", ("fe80::1", 443)),
        ("::1", ("::1", 443)),
    ],
)
def test_split_address(text, expected):
    assert split_address(text) == expected


@pytest.mark.parametrize("text", ["vc:0", "vc:99999", "vc:abc", ":443", ""])
def test_split_address_rejects(text):
    with pytest.raises(ValueError):
        split_address(text)


def test_remember_and_reload(tmp_path):
    provider = VcenterProvider(tmp_path)
    with pytest.raises(VcenterNotConfiguredError, match="POST /api/v1/discover"):
        provider.credentials()
    creds = VcenterCredentials.from_address("vc:8443", "u", "pw-secret-1", insecure=True)
    provider.remember(creds)
    path = tmp_path / "vcenter.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert VcenterProvider(tmp_path).credentials() == creds
    assert "pw-secret-1" not in repr(creds)
    # the password is stored encrypted, with a key of its own (0600)
    assert b"pw-secret-1" not in path.read_bytes()
    stored = json.loads(path.read_text())
    assert "password" not in stored and stored["password_encrypted"]
    assert stat.S_IMODE((tmp_path / "vcenter.key").stat().st_mode) == 0o600


def test_a_plain_password_from_an_older_vma_is_encrypted_when_read(tmp_path):
    path = tmp_path / "vcenter.json"
    old = {"host": "vc", "port": 443, "username": "u", "password": "pw-plain-9"}
    path.write_text(json.dumps({**old, "insecure": False, "datacenter": None}))
    creds = VcenterProvider(tmp_path).credentials()
    assert creds.password == "pw-plain-9"
    assert b"pw-plain-9" not in path.read_bytes()
    assert VcenterProvider(tmp_path).credentials() == creds


def test_a_lost_key_asks_for_discovery_again(tmp_path):
    VcenterProvider(tmp_path).remember(VcenterCredentials("vc", 443, "u", "pw-secret-2"))
    (tmp_path / "vcenter.key").unlink()
    with pytest.raises(VcenterNotConfiguredError, match="cannot be decrypted"):
        VcenterProvider(tmp_path).credentials()


def test_configured_vcenter_is_never_overwritten(tmp_path):
    configured = VcenterCredentials("vc", 443, "admin", "pw-configured")
    provider = VcenterProvider(tmp_path, configured)
    provider.remember(VcenterCredentials("other", 443, "x", "pw-other-1"))
    assert provider.credentials() == configured
    assert not (tmp_path / "vcenter.json").exists()
