"""``ctiengine demo``: a running engine taking simulated calls, for people without a SIP phone.

Theory of operation
-------------------
Against an engine that is already running (``make run``), the demo:

1. connects to the control socket as an admin and subscribes to every
   ``call.*`` and ``agent.state`` event, printing each as it arrives;
2. logs the agents in over the control socket (``agent.login`` with the
   agent's password and extension), registers a simulated phone for each
   (:class:`engine.sim.PhoneBank`: REGISTER with digest auth, auto-answer,
   sends a tone per agent) and makes them ``ready``;
3. places ``--calls`` simulated callers (:class:`engine.sim.SimTrunk`, one
   every ``--interval-s``) at the demo line; each walks the menu by RFC 4733
   DTMF after hearing the prompt (sales ``1 1``, support ``2 1``, or the
   self-service balance ``3`` + an account number), waits in the queue with
   music, is answered by an agent's phone, talks for ``--talk-s`` seconds
   and hangs up; every second call the *agent* hangs up first, and the
   caller answers the post-call survey with a key;
4. logs the agents out, unregisters the phones, and prints what happened
   and where the recordings and CDRs landed (paths from the config file;
   the CDR rows of these calls are read from the SQLite file when it is
   local).

Everything is bounded by ``--timeout-s``.  Addresses, the SIP domain and the
agents default to those of the config file (``examples/demo.toml``); flags
override them for an engine elsewhere.  Nothing here changes the engine's
configuration: the demo is an ordinary trunk, phones and control client.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.sim import PhoneBank, RtpPump, SimError, SimPhone, SimTrunk

DEFAULT_CONFIG = "examples/demo.toml"
DEMO_LINE = "+4930555900"
AGENT_TONES = (1400.0, 1600.0, 1800.0, 2000.0)
CALLER_TONE_HZ = 1000.0

# (label, digits pressed after the first prompt, digits pressed after the second prompt)
SCRIPTS: tuple[tuple[str, str, str], ...] = (
    ("sales", "1", "1"),
    ("support", "2", "1"),
    ("balance", "3", "10012345"),
)


@dataclass
class DemoSettings:
    """What ``ctiengine demo`` does (the command-line flags)."""

    host: str = "127.0.0.1"
    sip_port: int = 5060
    control_port: int = 7070
    domain: str = "demo.local"
    user: str = "admin"
    password: str = "demo-admin"
    agents: dict[str, str] = field(default_factory=dict)
    """agent number -> extension"""
    agent_password: str = "pw{agent}"
    calls: int = 4
    interval_s: float = 1.5
    talk_s: float = 3.0
    dialed: str = DEMO_LINE
    timeout_s: float = 120.0
    recordings: str = ""
    store: str = ""
    seed: int | None = None


@dataclass
class DemoResult:
    placed: int = 0
    answered: int = 0
    surveys: int = 0
    call_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _stamp() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]


def describe_event(ev: dict[str, Any]) -> str:
    """One line for a control-socket event (what the demo prints)."""
    d = ev.get("data", {})
    name = ev.get("event", "?")
    call = str(d.get("call_id", ""))[:12]
    if name == "agent.state":
        extra = f" ({d['reason_code']})" if d.get("reason_code") else ""
        return f"agent.state    agent {d.get('agent')} {d.get('previous_state')} -> {d.get('state')}{extra}"
    if name == "call.ringing":
        vars_ = {k: v for k, v in (d.get("variables") or {}).items() if k not in ("post_call_flow",)}
        return (f"call.ringing   call {call} from {d.get('caller_number')} queue {d.get('queue')} "
                f"-> agent {d.get('agent')} (ext {d.get('extension')}) screen pop {vars_}")
    if name == "call.answered":
        return f"call.answered  call {call} agent {d.get('agent')} after {d.get('wait_s')} s in queue"
    if name == "call.ended":
        return (f"call.ended     call {call} reason {d.get('reason')} disposition {d.get('disposition')}"
                f"{' agent ' + str(d.get('agent')) if d.get('agent') else ''}")
    keys = ", ".join(f"{k}={v}" for k, v in d.items() if k in ("queue", "agent", "state", "reason", "waiting"))
    return f"{name:<14} {keys}"


class Demo:
    """One run of the demo (see the module docstring)."""

    def __init__(self, settings: DemoSettings, out: Callable[[str], None] = print) -> None:
        self.s = settings
        self.out = out
        self.rng = random.Random(settings.seed)
        self.result = DemoResult()
        self.answered_by: dict[str, asyncio.Future[str]] = {}
        self.client: Any = None
        self.pump = RtpPump(capacity=max(16, settings.calls + len(settings.agents) + 4))
        self.trunk = SimTrunk((settings.host, settings.sip_port), self.pump)
        self.bank = PhoneBank((settings.host, settings.sip_port), settings.domain, self.pump)
        self.phones: dict[str, SimPhone] = {}
        self.logged_in: list[str] = []

    def say(self, text: str) -> None:
        self.out(f"{_stamp()}  {text}")

    async def run(self) -> DemoResult:
        from engine.client import ControlClient

        s = self.s
        self.client = ControlClient(host=s.host, port=s.control_port, user=s.user, password=s.password,
                                    reconnect=False)
        await self.client.connect()
        printer = asyncio.get_running_loop().create_task(self._print_events())
        await self.trunk.start()
        await self.bank.start()
        self.pump.start()
        try:
            await self.client.subscribe(events=["call.*", "agent.state"])
            await self._agents_up()
            tasks = []
            for i in range(s.calls):
                tasks.append(asyncio.get_running_loop().create_task(self._caller(i)))
                await asyncio.sleep(s.interval_s)
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    self.result.failures.append(f"{type(outcome).__name__}: {outcome}")
            await asyncio.sleep(0.5)  # the last events
        finally:
            await self._agents_down()
            await self.trunk.stop()
            await self.bank.stop()
            await self.pump.stop()
            printer.cancel()
            with contextlib.suppress(BaseException):
                await printer
            await self.client.close()
        return self.result

    async def _print_events(self) -> None:
        while True:
            ev = await self.client.next_event()
            if ev is None:
                return
            self.say(describe_event(ev))
            d = ev.get("data", {})
            if ev.get("event") == "call.answered":
                fut = self.answered_by.get(d.get("call_id", ""))
                if fut is not None and not fut.done():
                    fut.set_result(str(d.get("agent", "")))

    async def _agents_up(self) -> None:
        s = self.s
        for i, (agent, extension) in enumerate(sorted(s.agents.items())):
            password = s.agent_password.format(agent=agent)
            await self.client.request("agent.login", agent=agent, password=password, extension=extension)
            self.logged_in.append(agent)
            phone = await self.bank.register(extension, password, tone_hz=AGENT_TONES[i % len(AGENT_TONES)])
            self.phones[agent] = phone
            await self.client.request("agent.ready", agent=agent)
            self.say(f"demo           agent {agent} logged in on extension {extension}, phone registered "
                     f"(sends {phone.tone_hz:.0f} Hz), ready")

    async def _agents_down(self) -> None:
        for agent in self.logged_in:
            with contextlib.suppress(Exception):
                await self.client.request("agent.logout", agent=agent)
        for phone in self.phones.values():
            with contextlib.suppress(Exception):
                await self.bank.unregister(phone)

    async def _caller(self, i: int) -> None:
        s = self.s
        label, first, second = SCRIPTS[i % len(SCRIPTS)]
        number = f"+49170{self.rng.randrange(10 ** 7):07d}"
        call = self.trunk.call(s.dialed, caller_number=number, tone_hz=CALLER_TONE_HZ)
        answered: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.answered_by[call.call_id] = answered
        self.result.placed += 1
        self.result.call_ids.append(call.call_id)
        tag = f"caller {i + 1} {number}"
        self.say(f"demo           {tag} dials {s.dialed} ({label}: presses {first} then {second})")
        try:
            await call.wait_answered(10)
            await call.wait_heard(1.0, 20)        # the welcome / main menu prompt
            self.say(f"demo           {tag} hears the menu, presses {first}")
            await call.press(first)
            await call.wait_heard(1.0, 20)        # the sub-menu or account prompt
            self.say(f"demo           {tag} hears the next prompt, presses {second}")
            await call.press(second)
            agent = await asyncio.wait_for(answered, 60)
            self.result.answered += 1
            await asyncio.sleep(s.talk_s)
            if i % 2 == 1 and agent in self.phones and self.phones[agent].busy:
                self.say(f"demo           agent {agent} hangs up first: {tag} hears the survey")
                self.phones[agent].hangup()
                await call.wait_heard(1.0, 20)
                score = str(self.rng.randint(3, 5))
                await call.press(score)
                self.say(f"demo           {tag} rates the call {score}")
                self.result.surveys += 1
                await call.wait_ended(20)
            else:
                self.say(f"demo           {tag} hangs up")
                call.hangup()
        except (SimError, TimeoutError, asyncio.TimeoutError) as exc:
            self.say(f"demo           {tag}: {exc or type(exc).__name__}")
            call.hangup()
            raise
        finally:
            self.answered_by.pop(call.call_id, None)


def print_summary(settings: DemoSettings, result: DemoResult, out: Callable[[str], None] = print) -> None:
    out(f"demo finished: {result.placed} call(s) placed, {result.answered} answered by agents, "
        f"{result.surveys} survey answer(s)")
    for failure in result.failures:
        out(f"  failed: {failure}")
    if settings.recordings:
        out(f"recordings: {settings.recordings} (one stereo file per answered call, caller left, agent right)")
    if settings.store:
        out(f"CDRs: table cdr in {settings.store} (also queue_log, agent_state_log, surveys, recordings)")
        rows = cdr_rows(settings.store, result.call_ids)
        for row in rows:
            out(f"  cdr {row['call_id'][:12]} {row['disposition']:<10} queue {row['queue'] or '-':<8} "
                f"agent {row['agent'] or '-':<5} wait {row['wait_s']:.1f} s talk {row['talk_s']:.1f} s "
                f"end {row['end_reason']}")
        if not rows and os.path.exists(settings.store):
            out("  (no CDR rows for these calls yet: the store writes in batches, look again in a second)")


def cdr_rows(path: str, call_ids: list[str]) -> list[dict[str, Any]]:
    """The CDR rows of ``call_ids`` from the engine's SQLite file (read-only; [] when not local)."""
    if not call_ids or not os.path.exists(path):
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return []
    try:
        db.row_factory = sqlite3.Row
        marks = ",".join("?" * len(call_ids))
        return [dict(r) for r in db.execute(f"SELECT * FROM cdr WHERE call_id IN ({marks}) ORDER BY start_ts",
                                            call_ids)]
    except sqlite3.Error:
        return []
    finally:
        db.close()


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """Defaults from the config file (when it exists), overridden by flags."""
    s = DemoSettings()
    path = args.config
    if path and os.path.exists(path):
        from engine.config import load_config

        cfg = load_config(path)
        udp = next((lst for lst in cfg.sip.listen if lst.transport == "udp"), None)
        if udp is not None:
            s.host, s.sip_port = udp.host, udp.port
        tcp = next((lst for lst in cfg.control.listen if lst.transport == "tcp"), None)
        if tcp is not None:
            s.control_port = tcp.port
        s.domain = cfg.sip.domain
        s.agents = {n: a.extension for n, a in sorted(cfg.agents.items()) if a.extension}
        s.recordings = cfg.resolve_path(cfg.recording.path) if cfg.recording.mode != "none" else ""
        s.store = cfg.resolve_path(cfg.store.path)
    elif path != DEFAULT_CONFIG:
        raise SystemExit(f"ctiengine demo: config file {path} not found")
    for name in ("host", "sip_port", "control_port", "domain", "user", "password", "agent_password", "calls",
                 "interval_s", "talk_s", "dialed", "timeout_s", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(s, name, value)
    if args.agents:
        configured, s.agents = s.agents, {}
        for item in args.agents.split(","):
            agent, _, ext = item.partition(":")
            s.agents[agent.strip()] = (ext or configured.get(agent.strip(), "") or agent).strip()
    if not s.agents:
        s.agents = {str(n): str(n + 1000) for n in (1001, 1002, 1003, 1004)}
    return s


def configure(sub: argparse._SubParsersAction) -> None:
    """Register ``ctiengine demo`` (called from :data:`engine.cli.SUBCOMMANDS`)."""
    p = sub.add_parser("demo", help="simulated agents and callers against a running engine (see docs/quickstart.md)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"the running engine's config: addresses, domain, agents, paths (default {DEFAULT_CONFIG})")
    p.add_argument("--host", help="engine address (default: the config's SIP listener host)")
    p.add_argument("--sip-port", type=int, help="engine SIP UDP port (default: from the config)")
    p.add_argument("--control-port", type=int, help="engine control TCP port (default: from the config)")
    p.add_argument("--domain", help="SIP domain / digest realm (default: from the config)")
    p.add_argument("--user", help="control user allowed to log agents in (default admin)")
    p.add_argument("--password", help="its password (default demo-admin)")
    p.add_argument("--agents", help="agents as NUMBER[:EXTENSION],... (default: every agent of the config)")
    p.add_argument("--agent-password", help="agents' password pattern, {agent} is the number (default pw{agent})")
    p.add_argument("--calls", type=int, help="simulated callers (default 4)")
    p.add_argument("--interval-s", type=float, help="seconds between callers (default 1.5)")
    p.add_argument("--talk-s", type=float, help="seconds each answered call talks (default 3)")
    p.add_argument("--dialed", help=f"number the callers dial (default the demo line {DEMO_LINE})")
    p.add_argument("--timeout-s", type=float, help="stop after this long whatever happens (default 120)")
    p.add_argument("--seed", type=int, help="random seed (caller numbers, survey scores)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``ctiengine demo``: 0 when every call was answered, 1 otherwise, 2 when the engine is unreachable."""
    from engine.client import ClientError

    s = settings_from_args(args)
    out = print

    async def go() -> int:
        demo = Demo(s, lambda line: print(line, flush=True))
        try:
            result = await asyncio.wait_for(demo.run(), s.timeout_s)
        except OSError as exc:
            out(f"ctiengine demo: cannot reach the engine's control socket at {s.host}:{s.control_port}: {exc} "
                "(start it with `make run`)")
            return 2
        except ClientError as exc:
            out(f"ctiengine demo: the engine refused: {exc} (are these agents logged in elsewhere?)")
            return 1
        except asyncio.TimeoutError:
            out(f"ctiengine demo: stopped after --timeout-s {s.timeout_s}")
            result = demo.result
            result.failures.append("timeout")
        await asyncio.sleep(0.3)  # the store writes CDRs in batches
        print_summary(s, result, lambda line: print(line, flush=True))
        return 0 if not result.failures and result.answered == result.placed else 1

    started = time.monotonic()
    rc = asyncio.run(go())
    print(f"({time.monotonic() - started:.1f} s)", flush=True)
    return rc
