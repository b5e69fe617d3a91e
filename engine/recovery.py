"""Crash recovery: close what a killed engine left open, at the next start.

Theory of operation
-------------------
A ``cdr`` row is written once, when a call ends (:meth:`engine.calls.Call.cdr_row`),
so after ``kill -9`` (or a power cut) the calls that were up have no CDR and
the agents that were logged in have no closing ``agent_state_log`` row.  Two
things make that recoverable:

* the call path appends a ``call_journal`` row when it accepts a call
  (:func:`journal_row`), through the same batched writer as everything else:
  a trunk call when it arrives, a click-to-dial (``call.dial``,
  ``callback.dial``) call when the agent's phone is rung, a campaign call
  when the callee answers (``direction = "outbound"`` for the last two);
* at start-up, before the SIP listener opens, :func:`recover` runs once on its
  own SQLite connection, in one transaction:

  1. every journal row without a ``cdr`` row of the same ``call_id`` is an
     interrupted call: it gets a CDR with ``end_reason = "engine_restart"``,
     ``disposition = "interrupted"``, the agent it was with (the last
     ``agent_state_log`` row naming the call) and ``end_ts`` = the last moment
     the store saw the call (its latest ``queue_log`` / ``agent_state_log``
     row, else its start);
  2. every agent whose last ``agent_state_log`` row is not ``logged_out`` gets
     a ``logged_out`` row (``reason_code = "engine_restart"``, the previous
     state, stamped at that last row with ``duration_s = 0``: how long the
     state really lasted before the crash is unknown): agents come back
     logged out, the engine-wide state after a start;
  3. journal rows of calls that have a CDR are deleted (the journal only
     holds calls that are, or were at the crash, in progress).

Completed CDRs are never touched (the UNIQUE ``call_id`` also guarantees a
recovered call cannot get a second CDR).  SQLite in WAL mode with
``synchronous=NORMAL`` loses no committed transaction when the *process*
dies; what it can lose is the writer's current batch (``store.batch_interval_ms``):
a call whose journal row was still queued has no record at all, a call whose
CDR was still queued is recovered from its journal row as interrupted.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("engine.recovery")

END_REASON = "engine_restart"

@dataclass
class RecoveryReport:
    """What :func:`recover` closed."""

    calls: list[str] = field(default_factory=list)
    """Call ids given an ``engine_restart`` CDR."""
    agents: list[str] = field(default_factory=list)
    """Agents logged out (``tenant/number``)."""
    integrity: str = "ok"
    """``PRAGMA quick_check`` result."""


def journal_row(call: Any) -> dict[str, Any]:
    """The ``call_journal`` row of a call just accepted (an :class:`engine.calls.Call`)."""
    return {"call_id": call.call_id, "tenant": call.tenant, "direction": getattr(call, "direction", "") or "inbound",
            "caller_number": call.caller_number, "dialed_number": call.dialed_number, "trunk": call.trunk,
            "route": call.route, "queue": call.queue, "start_ts": call.start_ts}


def recover(path: str) -> RecoveryReport:
    """Close interrupted calls and agent sessions in the store at ``path`` (see module docstring).

    Safe to run on a clean store (it finds nothing) and idempotent.
    """
    report = RecoveryReport()
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        report.integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
        if report.integrity != "ok":
            logger.error("store %s failed its integrity check: %s", path, report.integrity)
        conn.execute("BEGIN IMMEDIATE")
        orphans = conn.execute(
            "SELECT j.* FROM call_journal j WHERE NOT EXISTS (SELECT 1 FROM cdr c WHERE c.call_id = j.call_id)"
            " GROUP BY j.call_id ORDER BY j.start_ts").fetchall()
        for j in orphans:
            last = conn.execute(
                "SELECT MAX(ts) FROM (SELECT ts FROM queue_log WHERE call_id = ?1"
                " UNION ALL SELECT ts FROM agent_state_log WHERE call_id = ?1)", (j["call_id"],)).fetchone()[0]
            agent = conn.execute("SELECT agent FROM agent_state_log WHERE call_id = ? ORDER BY ts DESC, id DESC"
                                 " LIMIT 1", (j["call_id"],)).fetchone()
            end_ts = max(j["start_ts"], last or j["start_ts"])
            conn.execute(
                "INSERT INTO cdr (call_id, tenant, direction, caller_number, dialed_number, trunk, route, queue,"
                " agent, start_ts, end_ts, disposition, end_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (j["call_id"], j["tenant"], j["direction"], j["caller_number"], j["dialed_number"], j["trunk"],
                 j["route"], j["queue"], agent[0] if agent else "", j["start_ts"], end_ts, "interrupted",
                 END_REASON))
            report.calls.append(j["call_id"])
        open_agents = conn.execute(
            "SELECT s.* FROM agent_state_log s JOIN (SELECT tenant, agent, MAX(id) AS id FROM agent_state_log"
            " GROUP BY tenant, agent) last ON s.id = last.id WHERE s.state != 'logged_out'").fetchall()
        for a in open_agents:
            conn.execute(
                "INSERT INTO agent_state_log (ts, tenant, agent, state, previous_state, duration_s, reason_code,"
                " extension) VALUES (?,?,?,?,?,?,?,?)",
                (a["ts"], a["tenant"], a["agent"], "logged_out", a["state"], 0.0, END_REASON, a["extension"]))
            report.agents.append(f"{a['tenant']}/{a['agent']}")
        conn.execute("DELETE FROM call_journal WHERE call_id IN (SELECT call_id FROM cdr)")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    if report.calls or report.agents:
        logger.warning("recovered after an unclean stop: %d call(s) closed with end_reason %s (%s), "
                       "%d agent(s) logged out (%s)", len(report.calls), END_REASON, ", ".join(report.calls),
                       len(report.agents), ", ".join(report.agents))
    return report
