"""5-field cron expressions in an IANA timezone, with standard cron meaning, on APScheduler 3.x.

``minute hour day-of-month month day-of-week``, evaluated in the schedule's timezone (DST
gaps and repeats as APScheduler's ``CronTrigger`` handles them). Two differences between
APScheduler 3.x and cron are corrected here:

- day of week: cron counts 0 (and 7) as Sunday, APScheduler 3.x 0 as Monday; the field is
  expanded with cron's numbering into day names before APScheduler sees it;
- when both day of month and day of week are restricted (neither starts with ``*``), cron
  fires on a day matching EITHER field; APScheduler would need both, so such an expression
  becomes two triggers and the earlier fire time wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SEARCH_START = timedelta(minutes=1)
_SEARCH_LIMIT = timedelta(days=8 * 366)


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """The IANA timezone names this host knows."""
    return frozenset(available_timezones())


def timezone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (ValueError naming it when unknown)."""
    if name not in zone_names():
        raise ValueError(f"unknown timezone {name!r}; use an IANA name such as Europe/Paris")
    return ZoneInfo(name)


def _day(text: str) -> int:
    word = text.strip().lower()
    if word in DAY_NAMES:
        return DAY_NAMES.index(word)
    if word.isdigit() and 0 <= int(word) <= 7:
        return int(word)
    raise ValueError(f"day of week {text!r}: expected 0-7 (0 and 7 are Sunday) or sun-sat")


def weekdays(field: str) -> str:
    """A cron day-of-week field as APScheduler day names (``*`` stays ``*``)."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"day of week {part!r}: the step must be a positive number")
            step = int(step_text)
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            first, last = span.split("-", 1)
            lo, hi = _day(first), _day(last)
            if hi == 0:  # "5-0": up to Sunday
                hi = 7
        else:
            lo = _day(span)
            hi = 6 if step_text else lo
        if lo > hi:
            raise ValueError(f"day of week {part!r}: the range runs backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(DAY_NAMES[d] for d in sorted(days))


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: its expression, timezone and APScheduler triggers."""

    expression: str
    zone: ZoneInfo
    triggers: tuple[CronTrigger, ...]

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment`` (aware), or None."""
        start = moment + timedelta(microseconds=1)
        times = [t for t in (tr.get_next_fire_time(None, start) for tr in self.triggers) if t]
        return min(times) if times else None

    def latest_due(self, after: datetime, now: datetime) -> datetime | None:
        """The latest occurrence in ``(after, now]``, or None.

        Searches backwards from ``now`` in doubling windows, so a schedule whose worker was
        down for months costs a few trigger evaluations, not one per missed occurrence.
        """
        window = _SEARCH_START
        while True:
            start = max(after, now - window)
            found = self.next_after(start)
            if found is not None and found <= now:
                while True:
                    following = self.next_after(found)
                    if following is None or following > now:
                        return found
                    found = following
            if start == after or window >= _SEARCH_LIMIT:
                return None
            window *= 2


def parse(expression: str, zone_name: str = "UTC") -> Cron:
    """Parse a 5-field cron expression in an IANA timezone (ValueError saying what is wrong)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    minute, hour, day, month, dow = fields
    zone = timezone(zone_name)
    names = weekdays(dow)

    def trigger(day_field: str, dow_field: str) -> CronTrigger:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day_field,
            month=month,
            day_of_week=dow_field,
            timezone=zone,
        )

    if not day.startswith("*") and not dow.startswith("*"):
        triggers = (trigger(day, "*"), trigger("*", names))
    else:
        triggers = (trigger(day, names),)
    return Cron(" ".join(fields), zone, triggers)
