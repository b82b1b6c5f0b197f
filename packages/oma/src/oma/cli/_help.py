"""click groups for ``oma``: whole one-line descriptions in ``--help`` (click cuts them at the
terminal's width), and a group with a default command (``oma failover VM`` runs
``oma failover start VM``)."""

from __future__ import annotations

from typing import Any

import click


class Group(click.Group):
    """A group whose ``--help`` lists each command's whole first sentence (wrapped)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=300)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def group(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Group)
        return super().group(*args, **kwargs)


class DefaultGroup(Group):
    """A group that runs its ``default`` command when the first argument names no command
    (a VM name), so ``oma failover VM …`` and ``oma failover retry VM`` both work."""

    default = "start"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)
