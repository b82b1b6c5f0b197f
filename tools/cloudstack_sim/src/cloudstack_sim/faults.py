"""Per-command fault injection and latency.

A fault spec string (env ``CLOUDSTACK_SIM_FAULTS``) is a comma-separated list of rules, each
``command:option:option…`` where an option is an error code (``530``), ``once``, ``count=N``,
``delay=SECONDS`` or ``text=ERRORTEXT``. Examples::

    attachVolume:530:once            the next attachVolume job fails with errorcode 530
    createVolume:delay=0.5           every createVolume job takes 0.5 s (jobstatus 0 meanwhile)
    listZones:431:count=2            the next two listZones calls answer HTTP 431

For an async command the error surfaces as a failed job (``jobstatus 2``, HTTP 200 on
``queryAsyncJobResult``), like a real server; for a sync command as an HTTP error answer.
The same rules can be added at runtime as JSON through ``POST /sim/faults``.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Fault:
    """One rule: ``command`` (case-insensitive), optional ``errorcode``/``delay``, ``remaining``."""

    command: str
    errorcode: int | None = None
    errortext: str | None = None
    delay: float = 0.0
    remaining: int | None = None  # None = forever

    def text(self) -> str:
        """The errortext answered for this fault."""
        return self.errortext or f"Simulated failure of {self.command} (injected fault)"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what ``GET /sim/faults`` lists)."""
        return asdict(self)


def parse_rule(rule: str) -> Fault:
    """Parse one ``command:option…`` rule; raise ValueError naming what is wrong."""
    parts = [p.strip() for p in rule.split(":")]
    if not parts or not parts[0]:
        raise ValueError(f"fault rule {rule!r}: missing command name")
    fault = Fault(command=parts[0])
    for opt in parts[1:]:
        if opt.isdigit():
            fault.errorcode = int(opt)
        elif opt == "once":
            fault.remaining = 1
        elif opt.startswith("count="):
            fault.remaining = int(opt[6:])
        elif opt.startswith("delay="):
            fault.delay = float(opt[6:])
        elif opt.startswith("text="):
            fault.errortext = opt[5:]
        else:
            raise ValueError(f"fault rule {rule!r}: unknown option {opt!r}")
    return fault


def parse_spec(spec: str | None) -> list[Fault]:
    """Parse a whole ``CLOUDSTACK_SIM_FAULTS`` string (empty → no faults)."""
    return [parse_rule(r) for r in (spec or "").split(",") if r.strip()]


def from_json(data: Any) -> Fault:
    """Build a fault from the JSON body of ``POST /sim/faults``; ValueError names the field."""
    if not isinstance(data, dict):
        raise ValueError("body: expected a JSON object")
    command = data.get("command")
    if not isinstance(command, str) or not command:
        raise ValueError("command: required string")
    code = data.get("errorcode")
    if code is not None and (not isinstance(code, int) or not 400 <= code <= 599):
        raise ValueError("errorcode: integer between 400 and 599 expected")
    delay = data.get("delay", 0.0)
    if not isinstance(delay, int | float) or delay < 0:
        raise ValueError("delay: non-negative number expected")
    text = data.get("errortext")
    if text is not None and not isinstance(text, str):
        raise ValueError("errortext: string expected")
    remaining = data.get("count")
    if data.get("once"):
        remaining = 1
    if remaining is not None and (not isinstance(remaining, int) or remaining < 1):
        raise ValueError("count: positive integer expected")
    return Fault(
        command=command, errorcode=code, errortext=text, delay=float(delay), remaining=remaining
    )


class FaultTable:
    """Thread-safe list of active faults, consumed as commands run."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = list(faults or [])

    def add(self, fault: Fault) -> None:
        """Add a rule (it is consulted after the existing ones)."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        """The active rules as JSON dicts."""
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, command: str) -> tuple[float, Fault | None]:
        """Delay to apply and the error fault (if any) for one call of ``command``.

        Delays of every matching rule add up; the first matching error rule is consumed.
        """
        delay = 0.0
        error: Fault | None = None
        with self._lock:
            for fault in list(self._faults):
                if fault.command.lower() != command.lower():
                    continue
                if fault.errorcode is None or error is None:
                    delay += fault.delay
                    if fault.errorcode is not None:
                        error = fault
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
        return delay, error
