"""Tenant isolation, proved op by op: two tenants on one running engine (call
path, stats and campaign services, SQLite store with rows of both), every op
of :data:`engine.ops.registry` called by every role of tenant ``ta`` against
tenant ``tb``'s objects, and every event of ``tb`` activity checked against
``ta`` subscribers.

The op table :data:`CASES` must name every registered op (a new op without
a case fails :func:`test_every_op_has_a_case`); an op that names no tenant
object says why.  Answers allowed:

* ``target`` ops (they name a ``tb`` object): ``forbidden`` or ``not_found``;
* ``list`` ops (they read the session's scope): ``ok`` with no ``tb`` data,
  or ``forbidden`` (role not allowed);
* ``self`` ops (no tenant object): any answer, but no ``tb`` data in it;
* ``global`` ops (engine-wide state): ``forbidden`` for every tenant user.

The global administrator (tenant ``*``) is the positive control: the same
leak detector must find ``tb`` data in its answers, so the check can fail.
The role x scope matrix of docs/tenants.md is checked against the
registry's roles.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from engine.app import Engine
from engine.calls import Call, CallState
from engine.config import parse_config
from engine.ops import registry
from engine.passwords import hash_password
from foundation_helpers import RawConn, run

ROOT = pathlib.Path(__file__).resolve().parents[2]
PW = "pw-secret"
HASH = hash_password(PW, n=1024)
A_ROLES = {"ta_admin": "admin", "ta_sup": "supervisor", "ta_agent": "agent", "ta_rep": "reporting"}
# ta's users of scope department / team (test_org_scopes.py checks them inside ta): across tenants too
A_SCOPED = {"ta_dept_admin": "admin", "ta_dept_sup": "supervisor", "ta_team_sup": "supervisor",
            "ta_team_rep": "reporting"}
NOW = time.time()

# Everything of tenant tb carries a marker: the tenant "tb", names with "tb_",
# call ids "tbcall", caller numbers "+4977", agents 9001/9002, extensions 39xx.
B_EXACT = {"tb", "9001", "9002", "3901", "3902", "tb_admin"}
B_SUBSTR = ("tb_", "tbcall", "+4977", "TBSECRET")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return u.getsockname()[1]


def config_text(tmp: pathlib.Path, sip_port: int) -> str:
    rtp = 31000 + (sip_port % 300) * 20
    return f"""
[engine]
name = "tenants"

[sip]
listen = [ {{ transport = "udp", host = "127.0.0.1", port = {sip_port} }} ]

[media]
host = "127.0.0.1"
rtp_port_min = {rtp}
rtp_port_max = {rtp + 18}

[store]
path = "{tmp}/store.db"
batch_interval_ms = 20

[control]
listen = [ {{ transport = "tcp", host = "127.0.0.1", port = 0 }} ]

[recording]
path = "{tmp}/rec"

[reporting]
stats_interval_s = 60

[tenants.ta]
[tenants.tb]

[departments.ta_sales_dept]
tenant = "ta"
[departments.ta_support_dept]
tenant = "ta"
[teams.ta_team_a]
tenant = "ta"
department = "ta_sales_dept"
[teams.ta_team_s]
tenant = "ta"
department = "ta_support_dept"

[groups.ta_sales]
tenant = "ta"
department = "ta_sales_dept"
[groups.ta_support]
tenant = "ta"
department = "ta_support_dept"
[groups.tb_sales]
tenant = "tb"

[agents.1001]
name = "Ann"
tenant = "ta"
password = "{HASH}"
extension = "2901"
groups = ["ta_sales"]
team = "ta_team_a"
[agents.1002]
name = "Al"
tenant = "ta"
password = "{HASH}"
extension = "2902"
groups = ["ta_support"]
team = "ta_team_s"
[agents.1003]
name = "Ada"
tenant = "ta"
password = "{HASH}"
extension = "2903"
groups = ["ta_sales"]
department = "ta_sales_dept"
[agents.9001]
name = "Bea"
tenant = "tb"
password = "{HASH}"
extension = "3901"
groups = ["tb_sales"]
[agents.9002]
name = "Bo"
tenant = "tb"
password = "{HASH}"
extension = "3902"
groups = ["tb_sales"]

[queues.ta_q]
tenant = "ta"
groups = ["ta_sales"]
[queues.ta_support_q]
tenant = "ta"
groups = ["ta_support"]
[queues.tb_q]
tenant = "tb"
groups = ["tb_sales"]

[trunks.ta_trunk]
tenant = "ta"
host = "127.0.0.1"
accept_networks = ["127.0.0.0/8"]
[trunks.tb_trunk]
tenant = "tb"
host = "127.0.0.2"
accept_networks = ["127.0.0.0/8"]

[screening.ta_block]
tenant = "ta"
numbers = ["+4966000001"]
[screening.tb_block]
tenant = "tb"
numbers = ["+4977000001"]

[campaigns.ta_camp]
tenant = "ta"
mode = "preview"
groups = ["ta_sales"]
trunk = "ta_trunk"
[campaigns.tb_camp]
tenant = "tb"
mode = "preview"
groups = ["tb_sales"]
trunk = "tb_trunk"

[users.root]
password = "{HASH}"
role = "admin"
tenant = "*"
[users.ta_admin]
password = "{HASH}"
role = "admin"
tenant = "ta"
[users.ta_sup]
password = "{HASH}"
role = "supervisor"
tenant = "ta"
groups = ["ta_sales"]
extension = "2999"
[users.ta_agent]
password = "{HASH}"
role = "agent"
tenant = "ta"
agent = "1001"
[users.ta_rep]
password = "{HASH}"
role = "reporting"
tenant = "ta"
[users.tb_admin]
password = "{HASH}"
role = "admin"
tenant = "tb"
[users.ta_dept_sup]
password = "{HASH}"
role = "supervisor"
tenant = "ta"
scope = "department"
department = "ta_sales_dept"
[users.ta_dept_admin]
password = "{HASH}"
role = "admin"
tenant = "ta"
scope = "department"
department = "ta_sales_dept"
[users.ta_team_rep]
password = "{HASH}"
role = "reporting"
tenant = "ta"
scope = "team"
team = "ta_team_a"
[users.ta_team_sup]
password = "{HASH}"
role = "supervisor"
tenant = "ta"
scope = "team"
team = "ta_team_a"
"""


# ---------------------------------------------------------------- the op table


@dataclass(frozen=True)
class Case:
    kind: str  # target | list | self | global | skip
    variants: tuple[dict[str, Any], ...] = ({},)
    reason: str = ""


def T(*variants: dict[str, Any]) -> Case:
    return Case("target", variants)


def L(*variants: dict[str, Any], reason: str = "") -> Case:
    return Case("list", variants or ({},), reason)


def S(reason: str, *variants: dict[str, Any]) -> Case:
    return Case("self", variants or ({},), reason)


B_CALL = {"call_id": "tbcall1"}
B_CAMP = ({"name": "tb_camp", "tenant": "tb"}, {"name": "tb_camp"})
# "B_REC", "B_CB", "A_CB", "S_REC", "S_CB" in arguments are row ids resolved at run time (resolve())
SINCE, UNTIL = NOW - 86400, NOW + 86400

CASES: dict[str, Case] = {
    # foundation
    "auth": Case("skip", reason="public; authenticates as the named user (its own tenant); no object to cross"),
    "ping": S("public echo; no tenant object"),
    "ops.list": S("lists op names the role may call; no tenant object"),
    "events.unsubscribe": S("drops this connection's own subscriptions", {"subscription": 999}),
    "events.subscribe": T({"tenants": ["tb"]}, {"agents": ["9001"], "tenants": ["tb"]}),
    "engine.status": L(reason="counts must be the session's tenant's (checked in test_engine_status_counts)"),
    "state.snapshot": L(),
    "engine.log_level": S("a diagnostic setting of the process (admins); shows and touches no tenant's data",
                          {"level": "WARNING"}),
    "audit.query": L({}, {"user": "tb_admin"}),
    "audit.export": T({"tenant": "tb"}),
    # reporting
    "kpi.report": T({"since": SINCE, "until": UNTIL, "tenant": "tb"},
                    {"since": SINCE, "until": UNTIL, "dimension": "agent", "keys": ["9001"], "_scoped": True}),
    "cdr.query": T({"tenant": "tb"}),
    "cdr.export": T({"tenant": "tb"}),
    "stats.realtime": L(),
    "recording.query": T({"tenant": "tb"}),
    "recording.fetch": T({"id": "B_REC"}),
    # callbacks
    "callback.list": L({}, {"queue": "tb_q"}, {"assigned_agent": "9001"}),
    "callback.assign": T({"id": "B_CB", "agent": "1001"}, {"id": "A_CB", "agent": "9001"}),
    "callback.schedule": T({"id": "B_CB", "at": NOW + 3600}, {"id": "A_CB", "at": NOW + 3600, "agent": "9001"}),
    "callback.complete": T({"id": "B_CB"}, {"id": "B_CB", "cancel": True}),
    "callback.dial": T({"id": "B_CB", "agent": "1001"}, {"id": "A_CB", "agent": "9001"}),
    # agents, queues, calls
    "agent.login": T({"agent": "9001", "password": PW},
                     {"agent": "1002", "password": PW, "extension": "3901"}),  # hot-desking onto tb's phone
    "agent.logout": T({"agent": "9001"}),
    "agent.ready": T({"agent": "9001"}),
    "agent.not_ready": T({"agent": "9001", "reason_code": "x"}),
    "agent.wrapup_done": T({"agent": "9001"}),
    "agent.list": L(),
    "queue.list": L(),
    "call.list": L(),
    "call.hangup": T(B_CALL),
    "call.answer": T(B_CALL),
    "call.attach_data": T({**B_CALL, "data": {"k": "v"}}),
    "call.get_data": T(B_CALL),
    # call control: tb's call, and ta's call towards tb's agent, queue, trunk
    "call.hold": T(B_CALL),
    "call.retrieve": T(B_CALL),
    "call.transfer": T({**B_CALL, "target": "agent:1002"}, {"call_id": "tacall1", "target": "agent:9001"},
                       {"call_id": "tacall1", "target": "queue:tb_q"},
                       {"call_id": "tacall1", "target": "number:+4930123", "trunk": "tb_trunk"}),
    "call.consult": T({**B_CALL, "target": "agent:1002"}, {"call_id": "tacall1", "target": "agent:9001"},
                      {"call_id": "tacall1", "target": "queue:tb_q"},
                      {"call_id": "tacall1", "target": "number:+4930123", "trunk": "tb_trunk"}),
    "call.transfer_complete": T(B_CALL),
    "call.conference": T(B_CALL),
    "call.consult_cancel": T(B_CALL),
    "call.send_dtmf": T({**B_CALL, "digits": "1"}),
    "call.dial": T({"agent": "9001", "number": "+4930123"},
                   {"agent": "1001", "number": "+4930123", "trunk": "tb_trunk"}),
    # supervision
    "supervisor.listen": T({"agent": "9001"}, B_CALL),
    "supervisor.whisper": T({"agent": "9001"}, B_CALL),
    "supervisor.barge": T({"agent": "9001"}, B_CALL),
    "supervisor.intercept": T({"agent": "9001"}, B_CALL),
    "supervisor.force_release": T({"agent": "9001"}, B_CALL),
    "agent.force_state": T({"agent": "9001", "state": "not_ready"}, {"agent": "9001", "state": "logged_out"}),
    "supervisor.leave": S("ends the session's own monitor"),
    "supervisor.phone_login": T({"password": PW, "extension": "3901"}),  # tb's agent's phone
    "supervisor.phone_logout": S("the session's own phone"),
    "supervisor.list": L(),
    # screening
    "screening.list": T({"list": "tb_block"}),
    "screening.add": T({"list": "tb_block", "number": "+4930111"}),
    "screening.remove": T({"list": "tb_block", "number": "+4977000001"}),
    # SIP abuse guard: engine-wide
    "sip.bans": Case("global", ({},), "bans are engine-wide: global admins only"),
    "sip.unban": Case("global", ({"ip": "192.0.2.1"},), "bans are engine-wide: global admins only"),
    # campaigns
    "campaign.create": T({"name": "tb_new", "tenant": "tb", "definition": {"mode": "preview"}},
                         {"name": "ta_new", "definition": {"mode": "preview", "groups": ["tb_sales"]}}),
    "campaign.import": T(*({**v, "csv": "number\n+4930777\n"} for v in B_CAMP)),
    "campaign.start": T(*B_CAMP),
    "campaign.pause": T(*B_CAMP),
    "campaign.stop": T(*B_CAMP),
    "campaign.status": T(*B_CAMP),
    "campaign.list": L(),
    "campaign.disposition": T(*({**v, "record_id": "1", "disposition": "sale"} for v in B_CAMP)),
    "campaign.preview_next": T(*B_CAMP, {"name": "ta_camp", "agent": "9001"}),
    "campaign.preview_accept": T(*({**v, "record_id": "1"} for v in B_CAMP)),
    "campaign.preview_skip": T(*({**v, "record_id": "1"} for v in B_CAMP)),
    "campaign.dnc": T({"number": "+4930999", "tenant": "tb"}),
    "campaign.report": T(*({**v, "from_ts": SINCE} for v in B_CAMP)),
    "campaign.update": T(*({**v, "changes": {"max_attempts": 2}} for v in B_CAMP),
                         {"name": "ta_camp", "changes": {"groups": ["tb_sales"]}},
                         {"name": "ta_camp", "changes": {"trunk": "tb_trunk"}}),
    "campaign.delete": T(*B_CAMP),
}

# ops whose "list" answer is expected to contain tb data for the global admin
# (positive control of the leak detector)
ROOT_SEES_B = {"agent.list": {}, "queue.list": {}, "call.list": {}, "state.snapshot": {},
               "cdr.query": {}, "recording.query": {}, "callback.list": {}, "audit.query": {},
               "campaign.list": {}, "stats.realtime": {}, "screening.list": {},
               "cdr.export": {"tenant": "tb"}}


def leaks(obj: Any, exact: frozenset[str] | set[str] = B_EXACT, substr: tuple[str, ...] = B_SUBSTR,
          path: str = "$") -> list[str]:
    """Paths in ``obj`` where a marker (default: tb's) shows."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += leaks(k, exact, substr, f"{path}.<key>") + leaks(v, exact, substr, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += leaks(v, exact, substr, f"{path}[{i}]")
    elif isinstance(obj, (bytes, bytearray)):
        text = bytes(obj).decode("latin-1")
        numbers = "|".join(re.escape(e) for e in exact if e.isdigit())
        if any(m in text for m in substr) or (numbers and re.search(rf"(?<![\d.])({numbers})(?![\d.])", text)):
            out.append(f"{path} (bytes)")
    elif isinstance(obj, str):
        if obj in exact or any(m in obj for m in substr):
            out.append(f"{path}={obj!r}")
    return out


def reply_leaks(reply: dict[str, Any], args: dict[str, Any], exact: frozenset[str] | set[str] = B_EXACT,
                substr: tuple[str, ...] = B_SUBSTR) -> list[str]:
    """:func:`leaks` of a reply; an error message may echo the caller's own arguments
    (``no call 'tbcall1'``) but must name no other tb object or tb's tenant."""
    if reply.get("ok"):
        return leaks(reply.get("result"), exact, substr)
    message = str(reply.get("error", {}).get("message", ""))
    given = _strings(args)
    given += [v.partition(":")[2] for v in given if ":" in v]  # "agent:9001" is echoed as "agent 9001"
    echoed = sorted(given, key=len, reverse=True)
    for value in echoed:
        message = message.replace(value, "<arg>")
    words = set(re.findall(r"[\w+*.-]+", message))
    found = [w for w in words if w in exact or any(m in w for m in substr)]
    return [f"$.error.message: {found} in {reply['error']['message']!r}"] if found else []


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


# ---------------------------------------------------------------- the engine


@contextlib.asynccontextmanager
async def two_tenants(tmp: pathlib.Path) -> Any:
    import engine.agent_ops  # noqa: F401  (registers the call path's ops, as run_engine does)
    import engine.callcontrol_ops  # noqa: F401
    import engine.security_ops  # noqa: F401
    from engine import campaign_ops  # noqa: F401
    from engine.callpath import CallCentre
    from engine.campaign_service import CampaignService
    from engine.realtime import StatsService

    path = tmp / "engine.toml"
    text = config_text(tmp, _free_port())
    path.write_text(text)
    level = logging.getLogger().level  # engine.log_level is called below: restore it for later tests
    eng = Engine(parse_config(text, str(path)), services=[CallCentre()])
    eng.add_service(StatsService())
    eng.add_service(CampaignService())
    await eng.start()
    centre = next(s for s in eng.services if isinstance(s, CallCentre))
    try:
        yield eng, centre
    finally:
        for cid in ("tacall1", "tscall1", "tbcall1"):
            centre.calls.pop(cid, None)
        await eng.stop()
        logging.getLogger().setLevel(level)


async def seed(eng: Engine, centre: Any, tmp: pathlib.Path) -> dict[str, int]:
    """Rows and live objects of both tenants."""
    store = eng.store
    rec_dir = tmp / "rec"
    rec_dir.mkdir(parents=True, exist_ok=True)
    for t, agent, grp, q, num, cid in (("ta", "1001", "ta_sales", "ta_q", "+4966100", "tacall0"),
                                       ("ta", "1002", "ta_support", "ta_support_q", "+4966200", "tscall0"),
                                       ("tb", "9001", "tb_sales", "tb_q", "+4977100", "tbcall0")):
        store.append("cdr", {"call_id": cid, "tenant": t, "direction": "inbound", "caller_number": num,
                             "dialed_number": "800", "trunk": f"{t}_trunk", "queue": q, "grp": grp, "agent": agent,
                             "start_ts": NOW - 600, "queued_ts": NOW - 595, "answered_ts": NOW - 590,
                             "end_ts": NOW - 500, "wait_s": 5.0, "talk_s": 90.0, "disposition": "answered",
                             "notes": f"{t}_note" if t == "tb" else "ta note", "recorded": 1})
        f = rec_dir / f"{cid}.wav"
        f.write_bytes(b"RIFF" + (b"TBSECRET" if t == "tb" else b"tasecret") * 64)
        store.append("recordings", {"call_id": cid, "tenant": t, "path": str(f), "start_ts": NOW - 590,
                                    "duration_s": 90.0, "agent": agent, "grp": grp, "queue": q,
                                    "caller_number": num, "bytes": f.stat().st_size})
        store.append("callbacks", {"tenant": t, "call_id": cid, "caller_number": num, "queue": q,
                                   "requested_ts": NOW - 400, "assigned_agent": agent})
        store.append("audit_log", {"ts": NOW - 300, "tenant": t, "user": f"{t}_admin", "role": "admin",
                                   "op": "agent.ready", "args": json.dumps({"agent": agent}), "result": "ok",
                                   "peer": "127.0.0.1:1"})
        store.append("call_events", {"ts": NOW - 300, "tenant": t, "call_id": cid, "event": "supervisor.joined",
                                     "agent": agent, "party": f"{t}_sup", "detail": "{}"})
    await store.aflush()
    ids = {}
    for key, cid in (("ta", "tacall0"), ("ts", "tscall0"), ("tb", "tbcall0")):
        ids[f"{key}_rec"] = store.select("recordings", {"call_id": cid})[0]["id"]
        ids[f"{key}_cb"] = store.select("callbacks", {"call_id": cid})[0]["id"]
    # live calls: each talking with its agent
    for t, agent, q, grp, num, cid in (("ta", "1001", "ta_q", "ta_sales", "+4966100", "tacall1"),
                                       ("ta", "1002", "ta_support_q", "ta_support", "+4966200", "tscall1"),
                                       ("tb", "9001", "tb_q", "tb_sales", "+4977100", "tbcall1")):
        call = Call(call_id=cid, tenant=t, caller_number=num, dialed_number="800", trunk=f"{t}_trunk",
                    route="r", queue=q, grp=grp, agent=agent, state=CallState.TALKING, answered_ts=NOW - 30)
        centre.calls[call.call_id] = call
    return ids


async def session(eng: Engine, user: str) -> RawConn:
    c = await RawConn.open(eng)
    reply = await c.call("auth", user=user, password=PW)
    assert reply["ok"], reply
    return c


def resolve(args: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    names = {"B_REC": ids["tb_rec"], "B_CB": ids["tb_cb"], "A_CB": ids["ta_cb"], "S_REC": ids["ts_rec"],
             "S_CB": ids["ts_cb"]}
    return {k: names.get(v, v) if isinstance(v, str) else v for k, v in args.items()}


# ---------------------------------------------------------------- tests


def test_every_op_has_a_case() -> None:
    """Iterate the registry: a new op without a case (or a stale case) fails here."""
    import engine.agent_ops  # noqa: F401
    import engine.app  # noqa: F401
    import engine.audit_export  # noqa: F401
    import engine.builtin_ops  # noqa: F401
    import engine.callbacks  # noqa: F401
    import engine.callcontrol_ops  # noqa: F401
    import engine.reporting_ops  # noqa: F401
    import engine.security_ops  # noqa: F401
    from engine import campaign_ops  # noqa: F401

    names = set(registry.names())
    assert names - set(CASES) == set(), f"ops without a tenant-isolation case: {sorted(names - set(CASES))}"
    assert set(CASES) - names == set(), f"cases of ops that no longer exist: {sorted(set(CASES) - names)}"
    for name, case in CASES.items():
        assert case.kind in ("target", "list", "self", "global", "skip"), name
        if case.kind in ("self", "skip", "global"):
            assert case.reason, f"{name}: an op with no tenant object must say why"


def test_every_op_across_tenants(tmp_path: pathlib.Path) -> None:
    """Each role (and each department/team scope) of tenant ta, every op, against tb's objects:
    forbidden/not_found or no tb data."""
    async def main() -> list[str]:
        problems: list[str] = []
        async with two_tenants(tmp_path) as (eng, centre):
            ids = await seed(eng, centre, tmp_path)
            conns = {u: await session(eng, u) for u in (*A_ROLES, *A_SCOPED)}
            root = await session(eng, "root")
            # ta's agent logged in, so that call.dial gets as far as its trunk check
            assert (await root.call("agent.login", agent="1001", password=PW))["ok"]
            try:
                for name in registry.names():
                    case = CASES[name]
                    if case.kind == "skip":
                        continue
                    for user, role in {**A_ROLES, **A_SCOPED}.items():
                        for variant in case.variants:
                            args = resolve(variant, ids)
                            kind = "list" if args.pop("_scoped", False) else case.kind
                            reply = await conns[user].call(name, **args)
                            found = reply_leaks(reply, args)
                            where = f"{name}{args} as {user} ({role})"
                            if found:
                                problems.append(f"{where}: tb data at {found[:3]}")
                                continue
                            code = None if reply["ok"] else reply["error"]["code"]
                            if code in ("invalid_args", "internal", "unknown_op"):
                                problems.append(f"{where}: unexpected {reply['error']}")
                            elif kind == "target" and code not in ("forbidden", "not_found"):
                                problems.append(f"{where}: expected forbidden/not_found, got {reply}")
                            elif kind == "global" and code != "forbidden":
                                problems.append(f"{where}: expected forbidden, got {reply}")
                            elif kind == "list" and code not in (None, "forbidden"):
                                problems.append(f"{where}: expected a scoped answer, got {reply}")
                # positive control: the detector sees tb data in the global admin's answers
                for name, args in ROOT_SEES_B.items():
                    reply = await root.call(name, **args)
                    assert reply["ok"], (name, reply)
                    assert leaks(reply["result"]), f"root's {name} shows no tb data: the detector is blind"
                # and a tenant admin still sees its own tenant's data (the answers are not just empty)
                admin = conns["ta_admin"]
                for name in ("agent.list", "queue.list", "call.list", "cdr.query", "recording.query",
                             "callback.list", "campaign.list", "screening.list"):
                    reply = await admin.call(name)
                    assert reply["ok"] and re.search(r"ta(call|_)|'1001'|\+4966", repr(reply["result"])), \
                        (name, reply)
            finally:
                for c in (*conns.values(), root):
                    await c.close()
        return problems

    problems = run(main(), timeout=60)
    assert not problems, "tenant leaks:\n" + "\n".join(problems)


# Variants that name the other tenant itself (not one of its objects): forbidden is the answer there.
NAMES_A_TENANT = ("tenant", "tenants")
# Phones are one numbering plan: hot-desking onto (or a supervisor phone on) another tenant's extension is
# refused as forbidden, since a free extension is accepted and not_found would not hide anything.
PHONE_CASES = {("agent.login", "extension"), ("supervisor.phone_login", "extension")}
# Query filters narrow the scope: naming another tenant's object answers like naming nothing (no rows).
QUERY_FILTERS = {"kpi.report"}


def test_other_tenants_objects_answer_not_found(tmp_path: pathlib.Path) -> None:
    """Uniform refusal (docs/tenants.md): ta's admin naming a tb object gets not_found (its existence is
    not confirmed), whatever the op; naming tenant tb itself is forbidden."""
    async def main() -> list[str]:
        problems: list[str] = []
        async with two_tenants(tmp_path) as (eng, centre):
            ids = await seed(eng, centre, tmp_path)
            admin = await session(eng, "ta_admin")
            # ta's agent logged in, so that call.dial gets as far as its trunk check
            assert (await admin.call("agent.login", agent="1001", password=PW))["ok"]
            try:
                for name in registry.names():
                    case = CASES[name]
                    if case.kind != "target":
                        continue
                    for variant in case.variants:
                        args = resolve({k: v for k, v in variant.items() if not k.startswith("_")}, ids)
                        reply = await admin.call(name, **args)
                        code = None if reply["ok"] else reply["error"]["code"]
                        names_tenant = any(args.get(k) in ("tb", ["tb"]) for k in NAMES_A_TENANT)
                        phone = any((name, k) in PHONE_CASES for k in args)
                        want = "forbidden" if names_tenant or phone else "not_found"
                        if name in QUERY_FILTERS and reply["ok"] and not reply["result"]["rows"]:
                            continue  # a filter naming a tb object: no rows, as for a name that exists nowhere
                        if code != want:
                            problems.append(f"{name}{args}: expected {want}, got {reply}")
            finally:
                await admin.close()
        return problems

    problems = run(main(), timeout=60)
    assert not problems, "non-uniform refusals:\n" + "\n".join(problems)


def test_engine_status_counts_only_own_tenant(tmp_path: pathlib.Path) -> None:
    """engine.status of a tenant user counts that tenant's calls only; the global admin counts all."""
    async def main() -> None:
        async with two_tenants(tmp_path) as (eng, centre):
            await seed(eng, centre, tmp_path)
            centre.calls.pop("tacall1")
            centre.calls.pop("tscall1")
            for user in A_ROLES:
                c = await session(eng, user)
                res = (await c.call("engine.status"))["result"]
                await c.close()
                assert res["counts"].get("calls", 0) == 0, (user, res["counts"])
                for key in ("legs", "registrations", "sip_bans", "sip_dropped"):
                    assert key not in res["counts"], (user, key)
                assert "path" not in res["store"], (user, res["store"])
            root = await session(eng, "root")
            res = (await root.call("engine.status"))["result"]
            await root.close()
            assert res["counts"]["calls"] == 1 and "legs" in res["counts"]
    run(main(), timeout=30)


B_EVENTS = [
    ("call.ringing", {"call_id": "tbcall1", "tenant": "tb", "caller_number": "+4977100"},
     {"tenant": "tb", "agent": "9001", "queue": "tb_q", "groups": ["tb_sales"]}),
    ("call.answered", {"call_id": "tbcall1", "tenant": "tb"}, {"tenant": "tb", "agent": "9001", "queue": "tb_q",
                                                                "groups": ["tb_sales"]}),
    ("call.ended", {"call_id": "tbcall1", "tenant": "tb"}, {"tenant": "tb", "agent": "9001", "queue": "tb_q"}),
    ("call.held", {"call_id": "tbcall1", "tenant": "tb"}, {"tenant": "tb", "agent": "9001"}),
    ("call.blocked", {"call_id": "tbcall2", "tenant": "tb"}, {"tenant": "tb"}),
    ("agent.state", {"agent": "9001", "tenant": "tb", "state": "ready"},
     {"tenant": "tb", "agent": "9001", "groups": ["tb_sales"]}),
    ("queue.stats", {"queue": "tb_q", "tenant": "tb", "waiting": 3}, {"tenant": "tb", "queue": "tb_q",
                                                                      "groups": ["tb_sales"]}),
    ("campaign.preview", {"campaign": "tb_camp", "agent": "9001"}, {"tenant": "tb", "agent": "9001"}),
    ("campaign.state", {"campaign": "tb_camp", "state": "running"}, {"tenant": "tb", "groups": ["tb_sales"]}),
    ("callback.preview", {"id": 1, "tenant": "tb"}, {"tenant": "tb", "agent": "9001"}),
    ("voicemail.new", {"mailbox": "tb_q", "tenant": "tb"}, {"tenant": "tb", "queue": "tb_q"}),
    ("supervisor.joined", {"supervisor": "tb_sup", "call_id": "tbcall1"}, {"tenant": "tb",
                                                                          "groups": ["tb_sales"]}),
]


S_EVENTS = [
    ("agent.state", {"agent": "1002", "tenant": "ta", "state": "ready"},
     {"tenant": "ta", "agent": "1002", "groups": ["ta_support"]}),
    ("call.ringing", {"call_id": "tscall1", "tenant": "ta", "agent": "1002", "caller_number": "+4966200"},
     {"tenant": "ta", "agent": "1002", "queue": "ta_support_q", "groups": ["ta_support"]}),
    ("callback.changed", {"id": 2, "tenant": "ta", "assigned_agent": "1002", "queue": "ta_support_q"},
     {"tenant": "ta", "agent": "1002", "queue": "ta_support_q", "groups": ["ta_support"]}),
]


def test_no_event_of_another_tenant(tmp_path: pathlib.Path) -> None:
    """tb activity (bus events, real ops of tb users, the stats tick) reaches no ta subscriber."""
    async def main() -> None:
        async with two_tenants(tmp_path) as (eng, centre):
            ids = await seed(eng, centre, tmp_path)
            subs = {u: await session(eng, u) for u in A_ROLES}
            for c in subs.values():  # (RawConn.call drops events read before its reply: subscribe first)
                r = await c.call("events.subscribe", events=["*"])
                assert r["ok"], r
                # the stats event is built per session scope: ta's carry no tb data
                assert (await c.call("events.subscribe", events=["stats"]))["ok"]
            root = await session(eng, "root")
            assert (await root.call("events.subscribe", events=["*"]))["ok"]
            tb_admin = await session(eng, "tb_admin")
            try:
                for name, data, scope in B_EVENTS:
                    eng.bus.publish(name, data, **scope)
                # ta's support team (agent 1002): not for ta's sales supervisor nor agent 1001
                for name, data, scope in S_EVENTS:
                    eng.bus.publish(name, data, **scope)
                # real tb activity through ops (publishes callback.changed, agent.state, ...)
                assert (await tb_admin.call("callback.assign", id=ids["tb_cb"], agent="9002"))["ok"]
                assert (await tb_admin.call("agent.login", agent="9001", password=PW))["ok"]
                assert (await tb_admin.call("agent.ready", agent="9001"))["ok"]
                assert (await tb_admin.call("agent.force_state", agent="9001", state="logged_out"))["ok"]
                await tb_admin.call("campaign.import", name="tb_camp", csv="number\n+4977000777\n")
                from engine.realtime import find_stats
                svc = find_stats(eng)
                assert svc is not None
                svc.tick()
                # positive control: a ta event reaches ta's admin
                eng.bus.publish("agent.state", {"agent": "1001", "tenant": "ta", "state": "ready"},
                                tenant="ta", agent="1001", groups=["ta_sales"])
                await asyncio.sleep(0.3)
                for user, c in subs.items():
                    frames = []
                    with contextlib.suppress(asyncio.TimeoutError):
                        while True:
                            frames.append(await c.frame(timeout=0.2))
                    events = [f for f in frames if isinstance(f, dict) and "event" in f]
                    bad = [(f["event"], leaks(f)) for f in events if leaks(f)]
                    assert not bad, f"{user} received tb events: {bad}"
                    out_of_scope = frozenset({"1002", "ta_support"}), ("tscall", "+4966200")
                    got_s = [f["event"] for f in events if f["event"] != "stats" and leaks(f, *out_of_scope)]
                    if A_ROLES[user] in ("supervisor", "agent"):
                        assert not got_s, f"{user} received the support team's events: {got_s}"
                    else:
                        assert {"agent.state", "call.ringing"} <= set(got_s), (user, got_s, [f["event"] for f in events])
                    names = [f["event"] for f in events]
                    assert "stats" in names, (user, names)
                    if A_ROLES[user] in ("admin", "supervisor", "agent", "reporting"):
                        assert "agent.state" in names, (user, names)
                # the global admin did get tb's events (the detector and delivery work)
                frames = []
                with contextlib.suppress(asyncio.TimeoutError):
                    while True:
                        frames.append(await root.frame(timeout=0.2))
                got = {f["event"] for f in frames if isinstance(f, dict) and "event" in f and leaks(f)}
                assert {"call.ringing", "agent.state", "queue.stats", "callback.changed"} <= got, got
            finally:
                for c in (*subs.values(), root, tb_admin):
                    await c.close()
    run(main(), timeout=40)


# ---------------------------------------------------------------- the role x scope matrix (docs/tenants.md)

ROLE_ORDER = ("admin", "supervisor", "agent", "reporting")


def matrix_rows() -> list[str]:
    """One markdown row per op: which roles may call it, and the op's isolation case."""
    rows = []
    for name in registry.names():
        spec = registry.get(name)
        assert spec is not None
        marks = ["public" if spec.public else ("yes" if r in spec.roles else "—") for r in ROLE_ORDER]
        case = CASES[name]
        kind = {"target": "names an object: checked", "list": "reads the scope: filtered",
                "self": "own session only", "global": "global admins only", "skip": "public"}[case.kind]
        rows.append(f"| `{name}` | {' | '.join(marks)} | {'yes' if spec.changes_state else 'no'} | {kind} |")
    return rows


def test_docs_matrix_matches_registry() -> None:
    """docs/tenants.md holds the op table generated from the registry (regenerate: see the page)."""
    test_every_op_has_a_case()
    text = (ROOT / "docs" / "tenants.md").read_text()
    block = re.search(r"<!-- ops:begin -->\n(.*?)<!-- ops:end -->", text, re.S)
    assert block, "docs/tenants.md lacks the <!-- ops:begin --> ... <!-- ops:end --> table"
    have = [ln for ln in block.group(1).splitlines() if ln.startswith("| `")]
    want = matrix_rows()
    assert have == want, "docs/tenants.md op table is stale; expected rows:\n" + "\n".join(want)
    index = (ROOT / "docs" / "index.md").read_text()
    assert "tenants.md" in index


if __name__ == "__main__":  # print the table for docs/tenants.md
    test_every_op_has_a_case()
    print("\n".join(matrix_rows()))


# ---------------------------------------------------------------- scopes inside one tenant

# ta's support team: agent 1002 (extension 2902), group ta_support, queue ta_support_q,
# calls "tscall", caller +4966200.  ta_sup supervises ta_sales only; ta_agent is agent 1001.
S_AGENT = {"agent": "1002"}
S_CALL = {"call_id": "tscall1"}
SCOPE_CASES: dict[str, tuple[dict[str, Any], ...]] = {
    **{op: (S_AGENT,) for op in ("agent.logout", "agent.ready", "agent.wrapup_done")},
    "agent.login": ({"agent": "1002", "password": PW},),
    "agent.not_ready": ({"agent": "1002", "reason_code": "x"},),
    "agent.force_state": ({"agent": "1002", "state": "not_ready"},),
    **{op: (S_CALL,) for op in ("call.hangup", "call.answer", "call.get_data", "call.hold", "call.retrieve",
                                "call.transfer_complete", "call.conference", "call.consult_cancel")},
    "call.attach_data": ({**S_CALL, "data": {"k": "v"}},),
    "call.send_dtmf": ({**S_CALL, "digits": "1"},),
    "call.transfer": ({**S_CALL, "target": "agent:1001"},),
    "call.consult": ({**S_CALL, "target": "agent:1001"},),
    "call.dial": ({"agent": "1002", "number": "+4930123"},),
    **{f"supervisor.{m}": (S_AGENT, S_CALL) for m in ("listen", "whisper", "barge", "intercept", "force_release")},
    "callback.assign": ({"id": "S_CB", "agent": "1002"},),
    "callback.schedule": ({"id": "S_CB", "at": NOW + 3600},),
    "callback.complete": ({"id": "S_CB", "cancel": True},),
    "callback.dial": ({"id": "S_CB", "agent": "1001"},),
    "recording.fetch": ({"id": "S_REC"},),
    "kpi.report": ({"since": SINCE, "until": UNTIL, "dimension": "agent", "keys": ["1002"]},),
    "events.subscribe": ({"agents": ["1002"], "groups": ["ta_support"]},),
}
SCOPE_LISTS = {"agent.list": {}, "call.list": {}, "cdr.query": {"agent": "1002"}, "cdr.export": {"agent": "1002"},
               "recording.query": {}, "callback.list": {}, "stats.realtime": {}, "state.snapshot": {},
               "supervisor.list": {}, "campaign.list": {}}


def test_supervisor_and_agent_scopes_inside_a_tenant(tmp_path: pathlib.Path) -> None:
    """ta's supervisor (ta_sales) and agent (1001) against ta_support's agent, calls, callbacks,
    recordings: forbidden/not_found, and list answers without them; admin and reporting see them."""
    by_role = {"supervisor": (frozenset({"1002", "2902", "ta_support", "ta_support_q"}), ("tscall", "+4966200")),
               # an agent sees its tenant's queue names (queue.list), never other agents' calls or data
               "agent": (frozenset({"1002", "2902"}), ("tscall", "+4966200"))}

    async def main() -> list[str]:
        problems: list[str] = []
        async with two_tenants(tmp_path) as (eng, centre):
            ids = await seed(eng, centre, tmp_path)
            users = {"supervisor": await session(eng, "ta_sup"), "agent": await session(eng, "ta_agent")}
            try:
                for role, conn in users.items():
                    exact, substr = by_role[role]
                    for name, variants in SCOPE_CASES.items():
                        for variant in variants:
                            args = resolve(variant, ids)
                            reply = await conn.call(name, **args)
                            where = f"{name}{args} as {role}"
                            found = reply_leaks(reply, args, exact, substr)
                            code = None if reply["ok"] else reply["error"]["code"]
                            if found:
                                problems.append(f"{where}: out-of-scope data at {found[:3]}")
                            elif code not in ("forbidden", "not_found"):
                                problems.append(f"{where}: expected forbidden/not_found, got {reply}")
                    for name, args in SCOPE_LISTS.items():
                        reply = await conn.call(name, **args)
                        found = reply_leaks(reply, args, exact, substr)
                        if found or (not reply["ok"] and reply["error"]["code"] != "forbidden"):
                            problems.append(f"{name}{args} as {role}: {found[:3] or reply}")
                # positive control: the tenant's admin and reporting user do see the support team
                for user in ("ta_admin", "ta_rep"):
                    c = await session(eng, user)
                    for name in ("cdr.query", "recording.query", "callback.list", "agent.list"):
                        res = await c.call(name)
                        assert res["ok"] and leaks(res["result"], *by_role["supervisor"]), (user, name, res)
                    await c.close()
            finally:
                for c in users.values():
                    await c.close()
        return problems

    problems = run(main(), timeout=60)
    assert not problems, "scope leaks:\n" + "\n".join(problems)


def test_reporting_role_is_read_only() -> None:
    """Every op the reporting role may call reads; the only audited ones are exports/downloads."""
    test_every_op_has_a_case()
    audited_reads = {"cdr.export", "recording.fetch"}
    for spec in registry.specs():
        if "reporting" in spec.roles and spec.changes_state:
            assert spec.name in audited_reads, f"{spec.name} changes state yet the reporting role may call it"
