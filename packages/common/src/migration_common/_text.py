"""Text rules of the contract that senders apply without importing pydantic."""

from __future__ import annotations

import re
from typing import Any

# what the APIs' strict JSON parser lets through (no C0/C1 controls; text keeps \t \n \r)
ONE_LINE = r"^[^\x00-\x1f\x7f-\x9f]+$"
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(value: Any) -> Any:
    """An error text with control characters (a tool's colour codes…) replaced by ``?``;
    anything else as it is."""
    return _CONTROLS.sub("?", value) if isinstance(value, str) else value
