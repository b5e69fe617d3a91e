"""Real-time statistics: ``stats.realtime`` and the ``stats`` event every second.

Theory of operation
-------------------
A wallboard needs two kinds of numbers:

* **live** ones, read from the call path's memory at the moment of the
  snapshot: callers waiting and the longest current wait per queue, agents
  by state, each agent's state, time in state and reason code, calls in
  IVR / in queue / talking, media legs, registrations, free disk where the
  recordings go;
* **today's** KPIs (service level, average speed of answer, abandon rate
  per queue; calls, average handle time and occupancy per agent), which are
  the day-so-far figures of the KPI engine (:mod:`engine.kpi`, the same
  formulas as the interval reports, docs/kpis.md).  They are recomputed
  from the store by :class:`StatsService` in a worker thread every
  :data:`TODAY_REFRESH_S` seconds, so they lag the store by at most that
  (plus the store's write batching).

:func:`snapshot` builds the view one session may see: queues whose tenant
and groups it sees, agents it sees (an agent: itself), and the engine-wide
counters (media legs, registrations, disk) only for administrators and
reporting users.  :class:`StatsService` (an engine service) sends each
control connection that subscribed to ``stats`` (``events.subscribe
events=["stats"]``) its own snapshot every ``[reporting] stats_interval_s``
(default 1 s).  Because the content differs by session, the event is sent
per connection (cached per distinct scope within one tick) rather than
published once on the bus.

It also previews due callbacks to ready agents (``callback.preview``, see
:mod:`engine.callbacks`) and finishes dialled callbacks when their call
ends.  And it owns the *abandoned → callback* rule: with ``[reporting]
abandoned_to_callback = true`` every ``call.ended`` event with disposition
``abandoned`` in a queue adds an open ``callbacks`` row (once per call).
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

from engine.bus import BusEvent
from engine.config import GLOBAL_TENANT
from engine.kpi import Dimension, Period
from engine.ops import sees_engine_wide

logger = logging.getLogger(__name__)

TODAY_REFRESH_S = 5.0
"""How often today's KPIs are recomputed from the store."""


def _round(v: Any, nd: int = 3) -> Any:
    return round(v, nd) if isinstance(v, float) else v


def _centre(engine: Any) -> Any:
    for s in engine.services:
        if type(s).__name__ == "CallCentre":
            return s
    return None


def find_stats(engine: Any) -> "StatsService | None":
    for s in engine.services:
        if isinstance(s, StatsService):
            return s
    return None


def _free_disk(engine: Any) -> int | None:
    cfg = engine.config
    path = cfg.resolve_path(cfg.recording.path)
    while path and not _exists(path):
        parent = path.rsplit("/", 1)[0]
        if parent == path:
            break
        path = parent or "/"
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _exists(path: str) -> bool:
    import os
    return os.path.exists(path)


def snapshot(engine: Any, session: Any, today: dict[str, dict[str, dict[str, Any]]] | None = None,
             now: float | None = None) -> dict[str, Any]:
    """The realtime view ``session`` may see (see the module docstring)."""
    now = time.time() if now is None else now
    cfg = engine.config
    today = today or {"queue": {}, "agent": {}}
    centre = _centre(engine)
    agents_live = centre.agents if centre is not None else {}
    calls = list(centre.calls.values()) if centre is not None else []

    agents_out = []
    for number, conf in sorted(cfg.agents.items()):
        if not session.sees(tenant=conf.tenant, groups=set(conf.groups), agent=number):
            continue
        rec = agents_live.get(number)
        state = rec.state if rec is not None else "logged_out"
        since = rec.since if rec is not None else None
        t = today["agent"].get(number, {})
        agents_out.append({"agent": number, "tenant": conf.tenant, "name": conf.name, "state": state,
                           "time_in_state_s": _round(now - since) if since else None,
                           "reason_code": rec.reason_code if rec is not None else "",
                           "call_id": rec.call_id if rec is not None else "",
                           "calls_today": t.get("answered", 0),
                           "average_handle_time_s": _round(t.get("average_handle_time_s")),
                           "occupancy": _round(t.get("occupancy"))})

    queues_out = []
    for name, q in sorted(cfg.queues.items()):
        qgroups = set(q.groups) | {g for tier in q.tiers for g in tier.groups}
        if not session.sees(tenant=q.tenant, groups=qgroups):
            continue
        waiting = [c for c in calls if c.queue == name and c.state.value in ("queued", "offering")]
        by_state: dict[str, int] = {}
        for number, conf in cfg.agents.items():
            if conf.tenant == q.tenant and qgroups & set(conf.groups):
                rec = agents_live.get(number)
                st = rec.state if rec is not None else "logged_out"
                by_state[st] = by_state.get(st, 0) + 1
        t = today["queue"].get(name, {})
        queues_out.append({"queue": name, "tenant": q.tenant, "waiting": len(waiting),
                           "longest_wait_s": _round(max((now - c.queued_ts for c in waiting if c.queued_ts),
                                                        default=0.0)),
                           "agents_by_state": by_state,
                           "offered_today": t.get("offered", 0), "answered_today": t.get("answered", 0),
                           "service_level_today": _round(t.get("service_level")),
                           "average_speed_of_answer_s": _round(t.get("average_speed_of_answer_s")),
                           "abandon_rate_today": _round(t.get("abandon_rate"))})

    visible_calls = [c for c in calls if session.sees_tenant(c.tenant) and
                     (session.role != "agent" or (c.agent or c.offered_agent) == session.agent) and
                     (session.scope_kind not in ("department", "team") or session.sees(
                         tenant=c.tenant, agent=c.agent or c.offered_agent or "",
                         groups=set(cfg.queues[c.queue].groups) if c.queue in cfg.queues else set()))]
    states = [c.state.value for c in visible_calls]
    eng: dict[str, Any] = {"calls": len(visible_calls),
                           "in_ivr": sum(1 for c in visible_calls if c.state.value == "routing"),
                           "in_queue": sum(1 for s in states if s in ("queued", "offering")),
                           "talking": sum(1 for s in states if s == "talking")}
    if session.role in ("admin", "reporting") and sees_engine_wide(session, cfg):
        counters = engine.counters
        eng.update({"active_legs": int(counters["legs"]()), "registrations": int(counters["registrations"]()),
                    "recordings_free_bytes": _free_disk(engine)})
        if session.tenant == GLOBAL_TENANT and engine.store is not None:
            st = engine.store.status()
            eng["store_queued_rows"] = st.get("queued_rows")
    return {"ts": now, "queues": queues_out, "agents": agents_out, "engine": eng}


class StatsService:
    """Engine service: today's KPI cache, the per-second ``stats`` event, abandoned → callback."""

    def __init__(self, *, today_refresh_s: float = TODAY_REFRESH_S) -> None:
        self.engine: Any = None
        self.today: dict[str, dict[str, dict[str, Any]]] = {"queue": {}, "agent": {}}
        self.today_refresh_s = today_refresh_s
        self.ticks = 0
        self._tasks: list[asyncio.Task] = []
        self._callbacks_done: set[str] = set()
        self.dialled: set[str] = set()
        """Call ids of callbacks being dialled (``callback.dial``), finished on ``call.ended``."""
        self._previewed: set[tuple[int, str]] = set()

    async def start(self, engine: Any) -> None:
        self.engine = engine
        engine.bus.add(self)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._tick_loop()), loop.create_task(self._today_loop())]

    async def stop(self) -> None:
        if self.engine is not None:
            self.engine.bus.remove(self)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []

    # -- bus subscriber: abandoned calls become callbacks
    def deliver(self, event: BusEvent) -> None:
        if event.name != "call.ended":
            return
        d = event.data
        if d.get("call_id") in self.dialled:
            from engine.callbacks import finish_dialled

            self.dialled.discard(d["call_id"])
            task = asyncio.get_running_loop().create_task(
                finish_dialled(self.engine, d["call_id"], d.get("disposition") == "answered"))
            self._tasks.append(task)
            return
        if not self.engine.config.reporting.abandoned_to_callback:
            return
        if d.get("disposition") != "abandoned" or not d.get("queue") or not d.get("caller_number"):
            return
        call_id = d.get("call_id", "")
        if call_id in self._callbacks_done or self.engine.store is None:
            return
        self._callbacks_done.add(call_id)
        self.engine.store.append("callbacks", {"tenant": event.tenant, "call_id": call_id,
                                               "caller_number": d["caller_number"], "queue": d["queue"],
                                               "requested_ts": event.ts, "state": "open",
                                               "notes": "abandoned in queue"})

    async def refresh_today(self) -> None:
        """Recompute today's per-queue and per-agent KPIs from the store."""
        engine = self.engine
        store = engine.store
        path = getattr(store, "path", None)
        if store is None or not path or path == ":memory:":
            return
        from engine.reporting import build_report, open_reader, today_range

        since, until = today_range(engine.config.engine.time_zone, time.time())

        def work() -> dict[str, dict[str, dict[str, Any]]]:
            conn = open_reader(path)
            try:
                out = {}
                for dim in (Dimension.QUEUE, Dimension.AGENT):
                    rep = build_report(conn, engine.config, period=Period.DAY, dimension=dim, since=since,
                                       until=until, tenants=None)
                    out[dim.value] = {r[dim.value]: r for r in rep.rows()}
                return out
            finally:
                conn.close()

        self.today = await asyncio.get_running_loop().run_in_executor(None, work)

    async def preview_due(self, ready: set[str] | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Send ``callback.preview`` to each ready agent with a due callback
        (once per callback and ready period); returns the rows previewed.
        ``ready``: agent numbers that are ready (default: the call path's)."""
        if ready is None:
            centre = _centre(self.engine)
            ready = {n for n, rec in centre.agents.items() if rec.state == "ready"} if centre is not None else set()
        self._previewed = {(i, a) for (i, a) in self._previewed if a in ready}
        store = self.engine.store
        path = getattr(store, "path", None)
        if not ready or store is None or not path or path == ":memory:":
            return []
        from engine.callbacks import COLUMNS
        from engine.reporting import open_reader

        now = time.time() if now is None else now
        agents = sorted(ready)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM callbacks WHERE state IN ('assigned', 'scheduled') "
               f"AND assigned_agent IN ({', '.join('?' for _ in agents)}) "
               "AND COALESCE(scheduled_ts, requested_ts) <= ? ORDER BY COALESCE(scheduled_ts, requested_ts), id")

        def work() -> list[dict[str, Any]]:
            conn = open_reader(path)
            try:
                return [dict(zip(COLUMNS, r)) for r in conn.execute(sql, [*agents, now])]
            finally:
                conn.close()

        rows = await asyncio.get_running_loop().run_in_executor(None, work)
        sent = []
        for row in rows:
            key = (row["id"], row["assigned_agent"])
            if key in self._previewed or any(a == row["assigned_agent"] for _, a in self._previewed):
                continue  # one preview at a time per agent
            self._previewed.add(key)
            self.engine.bus.publish("callback.preview", row, tenant=row["tenant"], agent=row["assigned_agent"],
                                    queue=row["queue"] or None)
            sent.append(row)
        return sent

    async def _today_loop(self) -> None:
        while True:
            try:
                await self.refresh_today()
                await self.preview_due()
            except Exception:
                logger.exception("today's KPIs or callback previews could not be computed")
            await asyncio.sleep(self.today_refresh_s)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.engine.config.reporting.stats_interval_s)
            try:
                self.tick()
            except Exception:
                logger.exception("stats tick failed")

    def tick(self, now: float | None = None) -> int:
        """Send ``stats`` to every subscribed connection; returns how many got it."""
        self.ticks += 1
        now = time.time() if now is None else now
        sent = 0
        cache: dict[tuple, dict[str, Any]] = {}
        for conn in self.engine.bus.subscribers():
            subs = getattr(conn, "subscriptions", None)
            session = getattr(conn, "session", None)
            if not subs or session is None or getattr(conn, "closing", False):
                continue
            probe = BusEvent(name="stats", data={}, ts=now, tenant=session.tenant or "default")
            if not any(s.wants(probe) for s in subs.values()):
                continue
            key = (session.tenant, session.role, tuple(sorted(session.groups)), session.agent,
                   getattr(session, "scope_kind", ""), getattr(session, "scope_name", ""))
            data = cache.get(key)
            if data is None:
                data = cache[key] = snapshot(self.engine, session, self.today, now)
            conn.send_event("stats", data, ts=now)
            sent += 1
        return sent


__all__ = ["StatsService", "TODAY_REFRESH_S", "find_stats", "snapshot"]
