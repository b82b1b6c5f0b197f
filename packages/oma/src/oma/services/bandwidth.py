"""Bandwidth policies: validation, time windows, and each running job's effective limit.

A **policy** (global, per VMA or per job) is ``{"rate_bps", "timezone", "windows"}``:

- ``windows``: a list of rules ``{"days": ["mon", …], "start": "08:00", "end": "18:00",
  "rate_bps": N | null}`` evaluated in ``timezone`` (IANA name, default UTC). The first rule
  whose day and ``[start, end)`` contain the current local time gives the rate;
- ``rate_bps``: the rate when no rule matches;
- a rate is bytes per second; null means unlimited.

A job's **effective limit** at a moment is the smallest of: its own policy's rate, its VMA's
rate divided evenly among that VMA's running jobs, and the global rate divided evenly among
all running jobs (:func:`effective_limits`). Unset policies do not limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .cron import timezone as zone

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in ``datetime.weekday()`` order."""

MAX_RATE = 1 << 50
"""The largest rate accepted (1 PiB/s): anything above is a typo."""

MAX_WINDOWS = 50
"""The most rules one policy may have."""

DAY_PATTERN = "^(\\*|(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)$"
"""A day of a window: a name, a range (``mon-fri``, wrapping ``fri-mon``) or ``*``."""

TIME_PATTERN = "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
"""A window's start or end, local time ``HH:MM`` (``24:00`` ends a day)."""

_TIME = re.compile(TIME_PATTERN)
_DAY = re.compile(DAY_PATTERN)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class PolicyError(ValueError):
    """A policy field is invalid; ``field`` names it (``windows[0].end``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Window:
    """One rule: on ``days`` (0 = Monday), from ``start`` to ``end`` (minutes), ``rate``."""

    days: frozenset[int]
    start: int
    end: int
    rate: int | None

    def to_dict(self) -> dict[str, Any]:
        """The rule as the API shows it (days in week order, times as HH:MM)."""
        return {
            "days": [DAYS[d] for d in sorted(self.days)],
            "start": _hhmm(self.start),
            "end": _hhmm(self.end),
            "rate_bps": self.rate,
        }


@dataclass(frozen=True)
class Policy:
    """A validated policy; :meth:`rate_at` evaluates it."""

    rate: int | None = None
    timezone: str = "UTC"
    windows: tuple[Window, ...] = field(default_factory=tuple)

    def rate_at(self, now: datetime) -> int | None:
        """The rate in force at ``now`` (aware): the first matching window's, else the
        default."""
        local = now.astimezone(zone(self.timezone))
        day, minute = local.weekday(), local.hour * 60 + local.minute
        for w in self.windows:
            if day in w.days and w.start <= minute < w.end:
                return w.rate
        return self.rate

    def to_dict(self) -> dict[str, Any]:
        """The policy as the API shows and stores it."""
        return {
            "rate_bps": self.rate,
            "timezone": self.timezone,
            "windows": [w.to_dict() for w in self.windows],
        }


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_rate(value: Any, name: str) -> int | None:
    """A rate in bytes/s: a non-negative integer or null (0 and null: unlimited)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(name, "must be an integer number of bytes per second, or null")
    if value < 0:
        raise PolicyError(name, f"must be >= 0 bytes per second, got {value}")
    if value > MAX_RATE:
        raise PolicyError(name, f"must be at most {MAX_RATE} bytes per second")
    return value or None


def parse_human_rate(text: str) -> int | None:
    """``50MiB``, ``50M``, ``1.5G``, ``1048576`` or ``unlimited`` → bytes/s (binary units;
    a trailing ``/s`` is accepted). ValueError for anything else."""
    raw = text.strip().lower().removesuffix("/s")
    if raw in ("unlimited", "none", "0"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", raw)
    if not m:
        raise ValueError(f"expected a rate like 50MiB, 500K or unlimited, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise ValueError(f"expected a positive rate, got {text!r}")
    return value


def check_day(value: str) -> str:
    """A day as the API accepts it (ValueError with the allowed words otherwise)."""
    if not _DAY.match(value):
        raise ValueError("must be a day (mon … sun), a range such as mon-fri, or *")
    return value


def check_time(value: str) -> str:
    """A time as the API accepts it (ValueError otherwise)."""
    if not _TIME.match(value):
        raise ValueError("must be a time HH:MM (00:00 to 24:00)")
    return value


def _days(value: Any, name: str) -> frozenset[int]:
    """``["mon", "tue"]``, ranges like ``"mon-fri"`` inside the list, or ``"*"`` (every day)."""
    if not isinstance(value, list) or not value:
        raise PolicyError(name, 'must be a non-empty list of days such as ["mon-fri"]')
    days: set[int] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise PolicyError(f"{name}[{i}]", "must be a day name (mon … sun)")
        word = item
        if word == "*":
            days.update(range(7))
            continue
        first, _, last = word.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise PolicyError(
                f"{name}[{i}]", f"unknown day {item!r}; use mon, tue, wed, thu, fri, sat, sun"
            )
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def _minutes(value: Any, name: str) -> int:
    if not isinstance(value, str) or not _TIME.match(value):
        raise PolicyError(name, "must be a time HH:MM (00:00 to 24:00)")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def parse_window(raw: Any, name: str) -> Window:
    """One rule; ``end`` must be after ``start`` (a window never crosses midnight: split it)."""
    if not isinstance(raw, dict):
        raise PolicyError(name, "must be an object {days, start, end, rate_bps}")
    for key in raw:
        if key not in ("days", "start", "end", "rate_bps"):
            raise PolicyError(f"{name}.{key}", "unknown field")
    if "rate_bps" not in raw:
        raise PolicyError(f"{name}.rate_bps", "is required (bytes per second, or null)")
    days = _days(raw.get("days"), f"{name}.days")
    start = _minutes(raw.get("start"), f"{name}.start")
    end = _minutes(raw.get("end"), f"{name}.end")
    if end <= start:
        raise PolicyError(
            f"{name}.end",
            f"must be after start ({_hhmm(start)}); split a window that crosses midnight in two",
        )
    return Window(days, start, end, parse_rate(raw["rate_bps"], f"{name}.rate_bps"))


def parse_policy(data: dict[str, Any]) -> Policy:
    """A policy from an API body (PolicyError naming the field)."""
    for key in data:
        if key not in ("rate_bps", "timezone", "windows"):
            raise PolicyError(key, "unknown field")
    tz = data.get("timezone") or "UTC"
    if not isinstance(tz, str):
        raise PolicyError("timezone", "must be an IANA timezone name such as Europe/Paris")
    try:
        zone(tz.strip())
    except ValueError as exc:
        raise PolicyError("timezone", str(exc)) from None
    windows_raw = data.get("windows")
    if windows_raw is None:
        windows_raw = []
    if not isinstance(windows_raw, list):
        raise PolicyError("windows", "must be a list of {days, start, end, rate_bps}")
    if len(windows_raw) > MAX_WINDOWS:
        raise PolicyError("windows", f"must have at most {MAX_WINDOWS} rules")
    windows = tuple(parse_window(w, f"windows[{i}]") for i, w in enumerate(windows_raw))
    return Policy(parse_rate(data.get("rate_bps"), "rate_bps"), tz.strip(), windows)


def stored_policy(rate: int | None, tz: str, windows: list[dict[str, Any]] | None) -> Policy:
    """A policy from its stored columns (they were validated on the way in)."""
    return parse_policy({"rate_bps": rate, "timezone": tz, "windows": windows or []})


def _min(*rates: int | None) -> int | None:
    limited = [r for r in rates if r is not None]
    return min(limited) if limited else None


def share(rate: int | None, jobs: int) -> int | None:
    """An even share of ``rate`` among ``jobs`` running jobs (at least 1 byte/s)."""
    if rate is None:
        return None
    return max(1, rate // max(1, jobs))


@dataclass(frozen=True)
class JobLimit:
    """A running job's effective limit and the parts it came from (bytes/s, None: none)."""

    effective: int | None
    job: int | None
    vma_share: int | None
    global_share: int | None

    def to_dict(self) -> dict[str, Any]:
        """For the API."""
        return {
            "effective_bps": self.effective,
            "job_bps": self.job,
            "vma_share_bps": self.vma_share,
            "global_share_bps": self.global_share,
        }


def effective_limits(
    now: datetime,
    running: dict[str, str | None],
    *,
    global_policy: Policy | None,
    vma_policies: dict[str, Policy],
    job_policies: dict[str, Policy],
) -> dict[str, JobLimit]:
    """Each running job's limit at ``now``; ``running`` maps job id → VMA id."""
    per_vma: dict[str | None, int] = {}
    for vma_id in running.values():
        per_vma[vma_id] = per_vma.get(vma_id, 0) + 1
    global_share = share(global_policy.rate_at(now) if global_policy else None, len(running))
    vma_rates = {v: p.rate_at(now) for v, p in vma_policies.items()}
    out = {}
    for job_id, vma_id in running.items():
        own = job_policies[job_id].rate_at(now) if job_id in job_policies else None
        vma_share = share(vma_rates.get(vma_id) if vma_id else None, per_vma[vma_id])
        out[job_id] = JobLimit(_min(own, vma_share, global_share), own, vma_share, global_share)
    return out
