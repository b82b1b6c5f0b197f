"""``migratekit run --plan plan.json`` — a multi-disk job as the VMA runs it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import _common, _exit


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``run`` on the ``migratekit`` subcommands."""
    parser = commands.add_parser(
        "run",
        help="run every disk of a plan (what the VMA starts)",
        description="Run every disk of a plan; exit 0 only when every disk completed.",
    )
    parser.add_argument(
        "--plan",
        dest="plan_path",
        required=True,
        metavar="FILE",
        help="Plan JSON (see the README: job_id, max_parallel_disks, verify, disks).",
    )
    parser.add_argument("--report", metavar="FILE", help="Write per-disk results JSON.")
    parser.add_argument(
        "--verify",
        action="store_true",
        help='Verify every disk (also enabled by the plan\'s "verify": true).',
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Resume full copies from the plan's checkpoint_dir "
        '(also enabled by the plan\'s "resume": true).',
    )
    _common.add_tuning_options(parser)
    parser.set_defaults(main=main)
    return parser


def main(args: argparse.Namespace) -> None:
    """Run ``run``; exits 0 only when every disk completed."""
    params = vars(args)
    with _exit.errors_to_exit(params["debug"]) as debug:
        from .._job import run_plan
        from .._plan import load_plan

        config, options, stop = _common.start(params, debug)
        plan = load_plan(params["plan_path"])
        if params["job_id"]:
            plan.job_id = params["job_id"]
        options.verify = options.verify or plan.verify
        options.resume = params["resume"] or plan.resume
        with _common.progress(config, params, plan.job_id) as hub:
            _common.bandwidth(params, options, hub, plan.bandwidth_file)
            results = run_plan(plan, options, hub)
        for r in results:
            print(_common.summary_line(r))
        if params["report"]:
            _common.write_report(params["report"], plan.job_id, results)
        code = stop.exit_code(_common.exit_code(results))
        if code:
            failed = sum(1 for r in results if r.status != "completed")
            print(f"error: {failed} of {len(results)} disks failed", file=sys.stderr)
        sys.exit(code)
