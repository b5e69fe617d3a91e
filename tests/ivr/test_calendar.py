"""Time ranges, days, holidays and zones."""
from __future__ import annotations

import datetime as dt

import pytest

from ivr.calendar import HolidayCalendar, TimeRange, local_time, parse_days, parse_timezone


def test_time_range_inclusive_start_exclusive_end_and_wrap():
    day = TimeRange.parse("08:00-18:00")
    assert day.contains(8 * 60) and day.contains(18 * 60 - 1) and not day.contains(18 * 60)
    night = TimeRange.parse("22:00-06:00")
    assert night.contains(23 * 60) and night.contains(0) and not night.contains(12 * 60)
    assert TimeRange.parse("00:00-24:00").contains(23 * 60 + 59)


@pytest.mark.parametrize("text, message", [
    ("8-18", "bad time '8' (expected HH:MM)"),
    ("08:00", "bad time range '08:00' (expected HH:MM-HH:MM)"),
    ("08:60-09:00", "bad time '08:60' (hours 00-24, minutes 00-59)"),
    ("24:30-01:00", "bad time '24:30' (hours 00-24, minutes 00-59)"),
    ("10:00-10:00", "bad time range '10:00-10:00' (empty: start equals end)"),
])
def test_time_range_errors(text, message):
    with pytest.raises(ValueError) as info:
        TimeRange.parse(text)
    assert str(info.value) == message


def test_days():
    assert parse_days(["mon-fri"]) == frozenset(range(5))
    assert parse_days(["fri-mon"]) == frozenset({4, 5, 6, 0})
    assert parse_days(["Sun", "wed"]) == frozenset({6, 2})
    with pytest.raises(ValueError, match="bad day range 'mon-funday'"):
        parse_days(["mon-funday"])


def test_holidays():
    cal = HolidayCalendar(["2026-12-24", "01-01", "02-29", "2026-08-01..2026-08-03"])
    assert cal.is_holiday(dt.date(2026, 12, 24)) and not cal.is_holiday(dt.date(2027, 12, 24))
    assert cal.is_holiday(dt.date(2031, 1, 1)) and cal.is_holiday(dt.date(2028, 2, 29))
    assert cal.is_holiday(dt.date(2026, 8, 3)) and not cal.is_holiday(dt.date(2026, 8, 4))
    for bad, message in [("2026-13-01", "bad date '2026-13-01' (month must be in 1..12)"),
                         ("13-01", "bad yearly date '13-01' (expected MM-DD)"),
                         ("2026-08-05..2026-08-01", "bad date range '2026-08-05..2026-08-01' (ends before it starts)"),
                         ("tomorrow", "bad date 'tomorrow' (expected YYYY-MM-DD)")]:
        with pytest.raises(ValueError) as info:
            HolidayCalendar([bad])
        assert str(info.value) == message


def test_zones_and_dst():
    paris = parse_timezone("Europe/Paris")
    # 2026-03-29 01:30 UTC is 03:30 in Paris (after the spring-forward jump)
    t = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone.utc).timestamp()
    assert local_time(t, paris).hour == 3
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        parse_timezone("Mars/Olympus")
