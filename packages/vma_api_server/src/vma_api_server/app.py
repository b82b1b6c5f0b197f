"""The Flask app factory: settings, logging, database, runner, auth, blueprints, errors.

gunicorn runs ``vma_api_server:create_app()`` with ONE worker and several threads: the job
runner's supervision thread and its lock live in that worker (see README, "Why one worker").
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask

from migration_common import register_secret, setup_logging
from vma.services.runner import JobRunner, RunnerConfig
from vma.services.store import database, init_db
from vma.services.vcenter import VcenterCredentials, VcenterProvider

from . import metrics
from .api import register_blueprints
from .api._services import Services
from .auth import init_auth
from .config import child_environment, load_config
from .errors import register_error_handlers


def create_app(config: Mapping[str, Any] | None = None, *, start_runner: bool = True) -> Flask:
    """Build the VMA API app. ``config`` overrides settings by name (``{"DATA_DIR": ...}``)."""
    settings = load_config(config)
    if settings["API_TOKEN"]:
        register_secret(settings["API_TOKEN"])
    setup_logging(settings["LOG_LEVEL"], json_lines=settings["LOG_JSON"])
    app = Flask(__name__)
    app.config["VMA"] = settings
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20  # request bodies are small JSON documents

    data_dir = settings["DATA_DIR"]
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    init_db(data_dir / "vma.db")

    configured = None
    if settings["VCENTER_HOST"]:
        configured = VcenterCredentials.from_address(
            settings["VCENTER_HOST"],
            settings["VCENTER_USER"],
            settings["VCENTER_PASSWORD"],
            insecure=settings["VCENTER_INSECURE"],
            datacenter=settings["VCENTER_DATACENTER"],
        )
    vcenter = VcenterProvider(data_dir, configured)
    runner = JobRunner(
        RunnerConfig(
            data_dir=data_dir,
            progress_url=settings["PROGRESS_URL"],
            env=child_environment(settings),
            lab_dir=settings["LAB_DIR"],
            max_concurrent_jobs=settings["MAX_CONCURRENT_JOBS"],
            max_parallel_disks=settings["MAX_PARALLEL_DISKS"],
            stop_grace=settings["STOP_GRACE"],
            poll_interval=settings["POLL_INTERVAL"],
            job_retention_days=settings["JOB_RETENTION_DAYS"],
            migratekit=settings["MIGRATEKIT"],
            vddk_libdir=settings["VDDK_LIBDIR"],
            vddk_plugin=settings["VDDK_PLUGIN"],
        ),
        vcenter,
    )
    app.extensions["vma"] = Services(runner, vcenter, settings, time.monotonic())

    @app.before_request
    def _connect() -> None:
        database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        if not database.is_closed():
            database.close()

    init_auth(app)
    register_blueprints(app)
    app.register_blueprint(metrics.bp)  # GET /metrics (Prometheus)
    register_error_handlers(app)
    if start_runner:
        runner.start()
        # let a tick that is starting a job finish before the worker exits
        atexit.register(runner.shutdown)
    return app
