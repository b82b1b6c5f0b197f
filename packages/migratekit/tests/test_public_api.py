"""The public surface of migratekit is exactly ``__all__``, sorted."""

from __future__ import annotations

import migratekit


def test_all_is_sorted_and_complete() -> None:
    assert migratekit.__all__ == sorted(migratekit.__all__)
    public = {n for n in dir(migratekit) if not n.startswith("_")}
    modules = {"annotations", "cli", "config", "copy", "errors", "nbd", "progress"}
    assert public - modules == set(migratekit.__all__)


def test_every_name_resolves() -> None:
    for name in migratekit.__all__:
        assert getattr(migratekit, name) is not None


def test_errors_share_one_base() -> None:
    from migratekit import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj.__module__ == errors.__name__
        ):
            assert issubclass(obj, migratekit.MigrateKitError), name
