"""``oma bandwidth``: bandwidth limits — show, set, clear (global, ``--vma`` or ``--job``).

Rates accept binary units (``50MiB``, ``500K``, ``1.5G``, a plain number of bytes) or
``unlimited``; a window is ``"DAYS HH:MM-HH:MM RATE"``, e.g. ``"mon-fri 08:00-18:00 50MiB"``
(days: mon … sun, ranges and commas, ``*`` for every day). The API takes bytes per second.
"""

from __future__ import annotations

from typing import Any

import click

from ._client import ApiClient
from ._errors import CliError, ExitCode


def _rate(text: str, option: str) -> int | None:
    from ..services.bandwidth import parse_human_rate

    try:
        return parse_human_rate(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}", code=ExitCode.USAGE) from None


def parse_window(text: str) -> dict[str, Any]:
    """``"mon-fri 08:00-18:00 50MiB"`` → ``{"days", "start", "end", "rate_bps"}``."""
    parts = text.split()
    if len(parts) != 3 or parts[1].count("-") != 1:
        raise CliError(
            f"--window: expected 'DAYS HH:MM-HH:MM RATE' such as 'mon-fri 08:00-18:00 50MiB', "
            f"got {text!r}",
            code=ExitCode.USAGE,
        )
    start, end = parts[1].split("-")
    return {
        "days": [d for d in parts[0].lower().split(",") if d],
        "start": start,
        "end": end,
        "rate_bps": _rate(parts[2], "--window"),
    }


def _path(api: ApiClient, vma: str | None, job: str | None) -> tuple[str, str]:
    """(API path, what it is) of the scope the options name."""
    from ._resolve import find_job, find_vma

    if vma and job:
        raise CliError("give --vma or --job, not both", code=ExitCode.USAGE)
    if vma:
        row = find_vma(api, vma)
        return f"vma-appliances/{row['id']}/bandwidth", f"VMA {row['name']}"
    if job:
        job_id = find_job(api, job)
        return f"replications/{job_id}/bandwidth", f"job {job_id}"
    return "bandwidth", "global"


def _rate_text(rate: int | None) -> str:
    from ._format import size

    return "unlimited" if rate is None else f"{size(rate)}/s"


def _print(doc: dict[str, Any], what: str) -> None:
    from ._format import table

    policy = doc.get("policy")
    if policy is None:
        click.echo(f"{what}: no limit set")
    else:
        click.echo(
            f"{what}: {_rate_text(policy['rate_bps'])} outside windows, "
            f"timezone {policy['timezone']}, now {_rate_text(doc['rate_now_bps'])}"
        )
        rows = [
            (",".join(w["days"]), f"{w['start']}-{w['end']}", _rate_text(w["rate_bps"]))
            for w in policy["windows"]
        ]
        if rows:
            click.echo(table(("DAYS", "TIME", "RATE"), rows))
    effective = doc.get("effective")
    if effective:
        click.echo(
            f"effective now: {_rate_text(effective['effective_bps'])} (own "
            f"{_rate_text(effective['job_bps'])}, VMA share "
            f"{_rate_text(effective['vma_share_bps'])}, global share "
            f"{_rate_text(effective['global_share_bps'])})"
        )


_SCOPE = [
    click.option("--vma", metavar="VMA", help="A VMA's limit, shared by its running jobs."),
    click.option("--job", metavar="JOB", help="One replication job's own limit."),
]


def _scoped(func: Any) -> Any:
    for option in reversed(_SCOPE):
        func = option(func)
    return func


@click.group("bandwidth")
def command() -> None:
    """Bandwidth limits: global, per VMA or per job, with time windows.

    A job runs at the smallest of its own limit, its share of its VMA's limit and its share
    of the global limit (VMA and global limits are split evenly among running jobs).
    """


@command.command("show")
@_scoped
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def show(vma: str | None, job: str | None, as_json: bool) -> None:
    """Show a limit (the global one without --vma/--job) and the rate in force now."""
    import json

    with ApiClient() as api:
        path, what = _path(api, vma, job)
        doc = api.get(path)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    _print(doc, what)


@command.command("set")
@_scoped
@click.option(
    "--rate",
    default="unlimited",
    show_default=True,
    metavar="RATE",
    help="Rate outside the windows, e.g. 50MiB or unlimited.",
)
@click.option(
    "--window",
    "windows",
    multiple=True,
    metavar="'DAYS HH:MM-HH:MM RATE'",
    help="A time window, e.g. 'mon-fri 08:00-18:00 50MiB' (repeat; the first match wins).",
)
@click.option("--tz", "timezone", default="UTC", show_default=True, help="IANA timezone.")
def set_limit(
    vma: str | None, job: str | None, rate: str, windows: tuple[str, ...], timezone: str
) -> None:
    """Replace a limit; a running job applies it within a few seconds."""
    body = {
        "rate_bps": _rate(rate, "--rate"),
        "timezone": timezone,
        "windows": [parse_window(w) for w in windows],
    }
    with ApiClient() as api:
        path, what = _path(api, vma, job)
        doc = api._call("PUT", path, json=body, retries=0)
    _print(doc, what)


@command.command("clear")
@_scoped
def clear(vma: str | None, job: str | None) -> None:
    """Remove a limit (the others still apply)."""
    with ApiClient() as api:
        path, what = _path(api, vma, job)
        api.delete(path)
    click.echo(f"{what}: no limit set")
