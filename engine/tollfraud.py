"""Toll-fraud guards: which numbers a tenant may call out to, and how much.

Theory of operation
-------------------
Toll fraud is the expensive end of SIP abuse: an attacker who reaches an
outbound path (a hijacked agent login, a transfer op, an IVR ``number:``
destination, a forward on ring-no-answer) calls premium-rate or
international numbers for hours.  :class:`TollFraudPolicy` is the one place
every *outgoing* leg is checked before its INVITE leaves: outbound calls,
external (blind or attended) transfers and forwards.  It is pure: the wall
time is passed in, nothing is read or written but its own counters.

Per tenant (``[toll_fraud.TENANT]``, :class:`engine.config.TollFraud`):

1. ``deny`` patterns are checked first: a match is refused whatever else
   allows it (premium rate ``+49900*``, satellite ``+881*``);
2. the allow list is ``roles[ROLE]`` when the role has one, else ``allow``
   (default ``["*"]``); a number matching none is refused.  Roles are the
   control roles (``admin``, ``supervisor``, ``agent``, ``reporting``) plus
   ``ivr`` (flow destinations) and ``system`` (forwards the engine decides);
3. ``max_concurrent_outbound`` (0: unlimited): outgoing legs up at once;
4. ``max_calls_per_day`` (0: unlimited): legs started in the current local
   day (``[engine] time_zone``); the count restarts at local midnight.

A tenant without a ``[toll_fraud.TENANT]`` table is unrestricted (numbers and
caps); :meth:`TollFraudPolicy.unguarded_tenants` names them so the engine
can warn at start-up.  Patterns are the config's number patterns (exact,
prefix ``+49*``, ``*``) matched against the number as it will be sent
(:func:`engine.routing.number_matches`); characters other than digits, ``+``,
``*`` and ``#`` are refused outright (no ``sip:`` URIs smuggled as numbers).

Use::

    decision = policy.start(call_id, tenant, role, number, wall_time)  # before the INVITE
    if not decision.allowed: refuse with decision.code / decision.reason
    ...
    policy.finish(call_id)  # when the leg ends, whatever the outcome

:meth:`check` answers the same question without reserving (for UIs and
validation of transfer targets); :meth:`require` raises
:class:`engine.errors.Forbidden` / :class:`engine.errors.Busy` for op handlers.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

from engine.errors import Busy, Forbidden
from engine.routing import number_matches

logger = logging.getLogger("engine.tollfraud")

_NUMBER_RE = re.compile(r"\+?[0-9*#]{1,32}")
ROLES = ("admin", "supervisor", "agent", "reporting", "ivr", "system")


@dataclass(frozen=True, slots=True)
class TollDecision:
    """The answer for one outgoing number."""

    allowed: bool
    code: str = ""
    """``""`` when allowed, else ``"forbidden"`` (number) or ``"busy"`` (a cap)."""
    reason: str = ""
    """Why it was refused, naming the tenant, number and rule."""


ALLOWED = TollDecision(True)


class TollFraudPolicy:
    """Per-tenant outbound patterns and caps (see the module docstring).

    Args:
        policies: ``tenant -> engine.config.TollFraud`` (``Config.toll_fraud``).
        time_zone: IANA zone whose local day bounds ``max_calls_per_day``.
        live_outbound: ``tenant -> outgoing legs up now``, when the engine
            counts them itself (call control's ``Legs``); None: legs counted
            by :meth:`start` / :meth:`finish`.
    """

    def __init__(self, policies: Mapping[str, Any], time_zone: str = "UTC",
                 live_outbound: Callable[[str], int] | None = None) -> None:
        self.policies = dict(policies)
        self.zone = ZoneInfo(time_zone)
        self.live_outbound = live_outbound
        self._active: dict[str, str] = {}  # call_id -> tenant
        self._concurrent: dict[str, int] = {}
        self._daily: dict[str, tuple[str, int]] = {}  # tenant -> (local date, count)

    def unguarded_tenants(self, tenants: set[str]) -> list[str]:
        """The tenants of ``tenants`` without a policy (unrestricted), sorted."""
        return sorted(t for t in tenants if t not in self.policies)

    # ------------------------------------------------------------ decisions
    def check(self, tenant: str, role: str, number: str, wall_time: float) -> TollDecision:
        """May ``role`` of ``tenant`` call ``number`` now?  Reserves nothing."""
        if not _NUMBER_RE.fullmatch(number):
            return TollDecision(False, "forbidden", f"{number!r} is not a phone number")
        pol = self.policies.get(tenant)
        if pol is None:
            return ALLOWED
        for pattern in pol.deny:
            if number_matches(pattern, number):
                return TollDecision(False, "forbidden",
                                    f"tenant {tenant!r}: {number} matches denied pattern {pattern!r}")
        allow = pol.roles.get(role, pol.allow)
        if not any(number_matches(p, number) for p in allow):
            which = f"roles.{role}" if role in pol.roles else "allow"
            return TollDecision(False, "forbidden",
                                f"tenant {tenant!r}: {number} is outside the {which} patterns of role {role!r}")
        if pol.max_concurrent_outbound and self.concurrent(tenant) >= pol.max_concurrent_outbound:
            return TollDecision(False, "busy", f"tenant {tenant!r}: {pol.max_concurrent_outbound} outbound "
                                               "calls are already up (max_concurrent_outbound)")
        if pol.max_calls_per_day and self.calls_today(tenant, wall_time) >= pol.max_calls_per_day:
            return TollDecision(False, "busy", f"tenant {tenant!r}: {pol.max_calls_per_day} outbound calls "
                                               "today (max_calls_per_day)")
        return ALLOWED

    def start(self, call_id: str, tenant: str, role: str, number: str, wall_time: float) -> TollDecision:
        """:meth:`check`, and when allowed count the leg (concurrent and today).

        Call :meth:`finish` with the same ``call_id`` when the leg ends.
        A ``call_id`` already started is refused (``conflict`` is the caller's bug).
        """
        if call_id in self._active:
            raise ValueError(f"outgoing leg {call_id!r} already counted")
        decision = self.check(tenant, role, number, wall_time)
        if not decision.allowed:
            logger.warning("[%s] outgoing call to %s refused: %s", call_id, number, decision.reason)
            return decision
        self._active[call_id] = tenant
        self._concurrent[tenant] = self._concurrent.get(tenant, 0) + 1
        self.count_call(tenant, wall_time)
        return decision

    def finish(self, call_id: str) -> None:
        """The leg ``call_id`` ended (unknown ids are ignored: refused legs never started)."""
        tenant = self._active.pop(call_id, None)
        if tenant is not None:
            self._concurrent[tenant] -= 1

    def require(self, tenant: str, role: str, number: str, wall_time: float) -> None:
        """:meth:`check` for op handlers: raises Forbidden or Busy with the reason."""
        decision = self.check(tenant, role, number, wall_time)
        if not decision.allowed:
            raise (Busy if decision.code == "busy" else Forbidden)(decision.reason)

    # ------------------------------------------------------------ counters
    def concurrent(self, tenant: str) -> int:
        """Outgoing legs of ``tenant`` up now."""
        if self.live_outbound is not None:
            return self.live_outbound(tenant)
        return self._concurrent.get(tenant, 0)

    def count_call(self, tenant: str, wall_time: float) -> None:
        """Count one outgoing leg in today's total (when :meth:`start` is not used)."""
        day = self._day(wall_time)
        seen_day, count = self._daily.get(tenant, (day, 0))
        self._daily[tenant] = (day, (count if seen_day == day else 0) + 1)

    def calls_today(self, tenant: str, wall_time: float) -> int:
        """Outgoing legs of ``tenant`` started in the local day of ``wall_time``."""
        day, count = self._daily.get(tenant, ("", 0))
        return count if day == self._day(wall_time) else 0

    def seed_today(self, tenant: str, count: int, wall_time: float) -> None:
        """Set today's count (at start-up, from the store's outbound CDRs of today)."""
        self._daily[tenant] = (self._day(wall_time), count)

    def _day(self, wall_time: float) -> str:
        return dt.datetime.fromtimestamp(wall_time, self.zone).date().isoformat()

    def day_start(self, wall_time: float) -> float:
        """Unix time of the local midnight that began the day of ``wall_time``."""
        local = dt.datetime.fromtimestamp(wall_time, self.zone)
        return dt.datetime.combine(local.date(), dt.time(), tzinfo=self.zone).timestamp()


def seed_from_store(policy: TollFraudPolicy, path: str, wall_time: float) -> dict[str, int]:
    """Seed today's ``max_calls_per_day`` counts from the store at ``path`` (engine start).

    Counts, per tenant with a policy, the ``outbound`` CDRs (click-to-dial,
    campaign and callback calls, including those :func:`engine.recovery.recover`
    just closed as interrupted) started since the local midnight of
    ``wall_time``, so an engine restart does not reset the daily cap.
    Returns ``tenant -> count``.  Runs on its own connection (a worker thread).
    """
    import sqlite3

    counts: dict[str, int] = {}
    tenants = sorted(t for t, pol in policy.policies.items() if pol.max_calls_per_day)
    if not tenants:
        return counts
    since = policy.day_start(wall_time)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        for tenant in tenants:
            n = conn.execute("SELECT COUNT(*) FROM cdr WHERE tenant = ? AND direction = 'outbound' AND start_ts >= ?",
                             (tenant, since)).fetchone()[0]
            policy.seed_today(tenant, int(n), wall_time)
            counts[tenant] = int(n)
    finally:
        conn.close()
    if any(counts.values()):
        logger.info("toll fraud: today's outbound calls so far: %s",
                    ", ".join(f"{t} {n}" for t, n in counts.items()))
    return counts


def role_of(agent: str, purpose: str, role: str = "") -> str:
    """The policy role of a leg call control dials (``engine.legs.DialCheck``).

    ``role`` given (the control user who caused the leg: ``call.dial``,
    ``callback.dial``) wins; else ``ivr*`` purposes are the IVR's (``ivr``);
    a leg dialled on an agent's behalf is the ``agent`` role's; anything
    else (forwards, dialer) is ``system``.
    """
    if role:
        return role
    if purpose.startswith("ivr"):
        return "ivr"
    return "agent" if agent else "system"


def dial_policy(policy: TollFraudPolicy, clock: Callable[[], float]) -> Callable[[Any], str | None]:
    """``centre.dial_policy`` for ``engine.legs``: a refusal reason, or None to dial.

    Every allowed leg counts towards ``max_calls_per_day``; concurrency is the
    policy's ``live_outbound`` (the live trunk legs).
    """
    def check(dc: Any) -> str | None:
        now = clock()
        decision = policy.check(dc.tenant, role_of(dc.agent, dc.purpose, getattr(dc, "role", "")), dc.number, now)
        if not decision.allowed:
            logger.warning("[%s] %s call to %s via %s refused: %s", dc.call_id, dc.purpose or "outbound",
                           dc.number, dc.trunk, decision.reason)
            return decision.reason
        policy.count_call(dc.tenant, now)
        return None
    return check
