"""The outbound campaign service: dialer cores, the store and a call port, on the event loop.

Theory of operation
-------------------
:class:`CampaignService` is an engine service (``async start(engine)`` /
``async stop()``).  At start it loads

* the ``dnc`` table into a :class:`engine.campaign.DncList`;
* every campaign: those of the config (``[campaigns.NAME]``) and those
  created at run time (``campaign.create``, stored in ``campaigns`` with
  their definition; the latest row of a name gives its state), each with
  its records and log replayed (:meth:`CampaignBook.replay`).  Attempts that
  were in progress when the engine stopped are closed as ``interrupted`` and
  not dialled again.  A campaign that was ``running`` runs again; a config
  campaign with ``autostart = true`` starts.

Then one task wakes every ``tick_s`` (and at once after any call event)
and runs each core's :meth:`DialerCore.tick` with the campaign's agent
counts from the port.  Actions are carried out in order; for
:class:`PlaceCall` the ``attempt`` rows of the whole tick are appended and
**flushed** (:meth:`Store.aflush`) before any INVITE leaves, so a crash
after the INVITE can never lose the fact that the number was dialled.

Everything that touches SIP, media or the ACD goes through a
:class:`CallPort`: ``dial``, ``agent_counts``, ``connect_agent``,
``start_amd``, ``play``, ``run_flow``, ``hangup``.  The port reports
progress back through :meth:`CampaignService.on_progress` (``answered``,
``failed``, ``amd``, ``connected``, ``dtmf``, ``ended``).  :class:`engine.outbound_port.
CentrePort` is the port of the real call path (engine/legs.py trunk legs,
the ACD, the media engine); tests may give a simulated carrier.

Screening: before every attempt the number is checked against the DNC list
and then every hook in :attr:`CampaignService.screen_hooks` (callables
``(tenant, campaign, number) -> reason | None``): the integrator appends
the inbound screening black list there.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable, Protocol

from engine.campaign import CampaignBook, CampaignState, CampaignTrigger, DncList, ScreenHook
from engine.campaign_edit import changed_keys, check_delete, plan_update
from engine.config import Campaign, build_campaign
from engine.dialer import (Action, AgentCounts, CampaignCompleted, ConnectAgent, DialerCore, Hangup, PersistRows,
                           PlaceCall, PlayMessage, PreviewOffered, RunFlow, StartAmd)
from engine.errors import Conflict, NotFound, StoreError, Unavailable

logger = logging.getLogger(__name__)

PAGE = 5000


class CallPort(Protocol):
    """What the dialer needs from SIP, media and the ACD (see the module docstring)."""

    def bind(self, progress: Callable[..., None]) -> None: ...
    def dial(self, action: PlaceCall, campaign: Campaign) -> None: ...
    def agent_counts(self, campaign: Campaign) -> AgentCounts: ...
    def connect_agent(self, action: ConnectAgent, campaign: Campaign) -> None: ...
    def start_amd(self, call_id: str) -> None: ...
    def play(self, action: PlayMessage) -> None: ...
    def run_flow(self, action: RunFlow, campaign: Campaign) -> None: ...
    def hangup(self, call_id: str, reason: str) -> None: ...


def _select_all(store: Any, table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = store.select(table, where, limit=PAGE, offset=len(rows))
        rows += page
        if len(page) < PAGE:
            return rows


class CampaignService:
    """Runs every campaign of the engine (see the module docstring)."""

    def __init__(self, port: CallPort | None = None, *, tick_s: float = 0.5) -> None:
        self.port = port
        self.tick_s = tick_s
        self.engine: Any = None
        self.cores: dict[tuple[str, str], DialerCore] = {}
        self.sources: dict[tuple[str, str], str] = {}      # "config" or "runtime"
        self.definitions: dict[tuple[str, str], dict[str, Any]] = {}   # runtime: stored definition
        self.deleted: dict[tuple[str, str], Campaign] = {}  # soft-deleted: last definition (reports)
        self.creators: dict[tuple[str, str], str] = {}     # runtime campaigns: the control user who created it
        self.dnc = DncList()
        self.screen_hooks: list[ScreenHook] = []
        self.on_preview: Callable[[PreviewOffered, DialerCore], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._call_core: dict[str, DialerCore] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.dial_errors = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self, engine: Any) -> None:
        self.engine = engine
        if self.port is None:
            self.port = _default_port(engine)
        if self.port is not None and hasattr(self.port, "bind"):
            self.port.bind(self.on_progress)
        store = engine.store
        loop = asyncio.get_running_loop()
        if store is not None:
            self.dnc.apply_rows(await loop.run_in_executor(None, _select_all, store, "dnc", {}))
        await loop.run_in_executor(None, self._load_all)
        engine.add_snapshot("campaigns", self.snapshot)
        centre = next((svc for svc in engine.services if hasattr(svc, "screened")), None)
        if centre is not None:
            self.screen_hooks.append(screening_block_hook(lambda: centre.screened.screening))
        self._task = loop.create_task(self._run(), name="campaigns")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.port is not None and hasattr(self.port, "close"):
            self.port.close()

    def _load_all(self) -> None:
        store = self.engine.store
        cfg = self.engine.config
        defs: dict[tuple[str, str], tuple[Campaign, str]] = {}
        states: dict[tuple[str, str], str] = {}
        for name, c in cfg.campaigns.items():
            defs[(c.tenant, name)] = (c, "config")
        if store is not None:
            for row in _select_all(store, "campaigns", {}):
                key = (row["tenant"], row["name"])
                states[key] = row["state"]
                definition = json.loads(row["definition"] or "{}")
                if row["source"] == "runtime" and row["state"] == "created":
                    self.creators[key] = row.get("user") or ""
                # The first row ("created") and every campaign.update row carry the whole definition.
                if row["source"] == "runtime" and (row["state"] == "created" or definition):
                    try:
                        defs[key] = (build_campaign(cfg, row["name"], definition), "runtime")
                        self.definitions[key] = {k: v for k, v in definition.items() if k != "tenant"}
                    except Exception as exc:  # a definition the current config no longer accepts
                        logger.error("campaign %s/%s cannot be loaded: %s", *key, exc)
        now = time.time()
        for key, (c, source) in defs.items():
            if source == "runtime" and states.get(key) == "deleted":
                self.deleted[key] = c
                self.definitions.pop(key, None)
                continue
            core = self._new_core(c, source)
            if store is not None:
                where = {"tenant": c.tenant, "campaign": c.name}
                rows = core.book.replay(_select_all(store, "campaign_records", where),
                                        _select_all(store, "campaign_log", where), now)
                for row in rows:
                    store.append("campaign_log", row)
            state = states.get(key)
            if state in ("running", "paused", "stopped", "completed"):
                core.book.state = CampaignState(state)
            elif c.autostart and source == "config":
                self._persist_state(core, core.book.transition(CampaignTrigger.START, now, "autostart"))
            logger.info("campaign %s/%s loaded (%s, %s): %s", c.tenant, c.name, source, core.book.state.value,
                        core.book.counts())

    def _new_core(self, c: Campaign, source: str) -> DialerCore:
        core = DialerCore(CampaignBook(c, default_zone=self.engine.config.engine.time_zone))
        core.screen = self.screen  # type: ignore[method-assign]
        self.cores[(c.tenant, c.name)] = core
        self.sources[(c.tenant, c.name)] = source
        return core

    # ------------------------------------------------------------ screening

    def screen(self, tenant: str, campaign: str, number: str) -> str | None:
        """Why ``number`` may not be called now (DNC list, then hooks), or ``None``."""
        reason = self.dnc.check(tenant, campaign, number)
        if reason:
            return reason
        for hook in self.screen_hooks:
            try:
                reason = hook(tenant, campaign, number)
            except Exception:  # a broken hook must not let a number through
                logger.exception("screen hook failed for %s: blocking", number)
                return "screen_error"
            if reason:
                return reason
        return None

    # ------------------------------------------------------------ management (ops)

    def core(self, tenant: str, name: str) -> DialerCore:
        core = self.cores.get((tenant, name))
        if core is None:
            raise NotFound(f"no campaign {name!r} in tenant {tenant!r}")
        return core

    def create(self, tenant: str, name: str, definition: dict[str, Any], user: str = "") -> DialerCore:
        """Validate and add a runtime campaign (``Conflict`` if the name exists)."""
        if (tenant, name) in self.cores:
            raise Conflict(f"campaign {name!r} already exists in tenant {tenant!r}")
        if (tenant, name) in self.deleted:
            raise Conflict(f"campaign {name!r} of tenant {tenant!r} was deleted and its log is kept under "
                           "that name: choose another name")
        c = build_campaign(self.engine.config, name, {**definition, "tenant": tenant})
        core = self._new_core(c, "runtime")
        self.creators[(tenant, name)] = user
        definition = {k: v for k, v in definition.items() if k != "tenant"}
        self.definitions[(tenant, name)] = definition
        self._append("campaigns", {"tenant": tenant, "name": name, "ts": time.time(), "state": "created",
                                   "source": "runtime", "user": user, "definition": {**definition, "tenant": tenant}})
        return core

    def in_progress(self, core: DialerCore) -> int:
        """Calls of ``core`` in progress plus its preview records held (edits and deletes wait for them)."""
        return len(core.live) + len(core.preview_held)

    def update(self, core: DialerCore, changes: dict[str, Any], user: str = "") -> dict[str, Any]:
        """Apply ``campaign.update`` ``changes`` (rules: engine/campaign_edit.py); returns the changed keys."""
        key = (core.book.tenant, core.book.name)
        old = self.definitions.get(key, {})
        merged = plan_update(core.book.name, old, changes, core.book.state, self.in_progress(core),
                             source=self.sources[key])
        c = build_campaign(self.engine.config, core.book.name, {**merged, "tenant": core.book.tenant})
        changed = changed_keys(old, merged)
        if not changed:
            return changed
        core.reconfigure(c)
        self.definitions[key] = merged
        now = time.time()
        self._append("campaigns", {"tenant": key[0], "name": key[1], "ts": now, "state": core.book.state.value,
                                   "source": "runtime", "user": user, "definition": {**merged, "tenant": key[0]}})
        self._append("campaign_log", core.book.log_row(now, "updated", data={"changes": changed, "user": user}))
        logger.info("campaign %s/%s updated by %s: %s", *key, user or "?", ", ".join(changed))
        self._wake.set()
        return changed

    def delete(self, core: DialerCore, user: str = "") -> dict[str, Any]:
        """Soft-delete ``core`` (rules: engine/campaign_edit.py): it leaves the engine, its rows stay."""
        key = (core.book.tenant, core.book.name)
        check_delete(core.book.name, core.book.state, self.in_progress(core), source=self.sources[key])
        counts = core.book.counts()
        now = time.time()
        self._persist_state(core, core.book.transition(CampaignTrigger.DELETE, now, user))
        self._append("campaign_log", core.book.log_row(now, "deleted", data={"user": user, "records": counts}))
        del self.cores[key]
        self.sources.pop(key, None)
        self.definitions.pop(key, None)
        self.deleted[key] = core.campaign
        logger.info("campaign %s/%s deleted by %s (records and log kept): %s", *key, user or "?", counts)
        return {"name": key[1], "tenant": key[0], "state": "deleted", "records": counts}

    def creator_role(self, campaign: Campaign) -> str:
        """Toll-fraud role of a campaign's legs (engine.legs.DialCheck.role): the role of the control
        user who created it at run time (``campaign.create``); ``""`` for configured campaigns
        (then ``system``, or ``agent`` for a leg dialled on an agent's behalf)."""
        user = self.creators.get((campaign.tenant, campaign.name), "")
        conf = self.engine.config.users.get(user) if user else None
        return conf.role if conf is not None else ""

    def transition(self, core: DialerCore, trigger: CampaignTrigger, user: str = "") -> None:
        if trigger is CampaignTrigger.START and self.port is None:
            raise Unavailable("no call path to dial with (configure a trunk)")
        self._persist_state(core, core.book.transition(trigger, time.time(), user))
        if trigger is CampaignTrigger.STOP:
            for call_id, owner in list(self._call_core.items()):
                if owner is core and self.port is not None:
                    self.port.hangup(call_id, "campaign_stopped")
        self._wake.set()

    def _persist_state(self, core: DialerCore, row: dict[str, Any]) -> None:
        row.update(source=self.sources[(core.book.tenant, core.book.name)])
        self._append("campaigns", row)

    def import_csv(self, core: DialerCore, text: str, batch: str = "") -> dict[str, Any]:
        res = core.book.import_csv(text, time.time(), batch)
        for row in res.rows:
            self._append("campaign_records", row)
        self._wake.set()
        return {"imported": res.imported, "rejected": [{"line": ln, "reason": r} for ln, r in res.rejected],
                "records": core.book.counts()}

    def dnc_change(self, tenant: str, number: str, action: str, campaign: str = "", reason: str = "",
                   source: str = "") -> None:
        if action == "add":
            self.dnc.add(tenant, number, campaign, reason)
        else:
            self.dnc.remove(tenant, number, campaign)
        self._append("dnc", {"tenant": tenant, "number": number if number.endswith("*") else
                             _normal(number), "ts": time.time(), "action": action, "campaign": campaign,
                             "source": source, "reason": reason})

    def status(self, core: DialerCore) -> dict[str, Any]:
        live = [{"call_id": lv.call_id, "record_id": lv.record_id, "answered": lv.answered_ts is not None,
                 "agent": lv.agent, "amd": lv.amd, "confirm": lv.confirm} for lv in core.live.values()]
        return {**core.book.describe(), "source": self.sources[(core.book.tenant, core.book.name)],
                "pacing": core.pacer.stats().describe(), "live_calls": live,
                "preview_held": {rid: agent for rid, (agent, _) in core.preview_held.items()}}

    def snapshot(self, session: Any) -> list[dict[str, Any]]:
        return [c.book.describe() for c in self.cores.values() if session.sees(tenant=c.book.tenant)]

    # ------------------------------------------------------------ the loop

    def _append(self, table: str, row: dict[str, Any]) -> None:
        store = self.engine.store
        if store is not None:
            store.append(table, row)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.tick_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one tick must not stop every campaign
                logger.exception("campaign tick failed")

    async def tick_all(self) -> None:
        """One round: every core's tick, attempts flushed before their INVITEs."""
        if self.port is None:
            return
        now = time.time()
        placing: list[tuple[DialerCore, PlaceCall]] = []
        for core in list(self.cores.values()):
            if core.book.state is not CampaignState.RUNNING and not core.preview_held:
                continue
            counts = self.port.agent_counts(core.campaign)
            for action in core.tick(now, counts):
                if isinstance(action, PlaceCall):
                    placing.append((core, action))
                else:
                    self._perform(core, action)
        await self._place_all(placing)

    async def place(self, core: DialerCore, actions: list[Action]) -> None:
        """Carry out ``actions`` of ``core``; calls are placed after their attempt rows are flushed."""
        placing = []
        for action in actions:
            if isinstance(action, PlaceCall):
                placing.append((core, action))
            else:
                self._perform(core, action)
        await self._place_all(placing)

    async def _place_all(self, placing: list[tuple[DialerCore, PlaceCall]]) -> None:
        if not placing:
            return
        assert self.port is not None
        states = {id(core): core.book.state for core, _ in placing}
        for core, action in placing:
            self._append("campaign_log", action.attempt_row)
        store = self.engine.store
        if store is not None:
            try:
                await store.aflush()
            except StoreError as exc:
                # Not durable: do not dial.  The attempts stay open and close as
                # "interrupted" at the next start, never dialled twice.
                logger.error("attempt rows not flushed (%s): %d calls not placed", exc, len(placing))
                self.dial_errors += len(placing)
                return
        for core, action in placing:
            if core.book.state is not states[id(core)]:
                # paused or stopped while the attempt rows were flushed: campaign.stop hung up
                # every call it knew of, and this one was not dialled yet -- it never will be
                logger.info("[%s] campaign %s/%s is %s: %s not dialled", action.call_id, core.book.tenant,
                            core.book.name, core.book.state.value, action.number)
                self._apply(core, core.not_placed(action.call_id, time.time()))
                continue
            self._call_core[action.call_id] = core
            try:
                self.port.dial(action, core.campaign)
            except Exception as exc:
                logger.warning("[%s] campaign %s: dial %s failed: %s", action.call_id, core.book.name,
                               action.number, exc)
                self.dial_errors += 1
                self._call_core.pop(action.call_id, None)
                self._apply(core, core.call_failed(action.call_id, "failed", time.time()))

    def _apply(self, core: DialerCore, actions: list[Action]) -> None:
        for action in actions:
            self._perform(core, action)

    def _perform(self, core: DialerCore, action: Action) -> None:
        port = self.port
        assert port is not None
        if isinstance(action, PersistRows):
            for row in action.rows:
                self._append(action.table, row)
        elif isinstance(action, StartAmd):
            port.start_amd(action.call_id)
        elif isinstance(action, ConnectAgent):
            self._arm(action.call_id, action.deadline, lambda c=action.call_id: self._connect_timeout(core, c))
            port.connect_agent(action, core.campaign)
        elif isinstance(action, PlayMessage):
            port.play(action)
        elif isinstance(action, RunFlow):
            port.run_flow(action, core.campaign)
        elif isinstance(action, Hangup):
            port.hangup(action.call_id, action.reason)
        elif isinstance(action, CampaignCompleted):
            self._persist_state(core, action.row)
            logger.info("campaign %s/%s completed: %s", core.book.tenant, core.book.name, core.book.counts())
        elif isinstance(action, PreviewOffered):
            if self.on_preview is not None:
                self.on_preview(action, core)
            self.engine.bus.publish("campaign.preview", {"campaign": core.book.name, "agent": action.agent,
                                                         "record": action.record, "expires": action.expires},
                                    tenant=core.book.tenant, agent=action.agent)
        else:  # pragma: no cover - a new action without a handler is a bug
            raise TypeError(f"unhandled dialer action {action!r}")

    def _arm(self, call_id: str, deadline: float, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(call_id, None)
        if old is not None:
            old.cancel()
        self._timers[call_id] = loop.call_later(max(0.0, deadline - time.time()), fn)

    def _connect_timeout(self, core: DialerCore, call_id: str) -> None:
        self._timers.pop(call_id, None)
        self._apply(core, core.connect_timeout(call_id, time.time()))

    # ------------------------------------------------------------ progress from the port

    def on_progress(self, call_id: str, kind: str, **info: Any) -> None:
        """A call of a campaign progressed: ``answered``, ``failed`` (``outcome``, ``status``),
        ``amd`` (``result``, ``detail``), ``connected`` (``agent``), ``dtmf`` (``digit``: the called party
        pressed a key during a notification), ``ended`` (``reason``, ``wrapup_s``)."""
        core = self._call_core.get(call_id)
        if core is None:
            logger.debug("[%s] progress %s for a call no campaign owns", call_id, kind)
            return
        now = time.time()
        try:
            if kind == "answered":
                actions = core.call_answered(call_id, now)
            elif kind == "failed":
                actions = core.call_failed(call_id, info.get("outcome", "failed"), now, status=info.get("status", 0))
                self._forget(call_id)
            elif kind == "amd":
                actions = core.amd_result(call_id, info["result"], now, info.get("detail"))
            elif kind == "connected":
                timer = self._timers.pop(call_id, None)
                if timer is not None:
                    timer.cancel()
                actions = core.agent_connected(call_id, info["agent"], now)
            elif kind == "dtmf":
                actions = core.dtmf(call_id, info["digit"], now)
            elif kind == "ended":
                actions = core.call_ended(call_id, now, wrapup_s=info.get("wrapup_s", 0.0),
                                          reason=info.get("reason", ""))
                self._forget(call_id)
            else:
                raise ValueError(f"unknown progress kind {kind!r}")
        except Conflict as exc:
            logger.warning("[%s] progress %s ignored: %s", call_id, kind, exc)
            return
        self._apply(core, actions)
        self._wake.set()

    def _forget(self, call_id: str) -> None:
        self._call_core.pop(call_id, None)
        timer = self._timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()


def _normal(number: str) -> str:
    from engine.campaign import normalise_number

    return normalise_number(number)


def _default_port(engine: Any) -> CallPort | None:
    """The call path's port when the engine has a :class:`CallCentre` with outgoing legs."""
    for service in engine.services:
        if type(service).__name__ == "CallCentre" and hasattr(service, "legs"):
            from engine.outbound_port import CentrePort

            return CentrePort(service)
    return None


def find_campaigns(engine: Any) -> CampaignService:
    for service in engine.services:
        if isinstance(service, CampaignService):
            return service
    raise Unavailable("the campaign service is not running")


__all__ = ["CallPort", "CampaignService", "find_campaigns", "screening_block_hook"]


def screening_block_hook(get_screening: Callable[[], Any]) -> ScreenHook:
    """A screen hook refusing numbers on an active inbound ``block`` list (engine/screening.py).

    A number the centre refuses to hear from is not one its campaigns should
    call either: a ``[screening.NAME]`` block list (and its run-time entries)
    doubles as a do-not-call list.  ``get_screening`` is read at every check
    because the call path creates its :class:`engine.screening.Screening` at
    start and run-time entries change it.
    """
    def hook(tenant: str, campaign: str, number: str) -> str | None:
        screening = get_screening()
        if screening is None:
            return None
        lists = screening.listed(tenant, number, time.time())
        return f"screening:{lists[0]}" if lists else None

    return hook
