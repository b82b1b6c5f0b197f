"""Helpers of the server-side commands: load config, bind the database, apply migrations."""

from __future__ import annotations

from typing import Any


def load(**overrides: Any) -> Any:
    """The validated OmaConfig (ConfigError is reported by the CLI wrapper)."""
    from ..config import load_config

    return load_config({k: v for k, v in overrides.items() if v is not None})


def bind_database(config: Any, *, upgrade: bool | None = None) -> list[str]:
    """Bind the database; apply pending migrations when ``upgrade`` (default: auto_upgrade)."""
    from ..database import init_db
    from ..database import upgrade as run_upgrade

    config.data_dir.mkdir(parents=True, exist_ok=True)
    init_db(config.database_url)
    if config.auto_upgrade if upgrade is None else upgrade:
        return run_upgrade()
    return []
