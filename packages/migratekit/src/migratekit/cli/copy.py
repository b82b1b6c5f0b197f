"""``migratekit copy SOURCE_URI TARGET_URI`` — copy one disk."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import _common, _exit


@click.command("copy")
@click.argument("source_uri")
@click.argument("target_uri")
@click.option(
    "--changed-extents",
    "changed_extents",
    default=None,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Incremental: JSON list of [offset, length] or {start, length} "
    "(VMware QueryChangedDiskAreas).",
)
@click.option(
    "--dirty-bitmap",
    default=None,
    metavar="NAME",
    help="Incremental: copy the ranges of the source's qemu:dirty-bitmap:NAME.",
)
@click.option(
    "--target-is-zero",
    is_flag=True,
    default=False,
    help="Full copy: the target reads as zeroes already; skip holes.",
)
@click.option(
    "--verify",
    is_flag=True,
    default=False,
    help="Hash source and target over the copied ranges; fail on mismatch.",
)
@click.option("--disk-key", default="disk", show_default=True, help="Name used in progress.")
@click.option("--change-id", default=None, help="Reported in the final completed update.")
@click.option(
    "--json", "as_json", is_flag=True, default=False, help="Print a final JSON summary on stdout."
)
@_common.tuning_options
def copy_command(source_uri: str, target_uri: str, **params: Any) -> None:
    """Copy one disk from SOURCE_URI to TARGET_URI (nbd://host:port/export or
    nbd+unix:///export?socket=/path). Full copy unless --changed-extents or --dirty-bitmap."""
    with _exit.errors_to_exit(params["debug"]) as debug:
        from .._states import FULL, INCREMENTAL
        from ..copy import DiskSpec, copy_disk, load_extent_file
        from ..errors import UsageError
        from ..nbd import parse_uri

        config, options = _common.load(params)
        _common.setup(config)
        debug.on = debug.on or bool(config["DEBUG"])
        if params["changed_extents"] and params["dirty_bitmap"]:
            raise UsageError(
                "give either --changed-extents or --dirty-bitmap, not both", "--changed-extents"
            )
        extents = None
        if params["changed_extents"]:
            extents = load_extent_file(params["changed_extents"], "--changed-extents")
        incremental = extents is not None or params["dirty_bitmap"] is not None
        spec = DiskSpec(
            disk_key=params["disk_key"],
            source=parse_uri(source_uri, "SOURCE_URI"),
            target=parse_uri(target_uri, "TARGET_URI"),
            mode=INCREMENTAL if incremental else FULL,
            target_is_zero=params["target_is_zero"],
            changed_extents=extents,
            dirty_bitmap=params["dirty_bitmap"],
            change_id=params["change_id"],
        )
        stop = _common.StopSignals()
        options.stop = stop.event
        hub = _common.make_hub(
            config, params["progress_mode"], params["progress_url"], params["job_id"]
        )
        try:
            tracker = hub.tracker(spec.disk_key, spec.mode, spec.change_id)
            result = copy_disk(spec, options, tracker)
        finally:
            hub.close()
        if params["as_json"]:
            doc = result.to_dict()
            doc["bytes_per_second"] = doc.pop("throughput_bps")
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
        else:
            click.echo(_common.summary_line(result))
        if result.error:
            click.echo(f"error: {result.error}", err=True)
        sys.exit(stop.exit_code(_common.exit_code([result])))
