"""The control-op registry: op name → handler, allowed roles, argument schema.

Theory of operation
-------------------
A control op is an ``async def handler(ctx, args)`` registered once with
:meth:`OpRegistry.op`::

    @registry.op("agent.ready", roles=AGENT_ROLES, changes_state=True,
                 args=[Arg("agent", str), Arg("reason_code", str, default="")])
    async def agent_ready(ctx: OpContext, args: dict) -> dict: ...

Before the handler runs, :meth:`OpRegistry.dispatch` checks, in this order:
the op exists (``unknown_op``), the session is authenticated unless the op
is public (``unauthorized``), the role is allowed (``forbidden``), the
arguments match the schema (``invalid_args``: unknown key, missing required,
wrong type; defaults filled in).  Data scopes (tenant, then organisation,
department, team, supervised groups or own agent: :mod:`engine.orgscope`)
are the handler's to check with the helpers on
:class:`Session`, since only the handler knows which object an op touches.
Ops with ``changes_state=True`` write an audit row whatever the outcome.

The registry knows nothing about sockets: the control server hands it a
decoded request map and a session, and gets back a reply map.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from engine.config import GLOBAL_TENANT, ROLES
from engine.errors import EngineError, Forbidden, InvalidArgs, NotFound, Unauthorized, UnknownOp, error_reply
from engine.orgscope import ROLE_DEFAULT_SCOPE, DataScope

if TYPE_CHECKING:
    from engine.app import Engine

ALL_ROLES = frozenset(ROLES)
ADMIN = frozenset({"admin"})
SUPERVISOR_ROLES = frozenset({"admin", "supervisor"})
AGENT_ROLES = frozenset({"admin", "supervisor", "agent"})
READ_ROLES = ALL_ROLES

_MISSING = object()
_SECRET_KEYS = ("password", "secret", "token")
AUDIT_ARGS_MAX = 500


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an op: name, accepted type(s), default (absent = required)."""

    name: str
    type: type | tuple[type, ...]
    default: Any = _MISSING
    doc: str = ""
    item_type: type | None = None  # for list arguments: type of each element
    choices: tuple[Any, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(slots=True)
class Session:
    """Who is on a connection: set by ``auth``; ``user`` empty before that."""

    peer: str
    user: str = ""
    role: str = ""
    tenant: str = ""
    groups: frozenset[str] = frozenset()
    agent: str = ""
    authenticated_at: float = 0.0
    failures: int = 0
    scope: str = ""
    """Data scope kind (:mod:`engine.orgscope`); empty: the role's default."""
    scope_name: str = ""
    """The department or team of a ``department``/``team`` scope."""
    agents: frozenset[str] = frozenset()
    """Agents in a ``department``/``team`` scope."""

    @property
    def authenticated(self) -> bool:
        return bool(self.user)

    @property
    def scope_kind(self) -> str:
        """``organisation``, ``department``, ``team``, ``groups`` or ``self``."""
        return self.scope or ROLE_DEFAULT_SCOPE.get(self.role, "organisation")

    @property
    def self_scoped(self) -> bool:
        """True for users who see only their own agent (agents)."""
        return self.scope_kind == "self"

    @property
    def narrowed(self) -> bool:
        """True when the scope is narrower than the whole tenant."""
        return self.scope_kind != "organisation"

    def apply_scope(self, scope: DataScope) -> None:
        """Take the user's resolved scope (``auth``)."""
        self.scope, self.scope_name = scope.kind, scope.name
        self.agents = scope.agents
        if scope.kind in ("groups", "department"):
            self.groups = scope.groups

    def sees_tenant(self, tenant: str) -> bool:
        """True when this user may see objects of ``tenant``."""
        return self.tenant == GLOBAL_TENANT or self.tenant == tenant

    def sees(self, *, tenant: str, group: str | None = None, groups: frozenset[str] | set[str] | None = None,
             agent: str | None = None) -> bool:
        """Data scope: tenant always, then the user's scope (:mod:`engine.orgscope`).

        ``group``/``groups``/``agent`` describe the object; ``None`` means the
        object is not tied to one (e.g. a tenant-wide event), ``""`` for
        ``agent`` that it could be but is not (a call with no agent yet).
        ``groups`` scope (supervisors): an object with groups must share one.
        ``self`` scope (agents): an object tied to an agent must be its own.
        ``department``/``team``: the object's agent is in scope, or one of its
        groups is; an object tied to neither is outside.
        """
        if not self.sees_tenant(tenant):
            return False
        kind = self.scope_kind
        if kind == "organisation":
            return True
        obj_groups = set(groups or ()) | ({group} if group else set())
        if kind == "groups":
            return not obj_groups or bool(obj_groups & self.groups)
        if kind == "self":
            return agent is None or agent == self.agent
        return bool(agent and agent in self.agents) or bool(obj_groups & self.groups)

    def require_organisation(self, what: str) -> None:
        """Raise ``forbidden`` for a narrowed scope: ``what`` is organisation-wide (the audit log)."""
        if self.narrowed and self.role == "admin":
            raise Forbidden(f"{what} is organisation-wide: user {self.user!r} has scope {self.scope_kind!r}")

    def require(self, **scope: Any) -> None:
        """Raise unless :meth:`sees` the described object: ``not_found`` for another
        tenant's object (its existence is not confirmed), ``forbidden`` for one of
        the user's tenant outside its scope."""
        if not self.sees_tenant(scope.get("tenant", "")):
            raise NotFound("no such object visible to this user")
        if not self.sees(**scope):
            raise Forbidden(f"user {self.user!r} ({self.role}) may not act on that object")

    def describe(self) -> dict[str, Any]:
        return {"user": self.user, "role": self.role, "tenant": self.tenant,
                "groups": sorted(self.groups), "agent": self.agent, "scope": self.scope_kind,
                "scope_name": self.scope_name}


def sees_engine_wide(session: Session, config: Any) -> bool:
    """May ``session`` see engine-wide figures (all legs, registrations, bans,
    connections, the store's path)?  Global users (tenant ``*``) may; so may
    everybody when the configuration declares no tenant besides ``default``
    (then engine-wide is tenant-wide).  In a multi-tenant engine a tenant's
    user never does: the figures would count other tenants' calls and phones.
    """
    if session.scope_kind in ("department", "team"):
        return False  # engine-wide counts would include other departments' calls
    return session.tenant == GLOBAL_TENANT or not getattr(config, "tenants", None)


@dataclass(slots=True)
class OpContext:
    """What a handler gets besides its arguments."""

    engine: "Engine"
    session: Session
    connection: Any  # engine.control.Connection; Any keeps ops free of the server
    request_id: Any = None


Handler = Callable[[OpContext, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class OpSpec:
    name: str
    handler: Handler
    roles: frozenset[str]
    args: tuple[Arg, ...]
    changes_state: bool
    public: bool  # may run before auth
    doc: str = ""


_TYPE_WORDS = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               dict: "map", type(None): "nil", bytes: "binary"}


def _type_word(tp: type | tuple[type, ...]) -> str:
    if isinstance(tp, tuple):
        return " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in tp)
    return _TYPE_WORDS.get(tp, tp.__name__)


def _matches(value: Any, tp: type | tuple[type, ...]) -> bool:
    types_ = tp if isinstance(tp, tuple) else (tp,)
    if isinstance(value, bool) and bool not in types_:
        return False  # True is an int in Python, never on the wire
    if float in types_ and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types_)


def validate_args(spec: OpSpec, raw: Any) -> dict[str, Any]:
    """Check ``raw`` against ``spec.args``; returns a new dict with defaults filled.

    Raises :class:`InvalidArgs` naming the op, the argument and the problem.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidArgs(f"{spec.name}: 'args' must be a map, got {_type_word(type(raw))}")
    known = {a.name: a for a in spec.args}
    for key in raw:
        if key not in known:
            expected = ", ".join(known) or "none"
            raise InvalidArgs(f"{spec.name}: unknown argument {key!r} (expected: {expected})")
    out: dict[str, Any] = {}
    for a in spec.args:
        if a.name not in raw:
            if a.required:
                raise InvalidArgs(f"{spec.name}: missing required argument {a.name!r}")
            out[a.name] = list(a.default) if isinstance(a.default, (list, tuple)) else a.default
            continue
        value = raw[a.name]
        if not _matches(value, a.type):
            raise InvalidArgs(f"{spec.name}: argument {a.name!r} must be {_type_word(a.type)}, "
                              f"got {_type_word(type(value))}")
        if a.item_type is not None and isinstance(value, list):
            for i, item in enumerate(value):
                if not _matches(item, a.item_type):
                    raise InvalidArgs(f"{spec.name}: argument {a.name}[{i}] must be {_type_word(a.item_type)}, "
                                      f"got {_type_word(type(item))}")
        if a.choices is not None and value not in a.choices:
            raise InvalidArgs(f"{spec.name}: argument {a.name!r} must be one of {', '.join(map(str, a.choices))}")
        if isinstance(a.type, type) and a.type is float and isinstance(value, int):
            value = float(value)
        out[a.name] = value
    return out


def summarize_args(args: dict[str, Any]) -> str:
    """JSON of ``args`` for the audit log, secrets masked, at most 500 characters."""
    def mask(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: ("***" if any(s in str(k).lower() for s in _SECRET_KEYS) else mask(v)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mask(v) for v in obj]
        if isinstance(obj, bytes):
            return f"<{len(obj)} bytes>"
        return obj

    text = json.dumps(mask(args), sort_keys=True, default=str)
    return text if len(text) <= AUDIT_ARGS_MAX else text[: AUDIT_ARGS_MAX - 3] + "..."


class OpRegistry:
    """Op name → :class:`OpSpec`; dispatches decoded requests."""

    def __init__(self) -> None:
        self._ops: dict[str, OpSpec] = {}

    def register(self, name: str, handler: Handler, *, roles: frozenset[str] | set[str] = ALL_ROLES,
                 args: list[Arg] | tuple[Arg, ...] = (), changes_state: bool = False,
                 public: bool = False, doc: str = "") -> OpSpec:
        """Add an op; raises ``ValueError`` on a duplicate name or unknown role."""
        if name in self._ops:
            raise ValueError(f"op {name!r} is already registered")
        bad = set(roles) - ALL_ROLES
        if bad:
            raise ValueError(f"op {name!r}: unknown role(s) {', '.join(sorted(bad))}")
        names = [a.name for a in args]
        if len(set(names)) != len(names):
            raise ValueError(f"op {name!r}: duplicate argument names")
        spec = OpSpec(name, handler, frozenset(roles), tuple(args), changes_state, public,
                      doc or (handler.__doc__ or "").strip().split("\n")[0])
        self._ops[name] = spec
        return spec

    def op(self, name: str, **kw: Any) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""
        def deco(fn: Handler) -> Handler:
            self.register(name, fn, **kw)
            return fn
        return deco

    def copy(self) -> "OpRegistry":
        """A new registry with the same ops (to add test or embedding-specific ops
        without touching the global one)."""
        other = OpRegistry()
        other._ops = dict(self._ops)
        return other

    def get(self, name: str) -> OpSpec | None:
        return self._ops.get(name)

    def names(self) -> list[str]:
        return sorted(self._ops)

    def specs(self) -> list[OpSpec]:
        return [self._ops[n] for n in self.names()]

    async def dispatch(self, ctx: OpContext, op: str, raw_args: Any) -> dict[str, Any]:
        """Run one request; returns the reply map without ``id``.

        Never raises for a client's mistake: every :class:`EngineError`
        becomes ``{"ok": False, "error": ...}``.
        """
        spec = self._ops.get(op)
        started = time.time()
        try:
            if spec is None:
                raise UnknownOp(f"unknown op {op!r}")
            session = ctx.session
            if not spec.public and not session.authenticated:
                raise Unauthorized(f"op {op!r} needs an authenticated connection (send 'auth' first)")
            if not spec.public and session.role not in spec.roles:
                raise Forbidden(f"role {session.role!r} may not use {op!r} "
                                f"(allowed: {', '.join(sorted(spec.roles))})")
            args = validate_args(spec, raw_args)
            result = await spec.handler(ctx, args)
        except EngineError as exc:
            if spec is not None and spec.changes_state and ctx.session.authenticated:
                self._audit(ctx, spec, raw_args, f"error:{exc.code}", started)
            return {"ok": False, "error": error_reply(exc)}
        except Exception as exc:  # our bug: logged by error_reply, the loop goes on
            if spec is not None and spec.changes_state and ctx.session.authenticated:
                self._audit(ctx, spec, raw_args, "error:internal", started)
            return {"ok": False, "error": error_reply(exc)}
        if spec.changes_state:
            self._audit(ctx, spec, args, "ok", started)
        return {"ok": True, "result": result}

    @staticmethod
    def _audit(ctx: OpContext, spec: OpSpec, args: Any, result: str, ts: float) -> None:
        s = ctx.session
        ctx.engine.audit(user=s.user, role=s.role, tenant=s.tenant, op=spec.name,
                         args=summarize_args(args if isinstance(args, dict) else {"args": args}),
                         result=result, peer=s.peer, ts=ts)


# The registry the built-in ops and later issues register into.
registry = OpRegistry()
