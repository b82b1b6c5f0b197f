"""Per-request access to the app's OMA config and secret box."""

from __future__ import annotations

from flask import current_app

from ..config import OmaConfig
from ..secrets import SecretBox


def config() -> OmaConfig:
    """The app's validated OMA settings."""
    return current_app.extensions["oma_config"]


def box() -> SecretBox:
    """The app's secret box (encrypts/decrypts stored secrets)."""
    return current_app.extensions["oma_secrets"]
