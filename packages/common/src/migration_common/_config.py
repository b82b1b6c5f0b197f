"""Configuration loading: environment variables with a per-package prefix, optional TOML file.

A package declares its settings once, as a tuple of :class:`Setting`, and loads them with
:func:`load_settings`. Precedence: explicit overrides > environment > TOML file > default.
The TOML file is named by ``<PREFIX>_CONFIG`` (or the ``toml_path`` argument); its keys are
the setting names in lower case without the prefix (``bind = "127.0.0.1:8081"``). Every
failure is a :class:`ConfigError` whose ``variable`` is the full environment variable name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import ConfigError

Parser = Callable[[str], Any]


class Setting(NamedTuple):
    """One configuration variable: ``name`` without prefix, parser, default and meaning.

    ``default`` is used as given, already in its parsed type (a tuple for a port range, a float
    for seconds): ``parse`` only converts text coming from the environment or the TOML file.
    A NamedTuple, not a dataclass: importing ``dataclasses`` (and ``inspect``) costs ~7 ms of
    every command's start-up, which matters for migratekit's one process per sync.
    """

    name: str
    doc: str
    default: Any = None
    parse: Parser = str
    required: bool = False
    secret: bool = False


def parse_bool(text: str) -> bool:
    """Parse true/false, yes/no, on/off, 1/0 (any case)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_int(minimum: int | None = None, maximum: int | None = None) -> Parser:
    """A parser for an integer within optional bounds."""

    def _parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return _parse


def parse_seconds(text: str) -> float:
    """Parse a positive duration in seconds (a number, optionally with an ``s`` suffix)."""
    raw = str(text).strip().removesuffix("s")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {text!r}")
    return value


def parse_hostport(text: str) -> tuple[str, int]:
    """Parse ``host:port`` (IPv6 as ``[::1]:8081``) into a tuple."""
    raw = str(text).strip()
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``first-last`` (inclusive) into a tuple of ports."""
    first, sep, last = str(text).strip().partition("-")
    if not sep or not first.isdigit() or not last.isdigit():
        raise ValueError(f"expected a port range like 10100-10199, got {text!r}")
    lo, hi = int(first), int(last)
    if not 0 < lo <= hi < 65536:
        raise ValueError(f"expected 0 < first <= last < 65536, got {text!r}")
    return lo, hi


def load_settings(
    prefix: str,
    settings: Sequence[Setting],
    *,
    environ: Mapping[str, str] | None = None,
    toml_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load and validate ``settings`` for ``prefix`` (e.g. ``"VMA"``).

    Returns a dict keyed by setting name (without prefix). Unknown keys in the TOML file or in
    ``overrides`` are errors, so a typo never passes silently.
    """
    env = os.environ if environ is None else environ
    known = {s.name: s for s in settings}
    file_values: dict[str, Any] = {}
    path = toml_path if toml_path is not None else env.get(f"{prefix}_CONFIG")
    if path:
        file_values = _read_toml(f"{prefix}_CONFIG", Path(path))
        for key in file_values:
            if key.upper() not in known:
                raise ConfigError(f"{prefix}_CONFIG", f"unknown setting {key!r} in {path}")
    extra = overrides or {}
    for key in extra:
        if key.upper() not in known:
            raise ConfigError(f"{prefix}_{key.upper()}", "unknown setting")
    result: dict[str, Any] = {}
    for s in settings:
        variable = f"{prefix}_{s.name}"
        if s.name in extra or s.name.lower() in extra:
            raw = extra.get(s.name, extra.get(s.name.lower()))
        elif variable in env:
            raw = env[variable]
        elif s.name.lower() in file_values:
            raw = file_values[s.name.lower()]
        elif s.required:
            raise ConfigError(variable, f"is required ({s.doc})")
        else:
            result[s.name] = s.default
            continue
        result[s.name] = _convert(variable, s, raw)
    return result


def _convert(variable: str, setting: Setting, raw: Any) -> Any:
    if not isinstance(raw, str):
        raw_text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if setting.parse is str:
            return raw_text
    else:
        raw_text = raw
    if setting.required and not raw_text.strip():
        raise ConfigError(variable, f"is required ({setting.doc})")
    try:
        return setting.parse(raw_text)
    except ValueError as exc:
        shown = "a value that was not accepted" if setting.secret else str(exc)
        raise ConfigError(variable, shown) from None


def _read_toml(variable: str, path: Path) -> dict[str, Any]:
    import tomllib  # only when a config file is named: keeps command start-up short

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(variable, f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(variable, f"invalid TOML in {path}: {exc}") from None


def describe(prefix: str, settings: Sequence[Setting]) -> str:
    """A plain-text table of the settings (for ``--help`` texts and READMEs)."""
    lines = []
    for s in settings:
        default = "(required)" if s.required else repr(s.default)
        lines.append(f"{prefix}_{s.name:<24} {default:<24} {s.doc}")
    return "\n".join(lines)
