"""Business hours, after-hours destinations and the recording policy (engine/routing.py)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from engine.config import parse_config
from engine.passwords import hash_password
from engine.routing import choose_destination, find_route, hours_open, should_record

H = hash_password("x", n=1024)
BASE = f"""
[engine]
time_zone = "Europe/Berlin"

[skills.sales]
[groups.sales]
[groups.support]

[agents.1001]
name = "A"
password = "{H}"
groups = ["sales"]
skills = {{ sales = 5 }}

[agents.1002]
name = "B"
password = "{H}"
groups = ["support"]
skills = {{ sales = 5 }}

[queues.sales]
groups = ["sales"]

[queues.night]
groups = ["sales"]

[hours.office]
rules = [ {{ days = ["mon", "tue", "wed", "thu", "fri"], start = "08:00", end = "18:00" }} ]
holidays = ["2026-12-25"]

[[routes]]
dialed_number = "+4930555100"
destination = "queue:sales"
hours = "office"
after_hours = ["number:+4915100000001", "voicemail:sales", "queue:night"]

[[routes]]
dialed_number = "+4930555*"
destination = "queue:sales"
hours = "office"
after_hours = ["hangup"]
"""


def at(y, mo, d, h, mi=0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def test_hours_rules_zone_and_holidays():
    cfg = parse_config(BASE)
    assert hours_open(cfg, "office", at(2026, 11, 23, 8, 0))        # Monday 08:00 local: open
    assert not hours_open(cfg, "office", at(2026, 11, 23, 7, 59))
    assert not hours_open(cfg, "office", at(2026, 11, 23, 18, 0))   # end is exclusive
    assert not hours_open(cfg, "office", at(2026, 11, 22, 12, 0))   # Sunday
    assert not hours_open(cfg, "office", at(2026, 12, 25, 12, 0))   # holiday (a Friday)
    assert hours_open(cfg, "missing", at(2026, 12, 25, 12, 0))


def test_after_hours_takes_first_servable_destination():
    cfg = parse_config(BASE)
    route = find_route(cfg, "default", "+4930555100")
    assert route is not None and route.dialed_number == "+4930555100"
    dest, after = choose_destination(cfg, route, at(2026, 11, 23, 10))
    assert (str(dest), after) == ("queue:sales", False)
    dest, after = choose_destination(cfg, route, at(2026, 11, 23, 22))
    assert (str(dest), after) == ("voicemail:sales", True)
    prefix = find_route(cfg, "default", "+4930555999")
    assert prefix is not None and prefix.dialed_number == "+4930555*"
    assert choose_destination(cfg, prefix, at(2026, 11, 23, 22)) == (None, True)
    assert find_route(cfg, "default", "+331234") is None
    assert find_route(cfg, "acme", "+4930555100") is None


def test_recording_modes_and_policy():
    kw = dict(agent="1001", queue="sales", trunk="carrier", caller_number="+4917000001",
              dialed_number="+4930555100", wall_time=at(2026, 11, 23, 10))
    assert not should_record(parse_config(BASE), **kw)                      # default mode none
    assert should_record(parse_config(BASE + '[recording]\nmode = "all"\n'), **kw)
    pol = BASE + '[recording]\nmode = "policy"\n'
    assert should_record(parse_config(pol), **kw)                           # no include list: all
    assert should_record(parse_config(pol + 'include_groups = ["sales"]\n'), **kw)
    assert not should_record(parse_config(pol + 'include_groups = ["support"]\n'), **kw)
    assert should_record(parse_config(pol + 'include_groups = ["support"]\ninclude_numbers = ["+4917*"]\n'), **kw)
    assert not should_record(parse_config(pol + 'exclude_numbers = ["+4917*"]\n'), **kw)
    assert not should_record(parse_config(pol + 'exclude_agents = ["1001"]\n'), **kw)
    windows = pol + 'windows = [ { days = ["mon"], start = "09:00", end = "12:00" } ]\n'
    assert should_record(parse_config(windows), **kw)
    assert not should_record(parse_config(windows), **{**kw, "wall_time": at(2026, 11, 23, 13)})


def test_duty_numbers_need_a_trunk_of_the_tenant():
    with_trunk = parse_config(BASE + '\n[trunks.carrier]\nhost = "192.0.2.1"\n')
    route = find_route(with_trunk, "default", "+4930555100")
    dest, after = choose_destination(with_trunk, route, at(2026, 11, 23, 22))
    assert (str(dest), after) == ("number:+4915100000001", True)
    duty = parse_config(BASE.replace("number:+4915100000001", "number:+4915100000001$+4915100000002")
                        + '\n[trunks.carrier]\nhost = "192.0.2.1"\n')
    dest, _ = choose_destination(duty, find_route(duty, "default", "+4930555100"), at(2026, 11, 23, 22))
    assert dest.target == "+4915100000001$+4915100000002"
