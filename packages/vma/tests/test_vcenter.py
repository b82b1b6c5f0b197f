"""vCenter credentials: address parsing, remembered credentials (0600), configured ones win."""

from __future__ import annotations

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


def test_configured_vcenter_is_never_overwritten(tmp_path):
    configured = VcenterCredentials("vc", 443, "admin", "pw-configured")
    provider = VcenterProvider(tmp_path, configured)
    provider.remember(VcenterCredentials("other", 443, "x", "pw-other-1"))
    assert provider.credentials() == configured
    assert not (tmp_path / "vcenter.json").exists()
