"""``migratekit copy SOURCE_URI TARGET_URI`` — copy one disk."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import _common, _exit

DESCRIPTION = """\
Copy one disk from SOURCE_URI to TARGET_URI (nbd://host:port/export or
nbd+unix:///export?socket=/path). Full copy unless --changed-extents or --dirty-bitmap."""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``copy`` on the ``migratekit`` subcommands."""
    parser = commands.add_parser(
        "copy", help="copy one disk (full or incremental)", description=DESCRIPTION
    )
    parser.add_argument("source_uri", metavar="SOURCE_URI")
    parser.add_argument("target_uri", metavar="TARGET_URI")
    parser.add_argument(
        "--changed-extents",
        metavar="FILE",
        help="Incremental: JSON list of [offset, length] or {start, length} "
        "(VMware QueryChangedDiskAreas).",
    )
    parser.add_argument(
        "--dirty-bitmap",
        metavar="NAME",
        help="Incremental: copy the ranges of the source's qemu:dirty-bitmap:NAME.",
    )
    parser.add_argument(
        "--target-is-zero",
        action="store_true",
        help="Full copy: the target reads as zeroes already; skip holes.",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="Hash source and target over the copied ranges; fail on mismatch.",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="Full copy: record in FILE how far the copy has safely reached (after a flush).",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Full copy: start from --checkpoint FILE when it matches this source and target.",
    )
    parser.add_argument("--disk-key", default="disk", help="Name used in progress [default: disk].")
    parser.add_argument("--change-id", help="Reported in the final completed update.")
    parser.add_argument(
        "--json", dest="as_json", action="store_true", help="Print a final JSON summary on stdout."
    )
    _common.add_tuning_options(parser)
    parser.set_defaults(main=main)
    return parser


def main(args: argparse.Namespace) -> None:
    """Run ``copy``; exits 0 when the disk completed (see :mod:`._exit` for the other codes)."""
    params = vars(args)
    with _exit.errors_to_exit(params["debug"]) as debug:
        from .._states import FULL, INCREMENTAL
        from ..copy import DiskSpec, copy_disk, load_extent_file
        from ..errors import UsageError
        from ..nbd import parse_uri

        config, options, stop = _common.start(params, debug)
        if params["changed_extents"] and params["dirty_bitmap"]:
            raise UsageError(
                "give either --changed-extents or --dirty-bitmap, not both", "--changed-extents"
            )
        extents = None
        if params["changed_extents"]:
            extents = load_extent_file(params["changed_extents"], "--changed-extents")
        incremental = extents is not None or params["dirty_bitmap"] is not None
        if params["resume"] and not params["checkpoint"]:
            raise UsageError("needs --checkpoint FILE", "--resume")
        if params["checkpoint"] and incremental:
            raise UsageError("only a full copy keeps a checkpoint", "--checkpoint")
        options.resume = params["resume"]
        spec = DiskSpec(
            disk_key=params["disk_key"],
            source=parse_uri(params["source_uri"], "SOURCE_URI"),
            target=parse_uri(params["target_uri"], "TARGET_URI"),
            mode=INCREMENTAL if incremental else FULL,
            target_is_zero=params["target_is_zero"],
            changed_extents=extents,
            dirty_bitmap=params["dirty_bitmap"],
            change_id=params["change_id"],
            checkpoint=params["checkpoint"],
        )
        with _common.progress(config, params, params["job_id"]) as hub:
            _common.bandwidth(params, options, hub)
            result = copy_disk(spec, options, hub.tracker(spec.disk_key, spec.mode, spec.change_id))
        if params["as_json"]:
            doc = result.to_dict()
            doc["bytes_per_second"] = doc.pop("throughput_bps")
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
        else:
            print(_common.summary_line(result))
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
        sys.exit(stop.exit_code(_common.exit_code([result])))
