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
import json
import re
import time
from typing import Any

from engine.campaign import CampaignTrigger, normalise_number
from engine.campaign_report import campaign_report, report_csv
from engine.campaign_service import _select_all, find_campaigns
from engine.config import GLOBAL_TENANT
from engine.dialer import DialerCore, PlaceCall, PreviewOffered
from engine.errors import ConfigError, Forbidden, InvalidArgs, NotFound
from engine.ops import AGENT_ROLES, READ_ROLES, SUPERVISOR_ROLES, Arg, OpContext, registry

_NAME = Arg("name", str, doc="campaign name")
_TENANT = Arg("tenant", str, default="", doc="tenant (admins of tenant '*' only; default: the session's)")


def _tenant(ctx: OpContext, tenant: str) -> str:
    if ctx.session.tenant == GLOBAL_TENANT:
        return tenant or "default"
    if tenant and tenant != ctx.session.tenant:
        raise Forbidden(f"user {ctx.session.user!r} may not act in tenant {tenant!r}")
    return ctx.session.tenant


def _agents_of(ctx: OpContext, core: DialerCore) -> set[str]:
    c = core.campaign
    groups = set(c.groups)
    return set(c.agents) | {n for n, a in ctx.engine.config.agents.items() if groups & set(a.groups)}


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
    definition = args["definition"]
    groups = set(definition.get("groups") or ())
    ctx.session.require(tenant=tenant, groups=groups)
    cfg = ctx.engine.config
    for what, table, names in (("group", cfg.groups, groups), ("agent", cfg.agents, definition.get("agents") or ()),
                               ("trunk", cfg.trunks, [definition["trunk"]] if definition.get("trunk") else [])):
        for n in names:  # another tenant's object answers like a missing one (nothing about it leaks)
            if isinstance(n, str) and (n not in table or table[n].tenant != tenant):
                raise NotFound(f"campaign.create: no {what} {n!r} in tenant {tenant!r}")
    try:
        core = svc.create(tenant, args["name"], args["definition"], user=ctx.session.user)
    except ConfigError as exc:
        text = "; ".join(exc.lines) if hasattr(exc, "lines") else str(exc)
        # A reference to another tenant's group/agent/trunk must not name that tenant.
        text = re.sub(r"belongs to tenant '[^']*', not '[^']*'", "belongs to another tenant", text)
        raise InvalidArgs(text) from None
    return svc.status(core)


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


@registry.op("campaign.list", roles=READ_ROLES, args=[])
async def op_campaign_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Campaigns the session may see."""
    svc = find_campaigns(ctx.engine)
    s = ctx.session
    out = []
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


@registry.op("campaign.report", roles=SUPERVISOR_ROLES | {"reporting"},
             args=[_NAME, _TENANT, Arg("from_ts", (int, float), doc="interval start (Unix seconds)"),
                   Arg("to_ts", (int, float), default=0, doc="end (default: now)"),
                   Arg("interval_s", (int, float), default=3600, doc="bucket length"),
                   Arg("format", str, default="json", choices=("json", "csv"))])
async def op_campaign_report(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Attempts, connects, connect rate, drops and drop rate, AMD outcomes, dispositions per interval."""
    core = _core(ctx, args)
    store = ctx.engine.require_store()
    await store.aflush()
    rows = await asyncio.get_running_loop().run_in_executor(
        None, _select_all, store, "campaign_log", {"tenant": core.book.tenant, "campaign": core.book.name})
    to_ts = float(args["to_ts"]) or time.time()
    try:
        buckets = campaign_report(rows, from_ts=float(args["from_ts"]), to_ts=to_ts,
                                  interval_s=float(args["interval_s"]))
    except ValueError as exc:
        raise InvalidArgs(str(exc)) from None
    if args["format"] == "csv":
        return {"csv": report_csv(buckets)}
    return {"campaign": core.book.name, "intervals": json.loads(json.dumps(buckets))}
