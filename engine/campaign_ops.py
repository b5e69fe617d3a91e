"""Control ops of outbound campaigns (docs/control-campaign-ops.md).

Registered into :data:`engine.ops.registry` at import.  Scope: every op
acts inside the session's tenant; supervisors on campaigns whose ``groups``
meet their supervised groups (a campaign of agents only: any supervisor of
the tenant); agents only on campaigns they work (named in ``agents`` or a
member of one of its ``groups``) and, for ``campaign.disposition``, only on
records whose last call they took.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any, Iterator

from engine.campaign import CampaignTrigger, normalise_number
from engine.campaign_agents import agent_share, read_state_rows
from engine.campaign_report import agent_csv, campaign_report, merge_agent_share, report_csv, report_xlsx
from engine.campaign_service import _select_all, find_campaigns
from engine.config import GLOBAL_TENANT, Campaign
from engine.dialer import DialerCore, PlaceCall, PreviewOffered
from engine.errors import ConfigError, Forbidden, InvalidArgs, NotFound
from engine.ops import AGENT_ROLES, READ_ROLES, SUPERVISOR_ROLES, Arg, OpContext, registry
from engine.reporting import open_reader

_NAME = Arg("name", str, doc="campaign name")
_TENANT = Arg("tenant", str, default="", doc="tenant (admins of tenant '*' only; default: the session's)")


def _tenant(ctx: OpContext, tenant: str) -> str:
    if ctx.session.tenant == GLOBAL_TENANT:
        return tenant or "default"
    if tenant and tenant != ctx.session.tenant:
        raise Forbidden(f"user {ctx.session.user!r} may not act in tenant {tenant!r}")
    return ctx.session.tenant


def _agents_of(ctx: OpContext, core: DialerCore) -> set[str]:
    return _assigned_agents(ctx, core.campaign)


def _core(ctx: OpContext, args: dict[str, Any], *, agent_ok: bool = False) -> DialerCore:
    svc = find_campaigns(ctx.engine)
    core = svc.core(_tenant(ctx, args.get("tenant", "")), args["name"])
    s = ctx.session
    if s.role == "agent":
        if not agent_ok or s.agent not in _agents_of(ctx, core):
            raise Forbidden(f"agent {s.agent} does not work campaign {core.book.name!r}")
    else:
        s.require(tenant=core.book.tenant, groups=set(core.campaign.groups))
    return core


@registry.op("campaign.create", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[_NAME, _TENANT, Arg("definition", dict, doc="the keys of a [campaigns.NAME] table")])
async def op_campaign_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Create a campaign at run time (state ``created``); checked like the config file."""
    svc = find_campaigns(ctx.engine)
    tenant = _tenant(ctx, args["tenant"])
    _check_references(ctx, "campaign.create", tenant, args["definition"])
    with _config_errors():
        core = svc.create(tenant, args["name"], args["definition"], user=ctx.session.user)
    return svc.status(core)


def _check_references(ctx: OpContext, op: str, tenant: str, definition: dict[str, Any]) -> None:
    """The session supervises the definition's groups; its groups, agents and trunk are the tenant's."""
    def names(key: str) -> list[Any]:  # a wrong type is left to the configuration check's message
        v = definition.get(key) or []
        return [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else []

    groups = {g for g in names("groups") if isinstance(g, str)}
    ctx.session.require(tenant=tenant, groups=groups)
    cfg = ctx.engine.config
    for what, table, refs in (("group", cfg.groups, groups), ("agent", cfg.agents, names("agents")),
                              ("trunk", cfg.trunks, names("trunk"))):
        for n in refs:  # another tenant's object answers like a missing one (nothing about it leaks)
            if isinstance(n, str) and (n not in table or table[n].tenant != tenant):
                raise NotFound(f"{op}: no {what} {n!r} in tenant {tenant!r}")


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    """A :class:`ConfigError` of a run-time definition as ``invalid_args`` (every problem listed)."""
    try:
        yield
    except ConfigError as exc:
        text = "; ".join(exc.lines) if hasattr(exc, "lines") else str(exc)
        # A reference to another tenant's group/agent/trunk must not name that tenant.
        text = re.sub(r"belongs to tenant '[^']*', not '[^']*'", "belongs to another tenant", text)
        raise InvalidArgs(text) from None


@registry.op("campaign.update", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[_NAME, _TENANT, Arg("changes", dict, doc="keys of a [campaigns.NAME] table to change")])
async def op_campaign_update(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Edit a run-time campaign; mode, trunk, queue, AMD, message and flow only while not dialling."""
    core = _core(ctx, args)
    changes = args["changes"]
    if "groups" in changes or "agents" in changes or "trunk" in changes:
        _check_references(ctx, "campaign.update", core.book.tenant,
                          {k: changes[k] for k in ("groups", "agents", "trunk") if k in changes})
    svc = find_campaigns(ctx.engine)
    with _config_errors():
        changed = svc.update(core, changes, user=ctx.session.user)
    return {**svc.status(core), "changed": changed}


@registry.op("campaign.delete", roles=SUPERVISOR_ROLES, changes_state=True, args=[_NAME, _TENANT])
async def op_campaign_delete(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Soft-delete a stopped, completed or never started run-time campaign; its records and log are kept."""
    core = _core(ctx, args)
    return find_campaigns(ctx.engine).delete(core, user=ctx.session.user)


@registry.op("campaign.import", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[_NAME, _TENANT, Arg("csv", str, doc="CSV text: header with a 'number' column, then rows"),
                   Arg("batch", str, default="", doc="label stored with the imported rows")])
async def op_campaign_import(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add numbers from CSV; other columns become the record's fields (screen pop)."""
    core = _core(ctx, args)
    if len(args["csv"]) > 50 << 20:
        raise InvalidArgs("CSV larger than 50 MB: import it in parts")
    return find_campaigns(ctx.engine).import_csv(core, args["csv"], args["batch"])


def _state_op(trigger: CampaignTrigger) -> Any:
    async def handler(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
        core = _core(ctx, args)
        svc = find_campaigns(ctx.engine)
        svc.transition(core, trigger, ctx.session.user)
        return svc.status(core)
    handler.__doc__ = {CampaignTrigger.START: "Start (or resume) dialling.",
                       CampaignTrigger.PAUSE: "Stop placing new calls; calls in progress go on.",
                       CampaignTrigger.STOP: "Stop: no new calls, calls of the campaign are hung up."}[trigger]
    return handler


for _trigger in (CampaignTrigger.START, CampaignTrigger.PAUSE, CampaignTrigger.STOP):
    registry.op(f"campaign.{_trigger.value}", roles=SUPERVISOR_ROLES, changes_state=True,
                args=[_NAME, _TENANT])(_state_op(_trigger))


@registry.op("campaign.status", roles=AGENT_ROLES | READ_ROLES, args=[_NAME, _TENANT])
async def op_campaign_status(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """State, record counts, pacing measurements and live calls of one campaign."""
    core = _core(ctx, args, agent_ok=True)
    return find_campaigns(ctx.engine).status(core)


@registry.op("campaign.list", roles=READ_ROLES,
             args=[Arg("deleted", bool, default=False, doc="list the deleted campaigns instead")])
async def op_campaign_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Campaigns the session may see (or the deleted ones, whose reports stay available)."""
    svc = find_campaigns(ctx.engine)
    s = ctx.session
    out = []
    if args["deleted"]:
        for (tenant, name), c in sorted(svc.deleted.items()):
            if s.role != "agent" and s.sees(tenant=tenant, groups=set(c.groups)):
                out.append({"name": name, "tenant": tenant, "mode": c.mode, "state": "deleted"})
        return {"campaigns": out}
    for core in svc.cores.values():
        if s.role == "agent":
            if s.sees_tenant(core.book.tenant) and s.agent in _agents_of(ctx, core):
                out.append(core.book.describe())
        elif s.sees(tenant=core.book.tenant, groups=set(core.campaign.groups)):
            out.append(core.book.describe())
    return {"campaigns": out}


_RECORD = Arg("record_id", str, doc="the record (screen pop: record.record_id)")


@registry.op("campaign.disposition", roles=AGENT_ROLES, changes_state=True,
             args=[_NAME, _TENANT, _RECORD, Arg("disposition", str, doc="result code, e.g. sale, no_interest"),
                   Arg("callback_ts", (int, float), default=0, doc="Unix time to call back (0: none)"),
                   Arg("notes", str, default=""), Arg("agent", str, default="", doc="default: the session's")])
async def op_campaign_disposition(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Set the disposition of a record after its call; optionally book a callback for this agent."""
    core = _core(ctx, args, agent_ok=True)
    agent = args["agent"] or ctx.session.agent
    rec = core.book.record(args["record_id"])
    if ctx.session.role == "agent":
        last = [lv for lv in core.live.values() if lv.record_id == rec.record_id]
        took = agent == ctx.session.agent and (any(lv.agent == agent for lv in last) or
                                               _last_agent(ctx, core, rec.record_id) == agent)
        if not took:
            raise Forbidden(f"agent {ctx.session.agent} did not take the last call of record {rec.record_id!r}")
    row = core.book.disposition(rec.record_id, args["disposition"], time.time(), agent=agent,
                                callback_ts=float(args["callback_ts"]) or None, notes=args["notes"])
    find_campaigns(ctx.engine)._append("campaign_log", row)
    return rec.describe()


def _last_agent(ctx: OpContext, core: DialerCore, record_id: str) -> str:
    store = ctx.engine.store
    if store is None:
        return ""
    rows = store.select("campaign_log", {"tenant": core.book.tenant, "campaign": core.book.name,
                                         "record_id": record_id, "event": "connected"}, descending=True, limit=1)
    return rows[0]["agent"] if rows else ""


_AGENT = Arg("agent", str, default="", doc="agent number (default: the session's)")


@registry.op("campaign.preview_next", roles=AGENT_ROLES, changes_state=True, args=[_NAME, _TENANT, _AGENT])
async def op_campaign_preview_next(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Preview mode: hold the next due record for the agent and return it (``record`` null: none due)."""
    core = _core(ctx, args, agent_ok=True)
    agent = _preview_agent(ctx, core, args["agent"])
    svc = find_campaigns(ctx.engine)
    actions = core.preview_next(agent, time.time())
    svc._apply(core, actions)
    offer = next((a for a in actions if isinstance(a, PreviewOffered)), None)
    return {"record": offer.record if offer else None, "expires": offer.expires if offer else None}


def _preview_agent(ctx: OpContext, core: DialerCore, agent: str) -> str:
    agent = agent or ctx.session.agent
    if not agent:
        raise InvalidArgs("give the agent number (this user is not an agent)")
    if ctx.session.role == "agent" and agent != ctx.session.agent:
        raise Forbidden(f"agent {ctx.session.agent} may not act for agent {agent}")
    conf = ctx.engine.config.agents.get(agent)
    if conf is None or not ctx.session.sees_tenant(conf.tenant) or conf.tenant != core.book.tenant:
        raise NotFound(f"no agent {agent!r}")  # another tenant's agent: as if absent (docs/tenants.md)
    if agent not in _agents_of(ctx, core):
        raise Forbidden(f"agent {agent} does not work campaign {core.book.name!r}")
    return agent


@registry.op("campaign.preview_accept", roles=AGENT_ROLES, changes_state=True,
             args=[_NAME, _TENANT, _RECORD, _AGENT])
async def op_campaign_preview_accept(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Preview mode: dial the held record now, for this agent."""
    core = _core(ctx, args, agent_ok=True)
    agent = _preview_agent(ctx, core, args["agent"])
    svc = find_campaigns(ctx.engine)
    actions = core.preview_accept(args["record_id"], agent, time.time())
    await svc.place(core, actions)
    call_id = next(a.call_id for a in actions if isinstance(a, PlaceCall))
    return {"call_id": call_id, "record_id": args["record_id"]}


@registry.op("campaign.preview_skip", roles=AGENT_ROLES, changes_state=True,
             args=[_NAME, _TENANT, _RECORD, _AGENT])
async def op_campaign_preview_skip(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Preview mode: skip the held record (it is not dialled)."""
    core = _core(ctx, args, agent_ok=True)
    agent = _preview_agent(ctx, core, args["agent"])
    find_campaigns(ctx.engine)._apply(core, core.preview_skip(args["record_id"], agent, time.time()))
    return core.book.record(args["record_id"]).describe()


@registry.op("campaign.dnc", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[Arg("number", str, doc="number, or a prefix ending in '*'"), _TENANT,
                   Arg("action", str, default="add", choices=("add", "remove")),
                   Arg("campaign", str, default="", doc="only for this campaign (default: every campaign)"),
                   Arg("reason", str, default="dnc")])
async def op_campaign_dnc(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add a number (or prefix) to the do-not-call list, or remove it."""
    tenant = _tenant(ctx, args["tenant"])
    number = args["number"]
    if not number.endswith("*"):
        number = normalise_number(number)
    find_campaigns(ctx.engine).dnc_change(tenant, number, args["action"], args["campaign"], args["reason"],
                                          source=ctx.session.user)
    return {"number": number, "action": args["action"], "campaign": args["campaign"]}


def _report_campaign(ctx: OpContext, args: dict[str, Any]) -> Campaign:
    """The campaign to report: a live one (scoped as every op), else a deleted one (same scope)."""
    svc = find_campaigns(ctx.engine)
    tenant = _tenant(ctx, args["tenant"])
    c = svc.deleted.get((tenant, args["name"]))
    if c is None or (tenant, args["name"]) in svc.cores:
        return _core(ctx, args).campaign
    ctx.session.require(tenant=c.tenant, groups=set(c.groups))
    return c


@registry.op("campaign.report", roles=SUPERVISOR_ROLES | {"reporting"},
             args=[_NAME, _TENANT, Arg("from_ts", (int, float), doc="interval start (Unix seconds)"),
                   Arg("to_ts", (int, float), default=0, doc="end (default: now)"),
                   Arg("interval_s", (int, float), default=3600, doc="bucket length"),
                   Arg("format", str, default="json", choices=("json", "csv", "xlsx")),
                   Arg("table", str, default="intervals", choices=("intervals", "agents"),
                       doc="csv: one line per interval, or per interval and agent")])
async def op_campaign_report(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Attempts, connects, connect rate, drops and drop rate, AMD outcomes, dispositions, agent talk and idle
    share per interval."""
    campaign = _report_campaign(ctx, args)
    store = ctx.engine.require_store()
    await store.aflush()
    now = time.time()
    from_ts, to_ts, interval_s = float(args["from_ts"]), float(args["to_ts"]) or now, float(args["interval_s"])
    path = getattr(store, "path", None)
    agents = _assigned_agents(ctx, campaign)

    def work() -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        rows = _select_all(store, "campaign_log", {"tenant": campaign.tenant, "campaign": campaign.name})
        if not path or path == ":memory:":
            return rows, None
        conn = open_reader(path)
        try:
            took = {r["agent"] for r in rows if r["event"] == "connected" and r.get("agent")}
            return rows, read_state_rows(conn, campaign.tenant, agents | took, from_ts, to_ts)
        finally:
            conn.close()

    rows, state_rows = await asyncio.get_running_loop().run_in_executor(None, work)
    try:
        buckets = campaign_report(rows, from_ts=from_ts, to_ts=to_ts, interval_s=interval_s)
        if state_rows is not None:
            calls = {r["call_id"] for r in rows if r["event"] == "attempt" and r.get("call_id")}
            took = {r["agent"] for r in rows if r["event"] == "connected" and r.get("agent")}
            merge_agent_share(buckets, agent_share(state_rows, calls, agents | took, from_ts=from_ts, to_ts=to_ts,
                                                   interval_s=interval_s, until=now))
    except ValueError as exc:
        raise InvalidArgs(str(exc)) from None
    if args["format"] == "csv":
        return {"csv": agent_csv(buckets) if args["table"] == "agents" else report_csv(buckets)}
    if args["format"] == "xlsx":
        return {"format": "xlsx", "data": report_xlsx(buckets)}
    return {"campaign": campaign.name, "intervals": json.loads(json.dumps(buckets))}


def _assigned_agents(ctx: OpContext, campaign: Campaign) -> set[str]:
    """The campaign's agents: named in ``agents`` or members of its ``groups`` (current configuration)."""
    groups = set(campaign.groups)
    return set(campaign.agents) | {n for n, a in ctx.engine.config.agents.items()
                                   if a.tenant == campaign.tenant and groups & set(a.groups)}
