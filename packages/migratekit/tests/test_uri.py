"""NBD URI parsing."""

from __future__ import annotations

import pytest

from migratekit import UsageError, parse_uri


def test_tcp_uri_with_and_without_port() -> None:
    u = parse_uri("nbd://127.0.0.1:10100/vol-abc")
    assert (u.host, u.port, u.export, u.socket_path) == ("127.0.0.1", 10100, "vol-abc", None)
    assert parse_uri("nbd://host/disk").port == 10809
    assert str(u) == "nbd://127.0.0.1:10100/vol-abc"


def test_unix_uri() -> None:
    u = parse_uri("nbd+unix:///disk?socket=/run/nbd.sock")
    assert (u.export, u.socket_path, u.host) == ("disk", "/run/nbd.sock", None)
    assert str(u) == "nbd+unix:///disk?socket=/run/nbd.sock"


def test_empty_export_and_escapes() -> None:
    assert parse_uri("nbd://h:1/").export == ""
    assert parse_uri("nbd://h:1/a%20b").export == "a b"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://h/x",
        "nbd:///x",
        "nbd://h:99999/x",
        "nbd://h:abc/x",
        "nbd+unix:///x",
        "nbd+unix://host/x?socket=/s",
        "nbd://h/x?socket=/s",
        "/dev/sda",
    ],
)
def test_malformed_uris_name_the_field(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_uri(text, "disks[0].source")
    assert info.value.field == "disks[0].source"
