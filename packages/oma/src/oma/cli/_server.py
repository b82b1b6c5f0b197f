"""Helpers of the server-side commands: load config, bind the database, apply migrations."""

from __future__ import annotations

from typing import Any


def load(**overrides: Any) -> Any:
    """The validated OmaConfig (ConfigError is reported by the CLI wrapper)."""
    from ..config import load_config

    return load_config({k: v for k, v in overrides.items() if v is not None})


def bind_database(
    config: Any, *, upgrade: bool | None = None, require_current: bool = True
) -> list[str]:
    """Bind the database; apply pending migrations when ``upgrade`` (default: auto_upgrade).

    Without upgrading, a schema with pending migrations is an error naming the fix (unless
    ``require_current`` is false, as for ``oma db status``).
    """
    from ..database import init_db, pending
    from ..database import upgrade as run_upgrade
    from ._errors import CliError, ExitCode

    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    init_db(config.database_url)
    if config.auto_upgrade if upgrade is None else upgrade:
        return run_upgrade()
    if require_current:
        todo = pending()
        if todo:
            raise CliError(
                f"the database schema is not current (pending: {', '.join(todo)})",
                hint="run `oma db upgrade` (or set OMA_AUTO_UPGRADE=true)",
                code=ExitCode.DATABASE,
            )
    return []
