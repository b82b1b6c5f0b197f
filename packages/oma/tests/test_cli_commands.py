"""The operator commands that replace curl: VMAs, vCenter logins, targets, VMs, jobs by short
id, profiles; every ``hint:`` names a command that exists; ``--help`` keeps descriptions whole.
Against a real ``oma serve`` (gunicorn), a real ``vma-api-server`` and the CloudStack
simulator where a command reaches them."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import requests

from labtest.cli import CLI_VM, add_cli_vm, cli_env, run_oma, served_oma
from oma.cli import main
from oma.cli._errors import ExitCode

SRC = Path(__file__).resolve().parents[1] / "src" / "oma"
VM = CLI_VM


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with served_oma(tmp_path) as info:
        yield info


def _hinted_commands() -> list[tuple[str, str]]:
    """Every `oma …` in backquotes in a hint of the OMA's source: (file:line, command)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"\bhint(?:=|:)", text):
            chunk = text[m.end() : m.end() + 400].split("code=")[0]
            for cmd in re.findall(r"`(oma [^`]+)`", chunk):
                line = text.count("\n", 0, m.start()) + 1
                found.append((f"{path.relative_to(SRC)}:{line}", cmd))
    return found


def _parses(command: str) -> None:
    """Resolve ``command``'s path of groups and parse its options (placeholders for the
    f-string values; required values may be left out, unknown ones may not)."""
    args = shlex.split(re.sub(r"\{[^}]*\}", "X", command))[1:]
    cmd: click.Command = main
    ctx = cmd.make_context("oma", list(args), resilient_parsing=True)
    while isinstance(cmd, click.Group):
        rest = [*ctx._protected_args, *ctx.args]  # click 8.2 keeps the command name apart
        if not rest:
            return
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None, f"{command}: no command {name}"
        cmd, ctx = sub, sub.make_context(name or "", rest, parent=ctx, resilient_parsing=True)
    assert not ctx.args, f"{command}: unexpected {ctx.args}"


def test_every_hint_names_a_command_that_parses() -> None:
    hinted = _hinted_commands()
    assert len(hinted) > 30  # the scan finds them
    for where, command in hinted:
        try:
            _parses(command)
        except (click.UsageError, AssertionError) as exc:
            raise AssertionError(f"{where}: `{command}` does not parse: {exc}") from None
    # the checker itself refuses what does not exist
    for wrong in ("oma vma frobnicate", "oma job X --no-such-flag", "oma nothing"):
        with pytest.raises((click.UsageError, AssertionError)):
            _parses(wrong)


def test_help_keeps_each_description_whole() -> None:
    from click.testing import CliRunner

    out = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    listed = " ".join(out.split("Commands:")[1].split())
    for name, cmd in main.commands.items():
        first = " ".join(cmd.get_short_help_str(limit=300).split())
        assert f"{name} {first}" in listed, name
        assert not first.endswith("..."), name
    for group in ("vma", "vcenter", "target", "vm", "failover", "config"):
        assert " ".join(main.commands[group].help.split())[:20] in listed


def test_id_prefixes_and_names_are_resolved() -> None:
    from oma.cli._errors import CliError
    from oma.cli._resolve import pick

    items = [
        {"id": "8f3a11aa-0000", "name": "web"},
        {"id": "8f3b22bb-0000", "name": "db"},
        {"id": "0c0c33cc-0000", "name": "8f3a"},
    ]
    kw = {"what": "VMA", "hint": "`oma vma list`", "names": ("name",)}
    assert pick(items, "8f3b", **kw)["name"] == "db"  # a prefix
    assert pick(items, "web", **kw)["id"] == "8f3a11aa-0000"  # a name
    assert pick(items, "8f3a", **kw)["name"] == "8f3a"  # a name wins over a prefix
    assert pick(items, "0c0c33cc-0000", **kw)["name"] == "8f3a"  # a whole id
    with pytest.raises(CliError) as many:
        pick(items, "8f3", **{**kw, "names": ()})  # too short to be a prefix
    assert many.value.code == ExitCode.NOT_FOUND
    with pytest.raises(CliError) as many:
        pick(items[:2], "8f3c", **kw)
    assert many.value.code == ExitCode.NOT_FOUND
    with pytest.raises(CliError) as many:
        pick([*items, {"id": "8f3b99", "name": "x"}], "8f3b", **kw)
    assert many.value.code == ExitCode.CONFLICT and "8f3b22bb-0000 (db)" in many.value.message


def test_formats_for_people() -> None:
    from oma.cli._format import elapsed, rate, when
    from oma.cli._watch import error_text, summary

    assert when("2026-12-02T17:21:02.123456Z") == "2026-12-02 17:21:02"
    assert rate(0) == "-" and rate(85 << 20) == "85.0 MiB/s"
    assert elapsed("2026-12-02T17:00:00Z", "2026-12-02T17:01:02.5Z") == 62.5
    job = {
        "bytes_done": 62 << 20,
        "started_at": "2026-12-02T17:00:00Z",
        "finished_at": "2026-12-02T17:01:02Z",
    }
    assert summary(job) == "moved 62.0 MiB in 0:01:02 (1.0 MiB/s)"
    assert error_text({"error_class": None, "error_message": "boom"}) == "boom"
    assert error_text({"error_class": "vma_reported", "error_message": "x"}) == "vma_reported: x"


def _profile_file(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "cli.toml"


def test_profiles_hold_url_and_token(served: dict[str, Any], tmp_path: Path) -> None:
    base = {k: v for k, v in served["env"].items() if k not in ("OMA_URL", "OMA_TOKEN")}
    env = {**base, "OMA_CLI_CONFIG": str(_profile_file(tmp_path))}
    no_token = run_oma(env, "vms")
    assert no_token.returncode == ExitCode.UNAUTHORIZED
    # the API's URL as the demo prints it is accepted; the token comes on stdin
    made = run_oma(
        env, "config", "set", "lab", "--url", served["url"] + "/api/v1", "--token-stdin",
        stdin=served["token"] + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = _profile_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert f'url = "{served["url"]}"' in path.read_text()
    listed = run_oma(env, "vms")
    assert listed.returncode == 0, listed.stderr
    assert "no managed VMs" in listed.stdout

    shown = run_oma(env, "config", "show", "--json")
    data = json.loads(shown.stdout)
    assert served["token"] not in shown.stdout
    assert data["profile"] == "lab" and data["profiles"]["lab"]["token"].startswith("****")
    assert data["effective"]["url"] == {"value": served["url"], "source": "profile lab"}
    # the environment wins over the profile
    other = {**env, "OMA_URL": "http://127.0.0.1:1"}
    assert run_oma(other, "vms").returncode == ExitCode.UNREACHABLE
    shown = json.loads(run_oma(other, "config", "show", "--json").stdout)
    assert shown["effective"]["url"]["source"] == "OMA_URL"
    # a second profile, chosen by --profile or OMA_PROFILE
    run_oma(env, "config", "set", "bad", "--url", "http://127.0.0.1:1", "--token-stdin", stdin="x")
    assert run_oma(env, "--profile", "bad", "vms").returncode == ExitCode.UNREACHABLE
    assert run_oma({**env, "OMA_PROFILE": "bad"}, "vms").returncode == ExitCode.UNREACHABLE
    assert run_oma(env, "vms").returncode == 0  # lab stays the default
    missing = run_oma(env, "--profile", "ghost", "vms")
    assert missing.returncode == ExitCode.CONFIG and "no profile 'ghost'" in missing.stderr
    # others may read it: refused, with the fix
    os.chmod(path, 0o644)
    loose = run_oma(env, "vms")
    assert loose.returncode == ExitCode.CONFIG
    assert loose.stderr.splitlines() == [
        f"error: {path} holds API tokens but others may read it (mode 0644)",
        f"hint: run `chmod 600 {path}`",
    ]
    # a token never goes on the command line
    assert "--token" not in run_oma(env, "config", "set", "--help").stdout.replace(
        "--token-stdin", ""
    )


def test_vma_commands_with_a_real_vma(served: dict[str, Any], tmp_path: Path) -> None:
    """`oma vma add|list|test|set|remove` against the real VMA API server: a wrong token
    fails the test (the OMA makes an authenticated call, not only the public health one)."""
    from labtest.vma import vma_server

    env = served["env"]
    with vma_server(tmp_path / "vma") as vma:
        added = run_oma(
            env, "vma", "add", "vma-1", "--url", vma.url, "--token-stdin", stdin=vma.token
        )
        assert added.returncode == 0, added.stderr
        vma_id = added.stdout.splitlines()[-1]
        tested = run_oma(env, "vma", "test", vma_id[:6])
        assert tested.returncode == 0, tested.stderr
        assert (
            tested.stdout.startswith("VMA vma-1 ok: version ") and "token accepted" in tested.stdout
        )

        wrong = run_oma(env, "vma", "set", "vma-1", "--token-stdin", stdin="w" * 32)
        assert wrong.returncode == 0, wrong.stderr
        failed = run_oma(env, "vma", "test", "vma-1")
        assert failed.returncode == ExitCode.UNAUTHORIZED
        lines = failed.stderr.splitlines()
        assert lines[0].startswith(
            "error: VMA vma-1 failed the test: the VMA refused the stored API token"
        )
        assert lines[1] == "hint: store the VMA's VMA_API_TOKEN again: `oma vma set vma-1 --token`"
        api = requests.post(
            f"{served['url']}/api/v1/vma-appliances/{vma_id}/test",
            headers={"Authorization": f"Bearer {served['token']}"},
        ).json()
        assert api["ok"] is False and api["status"] == 401 and "HTTP 401" in api["error"]
        listed = json.loads(run_oma(env, "vma", "list", "--json").stdout)
        assert [v["name"] for v in listed] == ["vma-1"]
        assert "refused the stored API token" in listed[0]["last_error"]
        assert vma.token not in run_oma(env, "vma", "list").stdout

    removed = run_oma(env, "vma", "remove", "vma-1")
    assert removed.returncode == 0 and removed.stdout.strip() == "VMA vma-1 removed"
    gone = run_oma(env, "vma", "test", "vma-1")
    assert gone.returncode == ExitCode.NOT_FOUND
    assert gone.stderr.splitlines()[1] == "hint: see `oma vma list`"


def test_vcenter_and_target_commands(served: dict[str, Any], tmp_path: Path) -> None:
    from labtest.cloudstack import cloudstack_sim

    env = served["env"]
    added = run_oma(
        env, "vcenter", "add", "vc", "--host", "vc.lab:443", "--username", "admin",
        "--password-stdin", "--insecure", "--default", stdin="s3cret-pass\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = run_oma(env, "vcenter", "list")
    assert "vc.lab:443" in listed.stdout and "s3cret" not in listed.stdout
    no_password = run_oma(env, "vcenter", "add", "vc2", "--host", "h", "--username", "u")
    assert no_password.returncode == ExitCode.USAGE
    assert "--password-stdin" in no_password.stderr

    with cloudstack_sim(tmp_path / "cs") as sim:
        made = run_oma(
            env, "target", "add", "lab", "--endpoint", sim.endpoint, "--api-key", sim.api_key,
            "--secret-key-stdin", "--zone", sim.zone_id, "--oma-vm", sim.oma_vm_id,
            "--disk-offering", sim.custom_disk_offering_id, "--default",
            stdin=sim.secret_key,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        target_id = made.stdout.splitlines()[-1]
        listed = run_oma(env, "target", "list").stdout
        assert "lab" in listed and sim.secret_key not in listed and sim.api_key not in listed
        tested = run_oma(env, "target", "test")  # the default target
        assert tested.returncode == 0, tested.stderr
        assert tested.stdout.splitlines()[-1].startswith("target lab ok: ")
        offerings = run_oma(env, "target", "offerings", target_id[:5])
        assert sim.service_offering_id in offerings.stdout
        assert offerings.stdout.startswith("NAME") and "MEMORY" in offerings.stdout
        data = json.loads(run_oma(env, "target", "offerings", "lab", "--json").stdout)
        assert sim.service_offering_id in {o["id"] for o in data["items"]}
        assert data["items"] == data["service_offerings"]
        assert sim.network_id in run_oma(env, "target", "networks", "lab").stdout
        templates = json.loads(run_oma(env, "target", "templates", "--json").stdout)
        assert sim.template_id in {t["id"] for t in templates}
        disk = run_oma(env, "target", "offerings", "lab", "--disk").stdout
        assert sim.custom_disk_offering_id in disk
    assert run_oma(env, "target", "remove", "lab").returncode == 0
    assert run_oma(env, "vcenter", "remove", "vc").stdout.strip() == "vCenter login vc removed"


def test_vm_and_job_commands_take_short_ids(served: dict[str, Any], tmp_path: Path) -> None:
    import sqlite3

    env = served["env"]
    ctx = add_cli_vm(served)
    shown = run_oma(env, "vm", "show", ctx["id"][:6])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("cli-vm  discovered, not ready for failover")
    assert "4.0 MiB" in shown.stdout and "2.0 MiB" in shown.stdout
    as_json = json.loads(run_oma(env, "vm", "show", "cli-vm", "--json").stdout)
    assert as_json["id"] == ctx["id"] and len(as_json["disks"]) == 2

    job_id = run_oma(env, "replicate", "cli-vm").stdout.strip().splitlines()[-1]
    again = run_oma(env, "replicate", "cli-vm")
    assert again.returncode == ExitCode.CONFLICT
    assert again.stderr.splitlines() == [  # the VM by its name, not its context id
        f"error: VM cli-vm already has an active job ({job_id})",
        "hint: follow it with `oma jobs --active --vm cli-vm`, or stop it with `oma stop JOB`",
    ]
    created = json.loads(run_oma(env, "job", job_id[:8], "--json").stdout)
    assert created["id"] == job_id
    assert run_oma(env, "stop", job_id[:8]).stdout.strip() == f"job {job_id} stopped"
    # a finished job as a person reads it: sizes, rate, duration, end time to the second,
    # no "None:" before an error without class
    with sqlite3.connect(tmp_path / "data" / "oma.db") as db:
        db.execute(
            "UPDATE replication_jobs SET status='failed', bytes_total=?, bytes_done=?, "
            "throughput_bps=0, error_class=NULL, error_message='NBD read failed', "
            "started_at='2026-12-02 17:00:00.123456', finished_at='2026-12-02 17:01:02.123456' "
            "WHERE id = ?",
            (6 << 20, 3 << 20, job_id),
        )
    job = run_oma(env, "job", job_id[:8])
    assert job.returncode == 0, job.stderr
    out = job.stdout
    assert out.splitlines()[0] == (
        f"job={job_id} status=failed phase=- percent=0.0 done=3.0MiB/6.0MiB rate=- eta=-"
    )
    assert "  started 2026-12-02 17:00:00  ended 2026-12-02 17:01:02" in out
    assert "  moved 3.0 MiB in 0:01:02" in out
    assert "  error: NBD read failed" in out and "None" not in out
    table = run_oma(env, "jobs").stdout.splitlines()
    assert table[0].split() == [
        "JOB", "VM", "TYPE", "STATUS", "DONE", "BYTES", "CREATED", "TOOK", "ENDED", "ERROR",
    ]  # fmt: skip
    assert table[1].startswith(job_id[:8]) and "0:01:02" in table[1] and "17:01:02" in table[1]
    # a job stopped after its copy finished says so (not "before the copy finished")
    with sqlite3.connect(tmp_path / "data" / "oma.db") as db:
        db.execute(
            "UPDATE replication_jobs SET status='stopped', bytes_done=bytes_total, phase='verify',"
            " percent=100, error_message='stopped before the copy finished' WHERE id = ?",
            (job_id,),
        )
    stopped = run_oma(env, "job", job_id[:8]).stdout
    assert "  stopped after the copy finished (phase verify)" in stopped
    assert "before the copy finished" not in stopped

    busy = run_oma(env, "replicate", "cli-vm")  # the job above is finished: a new one starts
    assert busy.returncode == 0, busy.stderr
    removed = run_oma(env, "vm", "remove", "cli-vm")
    assert removed.returncode == ExitCode.CONFLICT
    assert "`oma stop JOB`" in removed.stderr
    second = busy.stdout.strip().splitlines()[-1]
    assert run_oma(env, "stop", second[:8], "--json").returncode == 0
    removed = run_oma(env, "vm", "remove", ctx["id"][:8])
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "cli-vm removed from management"
    assert run_oma(env, "vm", "show", "cli-vm").returncode == ExitCode.NOT_FOUND


def test_shell_completion_completes_commands_and_subcommands(tmp_path: Path) -> None:
    """The completion docs/cli.md documents: click's, through ``_OMA_COMPLETE``."""
    env = cli_env(tmp_path, _OMA_COMPLETE="bash_complete", COMP_WORDS="oma fai", COMP_CWORD="1")
    assert run_oma(env, "ignored").stdout.split() == ["plain,failover"]
    env.update(COMP_WORDS="oma target ", COMP_CWORD="2")
    subcommands = {line.split(",")[1] for line in run_oma(env).stdout.split()}
    assert {"add", "list", "test", "offerings", "networks", "templates", "remove"} <= subcommands
    script = run_oma({**env, "_OMA_COMPLETE": "bash_source"}).stdout
    assert "_oma_completion" in script and "complete " in script
