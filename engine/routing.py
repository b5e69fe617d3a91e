"""Routing and recording decisions of the inbound call path (pure: wall time passed in).

Theory of operation
-------------------
*Business hours.*  A ``[[routes]]`` entry may name an ``[hours.NAME]``
table.  The table is open at a moment when its local time (the table's
``time_zone``, else ``[engine] time_zone``) falls in one of its ``rules``
(day names; ``start`` inclusive, ``end`` exclusive, ``"24:00"`` = end of
day) and the date is not one of its ``holidays``.  Outside it, the route's
``after_hours`` destinations are tried in order and the first one the call
path can serve wins (``queue:`` with a known queue, ``flow:`` with a
configured flow, ``voicemail:`` any mailbox, ``number:`` duty numbers when
the tenant has a trunk to dial them on; when every duty number fails the
entries after it are tried, engine/external.py); ``hangup`` or nothing
usable closes the call (the caller hears 480 Temporarily Unavailable).

*Recording policy* (``[recording]``): ``none`` records nothing, ``all``
every answered call, ``policy`` a call when it is not excluded
(``exclude_agents``, ``exclude_numbers`` on the caller number), is inside
one of ``windows`` (when any), and matches at least one include list that
is set (``include_agents``, ``include_groups`` (the agent's),
``include_queues``, ``include_trunks``, ``include_numbers`` on the caller
or the dialled number); with no include list set every call qualifies.
Number patterns are the config's: exact, or a prefix ending in ``*``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from engine.config import DAYS, Config, Destination, Route, parse_destination


def number_matches(pattern: str, number: str) -> bool:
    """Exact number, ``+49*`` prefix, or ``*`` (anything)."""
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_rules(rules: Iterable[Any], local: dt.datetime) -> bool:
    """True when ``local`` falls in one of the ``TimeRule`` s."""
    day = DAYS[local.weekday()]
    minute = local.hour * 60 + local.minute
    return any(day in r.days and _minutes(r.start) <= minute < _minutes(r.end) for r in rules)


def hours_open(cfg: Config, name: str, wall_time: float) -> bool:
    """Is ``[hours.name]`` open at Unix time ``wall_time``?  Unknown tables count as open."""
    hours = cfg.hours.get(name)
    if hours is None:
        return True
    local = dt.datetime.fromtimestamp(wall_time, ZoneInfo(hours.time_zone or cfg.engine.time_zone))
    if local.date().isoformat() in hours.holidays:
        return False
    return in_rules(hours.rules, local)


def find_route(cfg: Config, tenant: str, dialed: str) -> Route | None:
    """The first ``[[routes]]`` entry of ``tenant`` matching ``dialed``."""
    return next((r for r in cfg.routes if r.tenant == tenant and number_matches(r.dialed_number, dialed)), None)


def servable(cfg: Config, dest: Destination, tenant: str | None = None) -> bool:
    """Whether the call path can take a call to ``dest`` today (``number:`` needs a trunk of ``tenant``)."""
    if dest.kind == "queue":
        return dest.target in cfg.queues
    if dest.kind == "flow":
        return dest.target in cfg.flows
    if dest.kind == "number":
        return any(t.tenant == tenant for t in cfg.trunks.values()) if tenant is not None else bool(cfg.trunks)
    return dest.kind == "voicemail"


def choose_destination(cfg: Config, route: Route, wall_time: float) -> tuple[Destination | None, bool]:
    """``(destination or None, after_hours)`` for a call on ``route`` at ``wall_time``."""
    if not route.hours or hours_open(cfg, route.hours, wall_time):
        dest = parse_destination(route.destination)
        return (dest if servable(cfg, dest, route.tenant) else None), False
    for text in route.after_hours:
        dest = parse_destination(text)
        if servable(cfg, dest, route.tenant):
            return dest, True
    return None, True


def should_record(cfg: Config, *, agent: str, queue: str, trunk: str, caller_number: str, dialed_number: str,
                  wall_time: float) -> bool:
    """The ``[recording]`` decision for an answered call (see the module docstring)."""
    rec = cfg.recording
    if rec.mode == "none":
        return False
    if rec.mode == "all":
        return True
    if agent in rec.exclude_agents or any(number_matches(p, caller_number) for p in rec.exclude_numbers):
        return False
    if rec.windows:
        local = dt.datetime.fromtimestamp(wall_time, ZoneInfo(cfg.engine.time_zone))
        if not in_rules(rec.windows, local):
            return False
    groups = set(cfg.agents[agent].groups) if agent in cfg.agents else set()
    checks = [
        (rec.include_agents, agent in rec.include_agents),
        (rec.include_groups, bool(groups & set(rec.include_groups))),
        (rec.include_queues, queue in rec.include_queues),
        (rec.include_trunks, trunk in rec.include_trunks),
        (rec.include_numbers, any(number_matches(p, caller_number) or number_matches(p, dialed_number)
                                  for p in rec.include_numbers)),
    ]
    active = [hit for values, hit in checks if values]
    return not active or any(active)
