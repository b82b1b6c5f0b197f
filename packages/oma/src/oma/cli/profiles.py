"""``oma config``: named profiles holding the OMA's URL and API token for operator commands.

The file is ``$OMA_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/oma/cli.toml`` (``~/.config/oma/
cli.toml``); it holds a token, so it must be readable by its owner only (0600): a file others
may read is refused. ``OMA_URL``, ``OMA_TOKEN`` and ``OMA_CA_FILE`` in the environment win over
the profile; ``--profile NAME`` (or ``OMA_PROFILE``) picks a profile, else the file's
``default``, else its only profile::

    default = "lab"

    [profiles.lab]
    url = "http://127.0.0.1:8082"
    token = "oma_…"
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import click

from ._errors import CliError, ExitCode

KEYS = ("url", "token", "ca_file")


def config_path() -> Path:
    """Where the profiles live."""
    named = os.environ.get("OMA_CLI_CONFIG")
    if named:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "oma" / "cli.toml"


def read_profiles(path: Path) -> dict[str, Any]:
    """The parsed file (``{}`` when missing); CONFIG error when others may read it or it is
    not valid TOML."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & 0o077:
        raise CliError(
            f"{path} holds API tokens but others may read it (mode {stat.S_IMODE(mode):04o})",
            hint=f"run `chmod 600 {path}`",
            code=ExitCode.CONFIG,
        )
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CliError(
            f"{path} is not valid TOML: {exc}",
            hint="fix it, or write it again with `oma config set NAME --url URL`",
            code=ExitCode.CONFIG,
        ) from None
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise CliError(
            f"{path} has no [profiles.NAME] tables",
            hint="write one with `oma config set NAME --url URL`",
            code=ExitCode.CONFIG,
        )
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write the profiles as TOML, 0600 from the first byte (directory 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = []
    if data.get("default"):
        lines += [f"default = {json.dumps(data['default'])}", ""]
    for name, profile in sorted(data.get("profiles", {}).items()):
        lines.append(f"[profiles.{json.dumps(name)}]")
        lines += [f"{k} = {json.dumps(profile[k])}" for k in KEYS if profile.get(k)]
        lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def selected(data: dict[str, Any], name: str | None) -> str | None:
    """The profile to use: ``name``, else the file's default, else its only profile."""
    profiles = data.get("profiles") or {}
    if name:
        return name
    if data.get("default"):
        return str(data["default"])
    return next(iter(profiles)) if len(profiles) == 1 else None


def apply_profile(name: str | None) -> None:
    """Put the chosen profile's url, token and CA file into this process's environment where
    the environment has none (so ``OMA_URL``/``OMA_TOKEN``/``OMA_CA_FILE`` win)."""
    path = config_path()
    data = read_profiles(path)
    chosen = selected(data, name)
    if chosen is None:
        return
    profile = (data.get("profiles") or {}).get(chosen)
    if profile is None:
        raise CliError(
            f"no profile {chosen!r} in {path}",
            hint="see `oma config show`, or add it with `oma config set NAME --url URL`",
            code=ExitCode.CONFIG,
        )
    for key in KEYS:
        if profile.get(key) and not os.environ.get(f"OMA_{key.upper()}"):
            os.environ[f"OMA_{key.upper()}"] = str(profile[key])


@click.group("config")
def command() -> None:
    """Profiles with the OMA's URL and API token (instead of OMA_URL and OMA_TOKEN)."""


@command.command("set")
@click.argument("name")
@click.option("--url", help="Base URL of the OMA, e.g. http://oma:8082.")
@click.option("--token-stdin", is_flag=True, help="Read the API token from standard input.")
@click.option("--no-token", is_flag=True, help="Keep the profile's token (or have none).")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA certificate of the OMA.")
@click.option("--default/--no-default", "make_default", default=None, help="Use it by default.")
def set_profile(
    name: str,
    url: str | None,
    token_stdin: bool,
    no_token: bool,
    ca_file: str | None,
    make_default: bool | None,
) -> None:
    """Create or change profile NAME; the token is prompted for (hidden) or read from stdin."""
    from ..config import load_client_config
    from ._secrets import read_secret

    path = config_path()
    data = read_profiles(path) or {"profiles": {}}
    profile = dict(data["profiles"].get(name) or {})
    if url:
        # the same check OMA_URL gets: a scheme, and /api/v1 stripped
        profile["url"] = load_client_config({"URL": url}, environ={}).url
    if not profile.get("url"):
        raise click.UsageError("a new profile needs --url")
    if not no_token:
        profile["token"] = read_secret("API token", from_stdin=token_stdin, flag="--token-stdin")
    if ca_file:
        profile["ca_file"] = str(Path(ca_file).expanduser().resolve())
    data["profiles"][name] = profile
    if make_default or (make_default is None and not data.get("default")):
        data["default"] = name
    elif make_default is False and data.get("default") == name:
        data.pop("default")
    _write(path, data)
    click.echo(
        f"profile {name} saved in {path}" + (" (default)" if data.get("default") == name else "")
    )


@command.command("use")
@click.argument("name")
def use(name: str) -> None:
    """Make profile NAME the default."""
    path = config_path()
    data = read_profiles(path)
    if name not in (data.get("profiles") or {}):
        raise CliError(
            f"no profile {name!r} in {path}", hint="see `oma config show`", code=ExitCode.NOT_FOUND
        )
    data["default"] = name
    _write(path, data)
    click.echo(f"profile {name} is the default")


@command.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Delete profile NAME."""
    path = config_path()
    data = read_profiles(path)
    if data.get("profiles", {}).pop(name, None) is None:
        raise CliError(
            f"no profile {name!r} in {path}", hint="see `oma config show`", code=ExitCode.NOT_FOUND
        )
    if data.get("default") == name:
        data.pop("default")
    _write(path, data)
    click.echo(f"profile {name} removed")


@command.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (tokens masked).")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """The profiles (tokens masked) and what operator commands use now, and from where."""
    from ._secrets import mask

    path = config_path()
    data = read_profiles(path)
    chosen = selected(data, (ctx.find_root().params or {}).get("profile"))
    profiles = {
        n: {**p, "token": mask(p.get("token")) if p.get("token") else None}
        for n, p in (data.get("profiles") or {}).items()
    }
    effective = {}
    for key in KEYS:
        value = os.environ.get(f"OMA_{key.upper()}")
        source = f"OMA_{key.upper()}"
        if not value:
            value = (profiles.get(chosen or "") or {}).get(key)
            source = f"profile {chosen}" if value else "default"
            if not value:
                from ..config import CLIENT_SETTINGS

                value = next(s.default for s in CLIENT_SETTINGS if s.name == key.upper())
        elif key == "token":
            value = mask(value)
        effective[key] = {"value": value, "source": source}
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(path),
                    "profile": chosen,
                    "profiles": profiles,
                    "effective": effective,
                },
                indent=2,
            )
        )
        return
    click.echo(f"file: {path}" + ("" if path.exists() else " (none yet)"))
    for n, p in profiles.items():
        mark = "*" if n == chosen else " "
        click.echo(f"{mark} {n}: url={p.get('url')} token={p.get('token') or '-'}")
    for key, e in effective.items():
        click.echo(f"{key}: {e['value'] or '-'} (from {e['source']})")
