"""IVR end-to-end helpers: an engine subprocess (free ports) with a two-level
menu, a collect + lookup and a post-call survey; the agents' phones and
control clients (the simulated phones of :mod:`engine.sim`: real SIP, real
RTP).  The callers are real peers (:mod:`ivr_peers`: baresip, SIPp)."""
from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sqlite3
from typing import Any, AsyncIterator

from conftest_inbound import ADMIN_PASSWORD, EngineProcess
from engine.passwords import hash_password
from engine.sim import PhoneBank, RtpPump, SimTrunk

DOMAIN = "ivr.test"
DIALED = "+4930555400"
PASSWORDS = {"1001": "pw-1001", "1002": "pw-1002"}
EXTENSIONS = {"1001": "2001", "1002": "2002"}
TONES = {"1001": 1400.0, "1002": 1600.0}
CALLER_TONE = 1000.0

MENU_PROMPT = "Sales, 1. Support, 2. Balance, 3."
SUPPORT_PROMPT = "Internet, 1. Billing, 2."
ACCOUNT_PROMPT = "Your account number, please."
SURVEY_PROMPT = "Rate this call, 1 to 5."
ACCOUNT = "10012345"
BALANCE = "1234"

CENTRE_FLOW = f'''
[flow]
name = "centre"
start = "init"

[nodes.init]
type = "set"
variables = {{ post_call_flow = "survey" }}
next = "main"

[nodes.main]
type = "menu"
prompts = [{{ tts = "{MENU_PROMPT}" }}]
variable = "department"
choices = {{ "1" = "sales_queue", "2" = "support_menu", "3" = "ask_account" }}
timeout_s = 10
retries = 2
on_failure = "bye"

[nodes.support_menu]
type = "menu"
prompts = [{{ tts = "{SUPPORT_PROMPT}" }}]
variable = "support_topic"
choices = {{ "1" = "support_queue", "2" = "sales_queue" }}
timeout_s = 10
retries = 2
on_failure = "bye"

[nodes.ask_account]
type = "collect"
prompts = [{{ tts = "{ACCOUNT_PROMPT}" }}]
variable = "account"
min_digits = 8
max_digits = 8
first_digit_timeout_s = 10
next = "find"
on_failure = "bye"

[nodes.find]
type = "lookup"
csv = "accounts.csv"
column = "account"
key = "{{account}}"
into = "acct"
found = "say_balance"
not_found = "bye"

[nodes.say_balance]
type = "play"
prompts = [{{ tts = "Your balance is" }}, {{ say_number = "{{acct_balance}}" }}, {{ tts = "euros." }}]
next = "support_queue"

[nodes.sales_queue]
type = "queue"
queue = "sales"
announce_interval_s = 0
on_failure = "bye"

[nodes.support_queue]
type = "queue"
queue = "support"
announce_interval_s = 0
on_failure = "bye"

[nodes.bye]
type = "hangup"
prompts = [{{ tts = "Goodbye." }}]
'''

SURVEY_FLOW = f'''
[flow]
name = "survey"
start = "rate"

[nodes.rate]
type = "survey"
survey = "satisfaction"
question = "overall"
prompts = [{{ tts = "{SURVEY_PROMPT}" }}]
digits = "12345"
timeout_s = 10
next = "thanks"

[nodes.thanks]
type = "hangup"
prompts = [{{ tts = "Thank you. Goodbye." }}]
reason = "survey_done"
'''


class IvrEngine(EngineProcess):
    """``ctiengine run`` with the IVR test centre (see the module docstring)."""

    def __init__(self, tmp: pathlib.Path) -> None:
        super().__init__(tmp)
        (tmp / "centre.toml").write_text(CENTRE_FLOW)
        (tmp / "survey.toml").write_text(SURVEY_FLOW)
        (tmp / "accounts.csv").write_text(f"account,name,balance\n{ACCOUNT},Alice Martin,{BALANCE}\n"
                                          "20011111,Chen Wei,980\n")
        self.config.write_text(self._config())

    def _config(self) -> str:
        h = {a: hash_password(pw, n=1024) for a, pw in PASSWORDS.items()}
        admin = hash_password(ADMIN_PASSWORD, n=1024)
        rtp = 21000 + (self.sip_port % 200) * 40
        agents = "".join(f'''
[agents.{a}]
name = "Agent {a}"
password = "{h[a]}"
extension = "{EXTENSIONS[a]}"
groups = ["{g}"]
skills = {{ {g} = 5 }}

[users.agent{a}]
password = "{h[a]}"
role = "agent"
agent = "{a}"
''' for a, g in (("1001", "sales"), ("1002", "support")))
        return f"""
[engine]
name = "ivr-e2e"
log_level = "INFO"

[sip]
domain = "{DOMAIN}"
listen = [ {{ transport = "udp", host = "127.0.0.1", port = {self.sip_port} }} ]

[media]
host = "127.0.0.1"
rtp_port_min = {rtp}
rtp_port_max = {rtp + 38}

[store]
path = "{self.tmp}/cc.db"
batch_interval_ms = 20

[control]
listen = [ {{ transport = "tcp", host = "127.0.0.1", port = {self.ctl_port} }} ]

[recording]
mode = "all"
path = "{self.tmp}/recordings"

[skills.sales]
[skills.support]
[groups.sales]
[groups.support]
{agents}
[users.admin]
password = "{admin}"
role = "admin"

[trunks.carrier]
host = "127.0.0.1"
accept_networks = ["127.0.0.0/8"]

[queues.sales]
groups = ["sales"]
ring_timeout_s = 10
wrapup_s = 1

[queues.support]
groups = ["support"]
ring_timeout_s = 10
wrapup_s = 1

[flows.centre]
path = "{self.tmp}/centre.toml"

[flows.survey]
path = "{self.tmp}/survey.toml"

[[routes]]
dialed_number = "{DIALED}"
destination = "flow:centre"
"""

    def db_rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.tmp / "cc.db")
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


class Parties:
    """The simulated trunk, phones and one RTP pump of one test, plus agent clients."""

    def __init__(self, eng: IvrEngine) -> None:
        self.eng = eng
        self.pump = RtpPump(capacity=16)
        self.trunk = SimTrunk(("127.0.0.1", eng.sip_port), self.pump)
        self.bank = PhoneBank(("127.0.0.1", eng.sip_port), DOMAIN, self.pump)
        self.clients: dict[str, Any] = {}
        self.phones: dict[str, Any] = {}

    async def agent(self, number: str) -> tuple[Any, Any]:
        """Log ``number`` in over the control socket (as itself), register its phone, make it ready."""
        client = await self.eng.client(f"agent{number}", PASSWORDS[number])
        self.clients[number] = client
        await client.subscribe(events=["call.*", "agent.*"])
        await client.request("agent.login", password=PASSWORDS[number], extension=EXTENSIONS[number])
        phone = await self.bank.register(EXTENSIONS[number], PASSWORDS[number], tone_hz=TONES[number],
                                         keep_audio=True)
        self.phones[number] = phone
        await client.request("agent.ready")
        return client, phone


@contextlib.asynccontextmanager
async def parties(eng: IvrEngine) -> AsyncIterator[Parties]:
    p = Parties(eng)
    await p.trunk.start()
    await p.bank.start()
    p.pump.start()
    try:
        yield p
    finally:
        await p.trunk.stop()
        for phone in p.phones.values():
            with contextlib.suppress(Exception):
                await p.bank.unregister(phone)
        for number, client in p.clients.items():
            with contextlib.suppress(Exception):
                await client.request("agent.logout")
            await client.close()
        await p.bank.stop()
        await p.pump.stop()


async def wait_agent_state(client: Any, state: str, timeout_s: float = 10.0) -> dict:
    """The next ``agent.state`` event announcing ``state`` (earlier states are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    seen = []
    while loop.time() < deadline:
        ev = await client.next_event(timeout=max(0.05, deadline - loop.time()))
        if ev is None:
            break
        if ev["event"] == "agent.state":
            seen.append(ev["data"]["state"])
            if ev["data"]["state"] == state:
                return ev
    raise AssertionError(f"agent never became {state} within {timeout_s} s (states seen: {seen})")


def prewarm_tts(cache_dir: pathlib.Path, texts: list[str]) -> Any:
    """Speak ``texts`` into the engine's TTS cache on worker threads (while the engine starts).

    Returns the executor; ``shutdown(wait=True)`` it before the calls.  The
    engine then plays the same cached files, and the tests' fingerprints
    read them too.
    """
    from concurrent.futures import ThreadPoolExecutor

    from media.tts import Tts

    tts = Tts(cache_dir)
    pool = ThreadPoolExecutor(max_workers=3)
    for text in texts:
        pool.submit(tts.load, text, language="en")
    return pool


def flow_tts_texts(path: pathlib.Path, nodes: tuple[str, ...]) -> list[str]:
    """The fixed (template-free) ``tts`` prompt texts of ``nodes`` of a flow file."""
    import tomllib

    texts: list[str] = []
    table = tomllib.loads(path.read_text()).get("nodes", {})
    for node in (table[n] for n in nodes):
        for key in ("prompts",):
                items = node.get(key, [])
                for item in items if isinstance(items, list) else [items]:
                    if isinstance(item, dict) and "tts" in item and "{" not in item["tts"]:
                        texts.append(item["tts"])
    return texts


def run(coro: Any, timeout_s: float = 40.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))
