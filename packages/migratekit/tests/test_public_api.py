"""The public surface of migratekit is exactly ``__all__``, sorted, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import migratekit


def test_all_is_sorted_and_matches_the_lazy_table() -> None:
    assert migratekit.__all__ == sorted(migratekit.__all__)
    assert set(migratekit.__all__) == set(migratekit._WHERE)


def test_every_name_resolves_to_our_code() -> None:
    for name in migratekit.__all__:
        obj = getattr(migratekit, name)
        assert obj.__module__.startswith("migratekit."), name


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        migratekit.nope  # noqa: B018


def test_errors_share_one_base() -> None:
    from migratekit import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        ours = isinstance(obj, type) and obj.__module__ == errors.__name__
        if ours and issubclass(obj, Exception):
            assert issubclass(obj, migratekit.MigrateKitError), name


def test_cli_and_copy_modules_do_not_import_pydantic_or_requests() -> None:
    code = (
        "import sys, migratekit.cli, migratekit.copy, migratekit._plan, migratekit._job; "
        "print(sorted(m for m in ('pydantic', 'requests') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
