"""Time-of-day, day-of-week and holiday conditions in the centre's time zone.

A flow's ``[flow]`` table names the centre's ``timezone`` (IANA name,
default ``UTC``) and its ``holidays``.  Holidays are written as

* ``"2026-12-25"``: one date,
* ``"12-25"``: the same day every year,
* ``"2026-08-01..2026-08-15"``: an inclusive range of dates.

Branch rules test ``time = "08:00-18:00"`` (start inclusive, end exclusive;
a range whose end is before its start wraps past midnight, so
``"22:00-06:00"`` is the night), ``days = ["mon", ..., "sun"]`` (or ranges
``"mon-fri"``) and ``holiday = true/false``.  The interpreter converts the
call's wall-clock time to the centre's zone with :mod:`zoneinfo` (DST safe),
so nothing here reads a clock.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")


def parse_timezone(name: str) -> dt.tzinfo:
    """Return the zone; raises ``ValueError`` naming an unknown zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')") from None


def _parse_hhmm(text: str) -> int:
    m = _HHMM.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad time {text!r} (expected HH:MM)")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ValueError(f"bad time {text!r} (hours 00-24, minutes 00-59)")
    return hours * 60 + minutes


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Minutes since midnight, ``start`` inclusive, ``end`` exclusive; wraps if end <= start."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> "TimeRange":
        """Parse ``"HH:MM-HH:MM"``; raises ``ValueError``."""
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError(f"bad time range {text!r} (expected HH:MM-HH:MM)")
        start, end = _parse_hhmm(parts[0]), _parse_hhmm(parts[1])
        if start == end:
            raise ValueError(f"bad time range {text!r} (empty: start equals end)")
        return cls(start, end)

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_days(items: list[str]) -> frozenset[int]:
    """``["mon-fri", "sun"]`` → weekday numbers (Monday = 0); raises ``ValueError``."""
    result: set[int] = set()
    for item in items:
        word = item.strip().lower()
        if "-" in word:
            first, _, last = word.partition("-")
            if first not in DAYS or last not in DAYS:
                raise ValueError(f"bad day range {item!r} (use mon, tue, wed, thu, fri, sat, sun)")
            i, j = DAYS.index(first), DAYS.index(last)
            span = range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)]
            result.update(span)
        elif word in DAYS:
            result.add(DAYS.index(word))
        else:
            raise ValueError(f"bad day {item!r} (use mon, tue, wed, thu, fri, sat, sun)")
    return frozenset(result)


def _parse_date(text: str) -> dt.date:
    m = _DATE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad date {text!r} (expected YYYY-MM-DD)")
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as exc:
        raise ValueError(f"bad date {text!r} ({exc})") from None


class HolidayCalendar:
    """A set of holiday dates, yearly dates and date ranges."""

    __slots__ = ("dates", "yearly", "ranges")

    def __init__(self, entries: list[str] = ()) -> None:  # type: ignore[assignment]
        """Parse entries; raises ``ValueError`` naming the first bad one."""
        self.dates: set[dt.date] = set()
        self.yearly: set[tuple[int, int]] = set()
        self.ranges: list[tuple[dt.date, dt.date]] = []
        for entry in entries:
            self.add(entry)

    def add(self, entry: str) -> None:
        text = entry.strip()
        if ".." in text:
            first, _, last = text.partition("..")
            start, end = _parse_date(first), _parse_date(last)
            if end < start:
                raise ValueError(f"bad date range {entry!r} (ends before it starts)")
            self.ranges.append((start, end))
        elif _MONTH_DAY.fullmatch(text):
            month, day = int(text[:2]), int(text[3:])
            try:
                dt.date(2000, month, day)  # a leap year accepts 02-29
            except ValueError:
                raise ValueError(f"bad yearly date {entry!r} (expected MM-DD)") from None
            self.yearly.add((month, day))
        else:
            self.dates.add(_parse_date(text))

    def is_holiday(self, day: dt.date) -> bool:
        if day in self.dates or (day.month, day.day) in self.yearly:
            return True
        return any(start <= day <= end for start, end in self.ranges)


def local_time(wall_time: float, zone: dt.tzinfo) -> dt.datetime:
    """Unix seconds → aware datetime in the centre's zone."""
    return dt.datetime.fromtimestamp(wall_time, tz=zone)
