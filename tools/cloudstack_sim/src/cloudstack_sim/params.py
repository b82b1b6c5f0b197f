"""Request parameters: case-insensitive names, CloudStack's map syntax, typed getters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import bad_value, invalid, missing

_MAP_KEY = re.compile(r"^([a-z0-9_]+)\[(\d+)\]\.(.+)$")
_BOOL = {"true": True, "false": False}


class Params:
    """Parameters of one command, keyed by lower-cased name."""

    def __init__(self, command: str, raw: Mapping[str, str]) -> None:
        self.command = command
        self.values = {k.lower(): v for k, v in raw.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        """A parameter's value (``None``/default when absent or empty)."""
        value = self.values.get(name.lower())
        return default if value in (None, "") else value

    def req(self, name: str) -> str:
        """A required parameter; 431 "missing parameter" when absent."""
        value = self.get(name)
        if value is None:
            raise missing(self.command, name)
        return value

    def integer(self, name: str, *, required: bool = False) -> int | None:
        """An integer parameter; 431 when it does not parse."""
        value = self.req(name) if required else self.get(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise bad_value(
                f"Unable to execute API command {self.command.lower()} due to "
                f"invalid value {value} for parameter {name}"
            ) from None

    def boolean(self, name: str, default: bool) -> bool:
        """A ``true``/``false`` parameter."""
        value = self.get(name)
        if value is None:
            return default
        if value.lower() not in _BOOL:
            raise bad_value(
                f"Unable to execute API command {self.command.lower()} due to "
                f"invalid value {value} for parameter {name}"
            )
        return _BOOL[value.lower()]

    def listing(self, name: str) -> list[str]:
        """A comma-separated list parameter."""
        value = self.get(name)
        return [v for v in (value or "").split(",") if v]

    def maps(self, name: str) -> list[dict[str, str]]:
        """``name[0].key=value`` parameters as a list of dicts (keys lower-cased)."""
        found: dict[int, dict[str, str]] = {}
        for key, value in self.values.items():
            m = _MAP_KEY.match(key)
            if m and m.group(1) == name.lower():
                found.setdefault(int(m.group(2)), {})[m.group(3)] = value
        return [found[i] for i in sorted(found)]

    def entity(
        self, table: Mapping[str, Any] | list[dict[str, Any]], name: str, *, required: bool = True
    ) -> Any:
        """Look up the entity whose uuid is parameter ``name``; 431 when absent or unknown."""
        value = self.req(name) if required else self.get(name)
        if value is None:
            return None
        if isinstance(table, list):
            item = next((i for i in table if i["id"] == value), None)
        else:
            item = table.get(value)
        if item is None:
            raise invalid(self.command, name, value)
        return item
