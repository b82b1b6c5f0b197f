"""NBD exports of replica volumes: one qemu-nbd process per volume (see ``exports``)."""

from __future__ import annotations

from .exports import ExportInfo, ExportManager, export_name, export_uri

__all__ = ["ExportInfo", "ExportManager", "export_name", "export_uri"]
