"""Wiring of the failover and rollback workflows into ``oma worker``.

:func:`build_failover_runner` binds both definitions to the worker's services and returns
the :class:`~oma.workflows.failover_engine.FailoverRunner` whose ``tick()`` the worker calls
right after the replication runner's tick (same thread, so export reconciliation never races
a failover step).
"""

from __future__ import annotations

from typing import Any

from migration_common import ConfigError

from .failover import GUEST_CONVERSION_MODES, FailoverServices, FailoverWorkflow
from .failover_engine import FailoverRunner, ResumableEngine
from .failover_rollback import RollbackWorkflow

GUEST_CONVERSION_VARIABLE = "OMA_GUEST_CONVERSION"


def guest_conversion_mode(config: Any) -> str:
    """``skip`` (default) or ``virt-v2v``: the loaded configuration's ``guest_conversion``
    (``OMA_GUEST_CONVERSION``, validated by :mod:`oma.config`; never read from the environment
    here). Anything else stops the worker with an error naming the variable."""
    value = getattr(config, "guest_conversion", None) or "skip"
    mode = str(value).strip().lower()
    if mode not in GUEST_CONVERSION_MODES:
        raise ConfigError(
            GUEST_CONVERSION_VARIABLE,
            f"expected {' or '.join(GUEST_CONVERSION_MODES)}, got {value!r}",
        )
    return mode


def build_failover_runner(config: Any, services: Any) -> FailoverRunner:
    """The failover runner of a worker; ``services`` is its ReplicationServices."""
    fs = FailoverServices(
        cloudstack_for=services.cloudstack_for,
        vma_for=services.vma_for,
        exports=services.exports,
        by_id_dir=services.by_id_dir,
        device_timeout=services.device_timeout,
        wait_for_device=services.wait_for_device,
        guest_conversion=guest_conversion_mode(config),
    )
    engine = ResumableEngine(config.worker_id, lease_seconds=config.lease_timeout)
    return FailoverRunner(
        engine, [FailoverWorkflow(fs).definition, RollbackWorkflow(fs).definition]
    )
