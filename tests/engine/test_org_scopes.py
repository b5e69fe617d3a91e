"""Departments, teams and data scopes (engine/orgscope.py, docs/tenants.md).

Tenant ``ta`` of test_tenant_isolation's engine is organised as::

    ta_sales_dept  - team ta_team_a: agent 1001 (group ta_sales, queue ta_q)
                   - no team:        agent 1003 (group ta_sales)
    ta_support_dept- team ta_team_s: agent 1002 (group ta_support, queue ta_support_q)

Users: ``ta_dept_sup`` (supervisor) and ``ta_dept_admin`` (admin) of scope
department ta_sales_dept; ``ta_team_sup`` (supervisor) and ``ta_team_rep``
(reporting) of scope team ta_team_a.  The role x scope matrix: every
narrowed user, every op that names an object outside its scope (the support
department; for team users also agent 1003) answers ``forbidden`` or
``not_found``; every list, query, export, snapshot and event stream holds
nothing outside the scope; and the same detectors find in-scope data
(positive controls), so the checks can fail.
"""
from __future__ import annotations

import asyncio
import contextlib
import pathlib
from typing import Any

import pytest

from engine.config import parse_config
from engine.errors import ConfigError
from engine.ops import Session
from engine.orgscope import DataScope, resolve_scope
from engine.passwords import hash_password
from foundation_helpers import run
from test_tenant_isolation import (
    NOW, PW, S_EVENTS, SCOPE_CASES, SCOPE_LISTS, leaks, reply_leaks, resolve, seed, session, two_tenants,
)

SUPPORT = (frozenset({"1002", "2902", "ta_support", "ta_support_q", "ta_team_s", "ta_support_dept"}),
           ("tscall", "+4966200"))
"""Markers of the support department (out of every narrowed user's scope)."""
ADA = (frozenset({"1003", "2903"}), ("tdcall", "+4966300"))
"""Markers of agent 1003 (sales department, no team): out of the team scopes."""
ANN = (frozenset({"1001"}), ("tacall", "+4966100"))
NARROWED = {"ta_dept_sup": "department", "ta_dept_admin": "department", "ta_team_sup": "team",
            "ta_team_rep": "team"}

# Ops naming agent 1003 or its rows (team scopes must refuse them; department scopes may act).
ADA_AGENT = {"agent": "1003"}
ADA_CASES: dict[str, tuple[dict[str, Any], ...]] = {
    **{op: (ADA_AGENT,) for op in ("agent.logout", "agent.ready", "agent.wrapup_done")},
    "agent.not_ready": ({"agent": "1003", "reason_code": "x"},),
    "agent.force_state": ({"agent": "1003", "state": "not_ready"},),
    "call.dial": ({"agent": "1003", "number": "+4930123"},),
    **{f"supervisor.{m}": (ADA_AGENT,) for m in ("listen", "whisper", "barge", "intercept", "force_release")},
    "callback.assign": ({"id": "D_CB", "agent": "1001"},),
    "callback.complete": ({"id": "D_CB", "cancel": True},),
    "recording.fetch": ({"id": "D_REC"},),
    "kpi.report": ({"since": NOW - 86400, "until": NOW + 86400, "dimension": "agent", "keys": ["1003"]},),
    "events.subscribe": ({"agents": ["1003"]},),
    "campaign.status": ({"name": "ta_camp"},),  # a campaign of group ta_sales: no team's own
}


async def seed_ada(eng: Any) -> dict[str, int]:
    """CDR, recording and callback of agent 1003 (sales department, no team)."""
    store = eng.store
    store.append("cdr", {"call_id": "tdcall0", "tenant": "ta", "direction": "inbound", "caller_number": "+4966300",
                         "dialed_number": "800", "trunk": "ta_trunk", "queue": "ta_q", "grp": "ta_sales",
                         "agent": "1003", "start_ts": NOW - 600, "answered_ts": NOW - 590, "end_ts": NOW - 500,
                         "talk_s": 90.0, "disposition": "answered"})
    store.append("recordings", {"call_id": "tdcall0", "tenant": "ta", "path": "tdcall0.wav", "start_ts": NOW - 590,
                                "duration_s": 90.0, "agent": "1003", "grp": "ta_sales", "queue": "",
                                "caller_number": "+4966300", "bytes": 10})
    store.append("callbacks", {"tenant": "ta", "call_id": "tdcall0", "caller_number": "+4966300", "queue": "",
                               "requested_ts": NOW - 400, "assigned_agent": "1003"})
    await store.aflush()
    return {"D_REC": store.select("recordings", {"call_id": "tdcall0"})[0]["id"],
            "D_CB": store.select("callbacks", {"call_id": "tdcall0"})[0]["id"]}


def _check(reply: dict[str, Any], args: dict[str, Any], where: str, markers: Any) -> list[str]:
    found = reply_leaks(reply, args, *markers)
    code = None if reply["ok"] else reply["error"]["code"]
    if found:
        return [f"{where}: out-of-scope data at {found[:3]}"]
    if code not in ("forbidden", "not_found"):
        return [f"{where}: expected forbidden/not_found, got {reply}"]
    return []


# ---------------------------------------------------------------- the matrix on a running engine


def test_role_scope_matrix(tmp_path: pathlib.Path) -> None:
    """Every narrowed user against the support department (and team users against agent 1003):
    forbidden/not_found for named objects, nothing in lists, queries and exports."""
    async def main() -> list[str]:
        problems: list[str] = []
        async with two_tenants(tmp_path) as (eng, centre):
            ids = await seed(eng, centre, tmp_path)
            ids_d = await seed_ada(eng)
            conns = {u: await session(eng, u) for u in NARROWED}
            try:
                for user, conn in conns.items():
                    kind = NARROWED[user]
                    cases = [(SCOPE_CASES, SUPPORT, ids)]
                    if kind == "team":
                        cases.append((ADA_CASES, ADA, ids_d))
                    for table, markers, rows in cases:
                        for name, variants in table.items():
                            for variant in variants:
                                args = {k: rows.get(v, v) if isinstance(v, str) else v
                                        for k, v in resolve(variant, ids).items()}
                                reply = await conn.call(name, **args)
                                problems += _check(reply, args, f"{name}{args} as {user}", markers)
                    out = (frozenset(SUPPORT[0] | (ADA[0] if kind == "team" else frozenset())),
                           SUPPORT[1] + (ADA[1] if kind == "team" else ()))
                    for name, args in {**SCOPE_LISTS, "cdr.query": {}, "cdr.export": {}, "queue.list": {},
                                       "kpi.report": {"since": NOW - 86400, "until": NOW + 86400,
                                                      "dimension": "agent"}}.items():
                        reply = await conn.call(name, **args)
                        found = reply_leaks(reply, args, *out)
                        if found or (not reply["ok"] and reply["error"]["code"] != "forbidden"):
                            problems.append(f"{name}{args} as {user}: {found[:3] or reply}")
                    # positive controls: the scope's own rows are there
                    for name in ("cdr.query", "recording.query", "callback.list", "agent.list"):
                        res = await conn.call(name)
                        if not (res["ok"] and leaks(res["result"], *ANN)):
                            problems.append(f"{name} as {user}: agent 1001's rows missing: {res}")
                        if kind == "department" and not leaks(res.get("result"), *ADA):
                            problems.append(f"{name} as {user}: agent 1003's rows missing (department scope)")
                    export = await conn.call("cdr.export")
                    assert export["ok"] and b"tacall0" in export["result"]["data"], (user, export)
                    assert b"tscall0" not in export["result"]["data"]
            finally:
                for c in conns.values():
                    await c.close()
        return problems

    problems = run(main(), timeout=90)
    assert not problems, "scope leaks:\n" + "\n".join(problems)


def test_department_scope_acts_inside_its_department(tmp_path: pathlib.Path) -> None:
    """A department admin changes its own department's agents (1001 and 1003, no team needed);
    the audit log is organisation-wide (forbidden); the support department is refused."""
    async def main() -> None:
        async with two_tenants(tmp_path) as (eng, centre):
            await seed(eng, centre, tmp_path)
            admin = await session(eng, "ta_dept_admin")
            try:
                for agent in ("1001", "1003"):
                    r = await admin.call("agent.login", agent=agent, password=PW)
                    assert r["ok"], r
                    assert (await admin.call("agent.ready", agent=agent))["ok"]
                r = await admin.call("agent.login", agent="1002", password=PW)
                assert r["error"]["code"] == "forbidden", r
                for op in ("audit.query", "audit.export"):
                    r = await admin.call(op)
                    assert not r["ok"] and r["error"]["code"] == "forbidden", (op, r)
                r = await admin.call("screening.add", list="ta_block", number="+4930111")
                assert r["error"]["code"] in ("forbidden", "not_found"), r  # a tenant-wide list
                me = await admin.call("ops.list")
                assert me["ok"]
                status = (await admin.call("engine.status"))["result"]
                assert status["counts"] == {"calls": 1}, status["counts"]  # tacall1 (1001); not tscall1
                tenant_admin = await session(eng, "ta_admin")
                assert (await tenant_admin.call("audit.query"))["ok"]  # organisation scope: allowed
                await tenant_admin.close()
            finally:
                await admin.close()
    run(main(), timeout=30)


def test_events_follow_the_scope(tmp_path: pathlib.Path) -> None:
    """Support-department events reach no narrowed user; 1003's reach the department, not the team;
    1001's reach all of them (positive control); stats events are built per scope."""
    ada_event = ("agent.state", {"agent": "1003", "tenant": "ta", "state": "ready"},
                 {"tenant": "ta", "agent": "1003", "groups": ["ta_sales"]})
    ann_event = ("agent.state", {"agent": "1001", "tenant": "ta", "state": "ready"},
                 {"tenant": "ta", "agent": "1001", "groups": ["ta_sales"]})
    untied = ("call.routing", {"call_id": "tacall9", "tenant": "ta", "caller_number": "+4966999"}, {"tenant": "ta"})

    async def main() -> None:
        async with two_tenants(tmp_path) as (eng, centre):
            await seed(eng, centre, tmp_path)
            conns = {u: await session(eng, u) for u in NARROWED}
            try:
                for c in conns.values():
                    assert (await c.call("events.subscribe", events=["*"]))["ok"]
                for name, data, scope in [*S_EVENTS, ada_event, ann_event, untied]:
                    eng.bus.publish(name, data, **scope)
                from engine.realtime import find_stats
                svc = find_stats(eng)
                assert svc is not None
                svc.tick()
                await asyncio.sleep(0.3)
                for user, c in conns.items():
                    frames = []
                    with contextlib.suppress(asyncio.TimeoutError):
                        while True:
                            frames.append(await c.frame(timeout=0.2))
                    events = [f for f in frames if isinstance(f, dict) and "event" in f]
                    assert not [f for f in events if leaks(f, *SUPPORT)], (user, events)
                    assert not [f for f in events if "tacall9" in repr(f)], (user, "untied call event")
                    got_ada = [f for f in events if f["event"] == "agent.state" and f["data"]["agent"] == "1003"]
                    assert bool(got_ada) == (NARROWED[user] == "department"), (user, events)
                    assert any(f["event"] == "agent.state" and f["data"]["agent"] == "1001" for f in events), user
                    stats = [f for f in events if f["event"] == "stats"]
                    assert stats and not leaks(stats, *SUPPORT), (user, stats)
                    if NARROWED[user] == "team":
                        assert not leaks(stats, *ADA), (user, stats)
            finally:
                for c in conns.values():
                    await c.close()
    run(main(), timeout=40)


# ---------------------------------------------------------------- sans-IO: Session.sees and resolve_scope

HASH = hash_password(PW, n=1024)
ORG = f"""
[tenants.t]
[departments.sales]
tenant = "t"
[departments.care]
tenant = "t"
[teams.north]
tenant = "t"
department = "sales"
[groups.g_sales]
tenant = "t"
department = "sales"
[groups.g_care]
tenant = "t"
department = "care"
[agents.1]
name = "a"
tenant = "t"
password = "{HASH}"
team = "north"
groups = ["g_care"]
[agents.2]
name = "b"
tenant = "t"
password = "{HASH}"
department = "sales"
[agents.3]
name = "c"
tenant = "t"
password = "{HASH}"
department = "care"
groups = ["g_sales"]
[users.d]
password = "{HASH}"
role = "reporting"
tenant = "t"
scope = "department"
department = "sales"
[users.n]
password = "{HASH}"
role = "supervisor"
tenant = "t"
scope = "team"
team = "north"
"""


def _session(user: str) -> Session:
    cfg = parse_config(ORG)
    u = cfg.users[user]
    s = Session(peer="t", user=user, role=u.role, tenant=u.tenant)
    s.apply_scope(resolve_scope(cfg, u))
    return s


def test_resolve_scope_follows_the_chart() -> None:
    cfg = parse_config(ORG)
    assert resolve_scope(cfg, cfg.users["d"]) == DataScope("department", "sales", frozenset({"g_sales"}),
                                                           frozenset({"1", "2"}))
    assert resolve_scope(cfg, cfg.users["n"]) == DataScope("team", "north", frozenset(), frozenset({"1"}))


@pytest.mark.parametrize("user,obj,visible", [
    ("d", {"tenant": "t", "agent": "1"}, True),                       # team north is in sales
    ("d", {"tenant": "t", "agent": "2"}, True),                       # directly in sales
    ("d", {"tenant": "t", "agent": "3"}, False),                      # care
    ("d", {"tenant": "t", "agent": "3", "groups": {"g_sales"}}, True),  # care's agent on a sales queue's call
    ("d", {"tenant": "t", "agent": "", "groups": {"g_care"}}, False),
    ("d", {"tenant": "t", "groups": {"g_sales"}}, True),
    ("d", {"tenant": "t"}, False),                                    # tied to no department
    ("d", {"tenant": "u", "agent": "1"}, False),                      # another tenant
    ("n", {"tenant": "t", "agent": "1", "groups": {"g_care"}}, True),
    ("n", {"tenant": "t", "agent": "2"}, False),                      # sales, not in team north
    ("n", {"tenant": "t", "groups": {"g_sales"}}, False),             # teams own no group
    ("n", {"tenant": "t", "agent": None}, False),
])
def test_sees_matrix(user: str, obj: dict[str, Any], visible: bool) -> None:
    s = _session(user)
    assert s.sees(**obj) is visible


# ---------------------------------------------------------------- load-time validation


@pytest.mark.parametrize("extra,reason", [
    ('[teams.south]\ntenant = "t"\n', "teams.south: missing required key 'department'"),
    ('[teams.south]\ntenant = "t"\ndepartment = "nope"\n', "teams.south.department: unknown department 'nope'"),
    ('[tenants.u]\n[departments.other]\ntenant = "u"\n[teams.south]\ntenant = "t"\ndepartment = "other"\n',
     "teams.south.department: department 'other' belongs to tenant 'u', not 't'"),
    (f'[agents.9]\nname = "x"\ntenant = "t"\npassword = "{HASH}"\nteam = "north"\ndepartment = "care"\n',
     "agents.9.department: agent's team 'north' belongs to department 'sales', not 'care'"),
    (f'[agents.9]\nname = "x"\ntenant = "t"\npassword = "{HASH}"\nteam = "west"\n',
     "agents.9.team: unknown team 'west'"),
    (f'[users.x]\npassword = "{HASH}"\nrole = "admin"\ntenant = "t"\nscope = "department"\n',
     "users.x: scope 'department' needs 'department'"),
    (f'[users.x]\npassword = "{HASH}"\nrole = "supervisor"\ntenant = "t"\nscope = "team"\nteam = "north"\n'
     'groups = ["g_sales"]\n', "users.x.groups: 'groups' is for scope 'groups'"),
    (f'[users.x]\npassword = "{HASH}"\nrole = "agent"\ntenant = "t"\nagent = "1"\nscope = "team"\nteam = "north"\n',
     "users.x.scope: users of role 'agent' have scope 'self'"),
    (f'[users.x]\npassword = "{HASH}"\nrole = "admin"\ntenant = "*"\nscope = "department"\ndepartment = "sales"\n',
     "users.x.scope: a global administrator (tenant '*') has scope 'organisation'"),
    (f'[users.x]\npassword = "{HASH}"\nrole = "reporting"\ntenant = "t"\nteam = "north"\n',
     "users.x.team: 'team' is for scope = 'team'"),
    (f'[users.x]\npassword = "{HASH}"\nrole = "reporting"\ntenant = "t"\nscope = "self"\n',
     "users.x.scope: scope 'self' is for users of role 'agent'"),
    ('[groups.g_x]\ntenant = "t"\ndepartment = "nope"\n', "groups.g_x.department: unknown department 'nope'"),
])
def test_org_chart_errors_name_file_line_and_reason(extra: str, reason: str) -> None:
    text = ORG + extra
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "centre.toml")
    lines = [ln for ln in exc.value.errors if reason in ln]
    assert lines, (reason, exc.value.errors)
    line_no = int(lines[0].split(":")[1])
    assert lines[0].startswith("centre.toml:") and line_no > ORG.count("\n"), lines[0]


def test_supervisor_without_groups_needs_a_scope() -> None:
    base = ORG + f'[users.x]\npassword = "{HASH}"\nrole = "supervisor"\ntenant = "t"\n'
    with pytest.raises(ConfigError, match="a supervisor needs at least one supervised group"):
        parse_config(base)
    parse_config(base + 'scope = "organisation"\n')  # a tenant-wide supervisor: fine


def test_docs_example_loads() -> None:
    """The organisation example of docs/tenants.md is a valid configuration with the scopes it describes."""
    import re

    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "tenants.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    cfg = parse_config(block.replace("scrypt$...", HASH), "docs/tenants.md")
    head = resolve_scope(cfg, cfg.users["sales_head"])
    assert head.agents == {"1001", "1003"} and head.groups == {"sales_de"}
    assert resolve_scope(cfg, cfg.users["north_lead"]).agents == {"1001"}
