"""``python -m migratekit`` runs the command line."""

from __future__ import annotations

from .cli import main

main(prog_name="migratekit")
