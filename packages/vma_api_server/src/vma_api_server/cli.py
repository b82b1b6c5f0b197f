"""The `vma-api-server` command (the server itself is added by a later issue)."""

from __future__ import annotations

import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    """Print the version; the gunicorn launcher arrives with the API."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--version":
        print(f"vma-api-server {__version__}")
        return 0
    print("vma-api-server: the API is not implemented yet", file=sys.stderr)
    return 2
