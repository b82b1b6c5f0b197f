"""The OMA HTTP API: a Flask app factory and one blueprint per resource.

gunicorn runs ``'oma.api:create_app()'``. The factory loads :func:`oma.config.load_config`
(the environment plus the given mapping), binds the database, applies pending migrations
when ``OMA_AUTO_UPGRADE`` is true, then registers the hooks, blueprints and JSON error
handlers. The API never does long work inside a request: a POST that starts work writes rows
and answers 202; ``oma worker`` does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from ..config import SETTINGS, OmaConfig, load_config


class OmaFlask(Flask):
    """Flask, asking once per function whether a view or hook is a coroutine (Flask asks
    :func:`inspect.iscoroutinefunction` again for each hook and view of every request)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synced: dict[Any, Any] = {}

    def ensure_sync(self, func: Any) -> Any:
        """``func`` as Flask runs it (the same answer as Flask's, found once)."""
        synced = self._synced.get(func)
        if synced is None:
            synced = self._synced[func] = super().ensure_sync(func)
        return synced


def _split(config: Mapping[str, Any] | OmaConfig | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(OMA settings overrides, plain Flask settings) from the factory's argument."""
    if config is None:
        return {}, {}
    if isinstance(config, OmaConfig):
        return {"__config__": config}, {}
    names = {s.name for s in SETTINGS}
    oma: dict[str, Any] = {}
    flask: dict[str, Any] = {}
    for key, value in config.items():
        bare = key.upper().removeprefix("OMA_")
        (oma if bare in names else flask)[bare if bare in names else key] = value
    return oma, flask


def create_app(config: Mapping[str, Any] | OmaConfig | None = None) -> Flask:
    """Build the API app. ``config`` holds OMA settings (``POLL_INTERVAL`` or
    ``OMA_POLL_INTERVAL``) and/or Flask settings (``TESTING``), or is an OmaConfig.
    """
    from migration_common import setup_logging

    from ..console import init_console
    from ..database import database, init_db, upgrade
    from ..secrets import secret_box
    from . import (
        appliances,
        bandwidth,
        contexts,
        credentials,
        discovery,
        enrollment,
        failover,
        groups,
        health,
        metrics,
        openapi,
        progress,
        replications,
        schedules,
        targets,
        workflows,
    )
    from .auth import init_auth
    from .errors import register_error_handlers

    overrides, flask_settings = _split(config)
    cfg = overrides.pop("__config__", None) or load_config(overrides)
    from .json_provider import OrjsonProvider

    app = OmaFlask(__name__)
    app.json = OrjsonProvider(app)
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024 * 1024)
    app.config.update(flask_settings)
    if not app.testing:
        setup_logging(level=cfg.log_level, json_lines=cfg.log_format == "json")

    cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    init_db(cfg.database_url, pooled=True)  # a request's connection goes back to the pool
    if cfg.auto_upgrade:
        upgrade()
    app.extensions["oma_config"] = cfg
    app.extensions["oma_secrets"] = secret_box(cfg)
    if cfg.auto_upgrade:  # the process that migrates also encrypts keys stored in clear
        from ..database.repos.targets import encrypt_api_keys

        with database.connection_context():
            encrypt_api_keys(app.extensions["oma_secrets"])

    @app.before_request
    def _open_db() -> None:
        from flask import request

        from .auth import PUBLIC_PATHS
        from .errors import ApiError

        try:
            database.connect(reuse_if_open=True)
        except Exception as exc:  # any driver error: the database is not reachable
            if request.path in PUBLIC_PATHS:
                return  # health reports it as status "error" (503)
            raise ApiError(
                "database_unavailable",
                f"the OMA database is not reachable ({type(exc).__name__})",
                503,
            ) from exc

    @app.teardown_request
    def _close_db(exc: BaseException | None) -> None:
        if not database.is_closed():
            database.close()

    from .validation import reject_bad_characters

    app.before_request(reject_bad_characters)
    init_auth(app)
    for module in (
        health,
        appliances,
        enrollment,
        credentials,
        targets,
        discovery,
        contexts,
        replications,
        failover,
        workflows,
        groups,
        schedules,
        bandwidth,
        progress,
        openapi,
        metrics,
    ):
        app.register_blueprint(module.bp)
    register_error_handlers(app)
    init_console(app, cfg)
    return app


__all__ = ["create_app"]
