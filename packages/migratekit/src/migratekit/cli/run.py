"""``migratekit run --plan plan.json`` — a multi-disk job as the VMA runs it."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import _common, _exit


@click.command("run")
@click.option(
    "--plan",
    "plan_path",
    required=True,
    metavar="FILE",
    help="Plan JSON (see the README: job_id, max_parallel_disks, verify, disks).",
)
@click.option("--report", default=None, metavar="FILE", help="Write per-disk results JSON.")
@click.option(
    "--verify",
    is_flag=True,
    default=False,
    help='Verify every disk (also enabled by the plan\'s "verify": true).',
)
@_common.tuning_options
def run_command(plan_path: str, report: str | None, **params: Any) -> None:
    """Run every disk of a plan; exit 0 only when every disk completed."""
    with _exit.errors_to_exit(params["debug"]) as debug:
        from .._job import run_plan
        from .._plan import load_plan

        config, options = _common.load(params)
        _common.setup(config)
        debug.on = debug.on or bool(config["DEBUG"])
        plan = load_plan(plan_path)
        if params["job_id"]:
            plan.job_id = params["job_id"]
        options.verify = options.verify or plan.verify
        stop = _common.StopSignals()
        options.stop = stop.event
        hub = _common.make_hub(config, params["progress_mode"], params["progress_url"], plan.job_id)
        try:
            results = run_plan(plan, options, hub)
        finally:
            hub.close()
        for r in results:
            click.echo(_common.summary_line(r))
        if report:
            _common.write_report(report, plan.job_id, results)
        code = stop.exit_code(_common.exit_code(results))
        if code:
            failed = sum(1 for r in results if r.status != "completed")
            click.echo(f"error: {failed} of {len(results)} disks failed", err=True)
        sys.exit(code)
