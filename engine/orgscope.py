"""Organisation chart and data scopes: tenant > department > team > agent.

Theory of operation
-------------------
A call centre is organised as *organisation* (the tenant) > *departments*
(``[departments.NAME]``, e.g. sales, support) > *teams* (``[teams.NAME]``
with ``department``; a team lead's people) > *agents* (``[agents.N] team``,
or ``department`` for an agent in no team).  Routing groups are a separate
axis (who may take which queue's calls); a group may belong to a department
(``[groups.NAME] department``), and with it the queues it serves.

A control user's **data scope** (``[users.NAME] scope``) is one of:

==============  ===============================================================
scope           sees
==============  ===============================================================
organisation    the whole tenant (every tenant for global admins)
department      agents of the department (directly or through its teams), the
                department's groups, the queues those groups serve, and the
                calls, CDRs, recordings, callbacks, KPI rows and campaigns tied
                to those agents, groups or queues
team            the team's agents and what is tied to them (their calls, CDRs,
                recordings, callbacks, KPI rows); no queue or group of its own
groups          (supervisors' default) the supervised ``groups``, their queues
                and agents
self            (agents) the user's own agent
==============  ===============================================================

An empty ``scope`` is the role's default: ``organisation`` for admins and
reporting users, ``groups`` for supervisors, ``self`` for agents.  Roles and
scopes are orthogonal: a department-scoped admin changes everything of its
department and nothing else; a team-scoped reporting user reads its team.

Objects of the tenant tied to no agent and no group of a department or
team scope (a screening list, a call still in an IVR, a campaign without
groups, tenant-wide KPI dimensions such as trunks and dialed numbers) are
organisation-level: outside every narrower scope.

Scopes follow the *current* organisation chart: a CDR is in a department's
scope when its agent is in the department now, or its queue or group
belongs to the department now (moving an agent to another team moves its
history with it, as in most reporting tools).

:func:`resolve_scope` turns a user into a :class:`DataScope` once at
``auth``; :meth:`engine.ops.Session.sees` applies it to every object.
:func:`check_organisation` validates the chart at load time (one
``FILE:LINE: key: reason`` per problem, like every config check).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from engine.config import Config, User

SCOPES = ("organisation", "department", "team", "groups", "self")
ROLE_DEFAULT_SCOPE = {"admin": "organisation", "reporting": "organisation", "supervisor": "groups",
                      "agent": "self"}


@dataclass(frozen=True, slots=True)
class DataScope:
    """What one user may see inside its tenant (see the module docstring)."""

    kind: str
    name: str = ""
    """The department or team (empty for the other kinds)."""
    groups: frozenset[str] = frozenset()
    """Groups in scope (``groups``, ``department``)."""
    agents: frozenset[str] = frozenset()
    """Agents in scope (``department``, ``team``, ``self``)."""

    def describe(self) -> dict[str, Any]:
        return {"scope": self.kind, "name": self.name}


def effective_scope(user: "User") -> str:
    """The user's scope kind: ``[users.NAME] scope`` or the role's default."""
    return user.scope or ROLE_DEFAULT_SCOPE.get(user.role, "organisation")


def agent_department(cfg: "Config", number: str) -> str:
    """The department of agent ``number`` (through its team when it has one)."""
    a = cfg.agents.get(number)
    if a is None:
        return ""
    if a.team and a.team in cfg.teams:
        return cfg.teams[a.team].department
    return a.department


def department_agents(cfg: "Config", department: str) -> frozenset[str]:
    return frozenset(n for n in cfg.agents if agent_department(cfg, n) == department)


def department_groups(cfg: "Config", department: str) -> frozenset[str]:
    return frozenset(n for n, g in cfg.groups.items() if g.department == department)


def team_agents(cfg: "Config", team: str) -> frozenset[str]:
    return frozenset(n for n, a in cfg.agents.items() if a.team == team)


def resolve_scope(cfg: "Config", user: "User") -> DataScope:
    """The :class:`DataScope` of ``user`` under ``cfg`` (computed at ``auth``)."""
    kind = effective_scope(user)
    if kind == "department":
        return DataScope(kind, user.department, department_groups(cfg, user.department),
                         department_agents(cfg, user.department))
    if kind == "team":
        return DataScope(kind, user.team, frozenset(), team_agents(cfg, user.team))
    if kind == "groups":
        return DataScope(kind, groups=frozenset(user.groups))
    if kind == "self":
        return DataScope(kind, agents=frozenset({user.agent}))
    return DataScope("organisation")


def queues_of_groups(cfg: "Config", groups: frozenset[str] | set[str]) -> list[str]:
    """Queues served by any of ``groups`` (directly or in a tier)."""
    return sorted(n for n, q in cfg.queues.items()
                  if groups & (set(q.groups) | {g for t in q.tiers for g in t.groups}))


Add = Callable[[tuple, str], None]


def check_organisation(cfg: "Config", add: Add, known: Callable[..., bool], tenant_ok: Callable[..., None]) -> None:
    """Load-time checks of departments, teams, agents' and groups' membership and users' scopes.

    ``add(path, reason)`` reports one problem; ``known`` and ``tenant_ok`` are
    the reference checks of :func:`engine.config._check_references` (unknown
    name, other tenant's entity).
    """
    for name, d in cfg.departments.items():
        tenant_ok(("departments", name), d.tenant)
    for name, t in cfg.teams.items():
        p = ("teams", name)
        tenant_ok(p, t.tenant)
        if not t.department:
            add(p, "missing required key 'department' (a team belongs to one department)")
        else:
            known(p + ("department",), "department", t.department, cfg.departments, "departments", t.tenant)
    for name, g in cfg.groups.items():
        if g.department:
            known(("groups", name, "department"), "department", g.department, cfg.departments, "departments",
                  g.tenant)
    for number, a in cfg.agents.items():
        p = ("agents", number)
        team_ok = bool(a.team) and known(p + ("team",), "team", a.team, cfg.teams, "teams", a.tenant)
        if a.department and known(p + ("department",), "department", a.department, cfg.departments,
                                  "departments", a.tenant):
            if team_ok and cfg.teams[a.team].department != a.department:
                add(p + ("department",), f"agent's team {a.team!r} belongs to department "
                                         f"{cfg.teams[a.team].department!r}, not {a.department!r}")
    for name, u in cfg.users.items():
        _check_user_scope(cfg, ("users", name), u, add, known)


def _check_user_scope(cfg: "Config", p: tuple, u: "User", add: Add, known: Callable[..., bool]) -> None:
    from engine.config import GLOBAL_TENANT

    kind = effective_scope(u)
    if u.tenant == GLOBAL_TENANT and kind != "organisation":
        add(p + ("scope",), "a global administrator (tenant '*') has scope 'organisation'")
        return
    if u.role == "agent" and kind != "self":
        add(p + ("scope",), f"users of role 'agent' have scope 'self', not {kind!r}")
    if kind == "self" and u.role != "agent":
        add(p + ("scope",), "scope 'self' is for users of role 'agent' (the agent they act as)")
    if kind == "groups" and u.role != "supervisor":
        add(p + ("scope",), "scope 'groups' is for supervisors (the groups in 'groups')")
    if u.groups and kind != "groups":
        add(p + ("groups",), f"'groups' is for scope 'groups'; scope {kind!r} does not use it")
    for unit, table, section in (("department", cfg.departments, "departments"), ("team", cfg.teams, "teams")):
        value = getattr(u, unit)
        if kind == unit and not value:
            add(p, f"scope {unit!r} needs {unit!r} (the [{section}] entry the user sees)")
        elif kind == unit:
            known(p + (unit,), unit, value, table, section, u.tenant)
        elif value:
            add(p + (unit,), f"{unit!r} is for scope = {unit!r}")
