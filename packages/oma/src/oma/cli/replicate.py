"""``oma replicate VM``: request a replication (the worker runs it); --watch follows it."""

from __future__ import annotations

import click


@click.command("replicate")
@click.argument("vm")
@click.option(
    "--type",
    "kind",
    type=click.Choice(("auto", "full", "incremental")),
    default="auto",
    show_default=True,
    help="auto: incremental when every disk has a change ID, else full.",
)
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Read every disk back and compare sha256 (a mismatch fails the job as "
    "verify_mismatch) [default: the VM's replication_defaults, else no].",
)
@click.option("--watch", is_flag=True, help="Follow progress until the job finishes.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON (the new job).")
def command(
    vm: str, kind: str, verify: bool | None, watch: bool, interval: float, as_json: bool
) -> None:
    """Replicate VM (its name, VMware id or context id); prints the job id."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_context, naming
    from ._watch import finish
    from ._watch import watch as follow

    with ApiClient() as api:
        ctx = find_context(api, vm)
        body = {"vm_context_id": ctx["id"], "type": kind}
        if verify is not None:
            body["verify"] = verify
        try:
            with naming(ctx):
                job = api.post("replications", body)
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = (
                    f"follow it with `oma jobs --active --vm {ctx['name']}`, "
                    "or stop it with `oma stop JOB`"
                )
            raise
        if as_json:
            echo_json(job)
        else:
            verified = ", verified" if job.get("verify") else ""
            click.echo(f"job {job['id']} {job['status']} ({kind}{verified}) for {ctx['name']}")
        if watch:
            finish(follow(api, job["id"], interval=interval))
        elif not as_json:
            click.echo(job["id"])
