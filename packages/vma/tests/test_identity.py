"""The VMA's stored TLS identity: complete or absent, private files, replaced whole."""

from __future__ import annotations

import stat

from vma.services import identity


def test_absent_until_all_three_files_exist(tmp_path):
    assert identity.load(tmp_path) is None
    found = identity.save(tmp_path, b"CERT", b"KEY", b"CA")
    assert identity.load(tmp_path) == found
    assert found.key.read_bytes() == b"KEY" and found.ca.read_bytes() == b"CA"
    assert stat.S_IMODE(found.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(found.key.parent.stat().st_mode) == 0o700
    found.ca.unlink()
    assert identity.load(tmp_path) is None


def test_save_replaces_an_old_identity(tmp_path):
    identity.save(tmp_path, b"old", b"old", b"old")
    found = identity.save(tmp_path, b"new-cert", b"new-key", b"new-ca")
    assert found.cert.read_bytes() == b"new-cert"
    assert not list(found.cert.parent.glob("*.tmp"))
