"""Access to the services ``create_app`` built (runner, vCenter provider, settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from vma.services.runner import JobRunner
from vma.services.vcenter import VcenterProvider


@dataclass
class Services:
    """What the routes use."""

    runner: JobRunner
    vcenter: VcenterProvider
    settings: dict[str, Any]
    started: float


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions["vma"]
