"""The engine side of the SIP abuse defences: config → guard, feedback, audit.

Theory of operation
-------------------
:func:`guard_config` turns ``[sip.abuse]`` into a :class:`sip.guard.GuardConfig`
and adds every trunk to the trusted networks (a trunk's ``host`` when it is
an IP address, and its ``accept_networks``): a carrier is never rate-limited
or banned, and never an "unknown source".  :class:`SipDefence` owns the
:class:`sip.guard.SourceGuard` of the call path and is its feedback loop:

* the registrar's ``auth_observer`` reports each digest decision: failures
  count towards a ban, a success makes the phone's address known;
* an INVITE from an address that is no trunk (answered 403 by the call path)
  counts as a failed authentication too (toll-fraud probing);
* every :class:`sip.events.SourceBanned` is written to the audit log
  (``op = "sip.ban"``, user ``sip``, role ``system``, peer = the source), so
  bans are queryable and exported with ``audit.export``; beyond 60 bans a
  minute (spoofed floods) the rest are summarised in one row.

Nothing here does IO except through ``engine.audit``; ``now`` is the loop's.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any

from engine.config import Config
from sip.events import SourceBanned
from sip.guard import GuardConfig, LogBudget, SourceGuard

logger = logging.getLogger("engine.security")


def trunk_networks(cfg: Config) -> tuple[str, ...]:
    """Every trunk's IP ``host`` (as /32 or /128) and ``accept_networks``."""
    nets: list[str] = []
    for trunk in cfg.trunks.values():
        try:
            nets.append(str(ipaddress.ip_network(trunk.host, strict=False)))
        except ValueError:
            pass  # a DNS name: only its accept_networks can be trusted
        nets.extend(trunk.accept_networks)
    return tuple(dict.fromkeys(nets))


def guard_config(cfg: Config) -> GuardConfig:
    """``[sip.abuse]`` as a :class:`GuardConfig`, trunks trusted."""
    a = cfg.sip.abuse
    trunks = trunk_networks(cfg)
    return GuardConfig(
        rate_per_s=a.rate_per_s, burst=a.burst, rate_violations_before_ban=a.rate_violations_before_ban,
        auth_failures_before_ban=a.auth_failures_before_ban, auth_failure_window_s=a.auth_failure_window_s,
        ban_s=a.ban_s, scanner_user_agents=a.scanner_user_agents, sweep_max_users=a.sweep_max_users,
        sweep_window_s=a.sweep_window_s, unknown_sources=a.unknown_sources,
        known_networks=a.known_networks + trunks, registration_networks=a.registration_networks,
        trusted_networks=a.trusted_networks + trunks, max_sources=a.max_sources)


class SipDefence:
    """The call path's guard plus its feedback (see the module docstring).

    Args:
        engine: the :class:`engine.app.Engine` (for ``audit``); may be None in tests.
        cfg: the configuration.
        now: the clock (``loop.time``).
    """

    def __init__(self, engine: Any, cfg: Config, now: Any) -> None:
        self.engine = engine
        self.guard = SourceGuard(guard_config(cfg))
        self._now = now
        self._audit_budget = LogBudget(per_minute=60)
        if engine is not None:
            engine.add_counter("sip_bans", lambda: len(self.guard.bans(self._now())))
            engine.add_counter("sip_dropped", lambda: self.guard.counters.dropped_rate
                               + self.guard.counters.dropped_banned + self.guard.counters.dropped_unknown)

    def auth_observed(self, source: tuple[str, int], user: str | None, accepted: bool) -> None:
        """The registrar's ``auth_observer``."""
        if accepted:
            self.guard.auth_succeeded(source[0], self._now())
        else:
            self.guard.auth_failed(source[0], self._now(), f"digest authentication of {user or '?'}")

    def not_a_trunk(self, source: tuple[str, int]) -> None:
        """An INVITE came from an address that is no trunk."""
        self.guard.auth_failed(source[0], self._now(), "INVITE from a non-trunk source")

    def banned(self, ev: SourceBanned) -> None:
        """Audit a ban (called with each SourceBanned the transport delivers)."""
        if self.engine is None:
            return
        now = self._now()
        held = self._audit_budget.summary(now)
        if held:  # a spoofed flood: one summary row instead of one row per address
            self.engine.audit(user="sip", role="system", tenant="*", op="sip.ban", args=f"{held} more bans",
                              result="not audited one by one (over 60 a minute)", peer="")
        if self._audit_budget.allow(now):
            self.engine.audit(user="sip", role="system", tenant="*", op="sip.ban",
                              args=f"{ev.ip} for {max(0.0, ev.until - now):.0f} s", result=ev.reason, peer=ev.ip)

    def snapshot(self) -> dict[str, Any]:
        """Counters and active bans (``engine.status`` / ``sip.bans``)."""
        now = self._now()
        return {"counters": self.guard.counters.as_dict(), "sources": self.guard.source_count,
                "bans": [{"ip": ip, "remaining_s": round(left, 1), "reason": why}
                         for ip, left, why in self.guard.bans(now)]}
