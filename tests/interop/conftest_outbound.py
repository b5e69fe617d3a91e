"""A campaign over real SIP against a SIPp carrier with simulated agent phones (test and benchmark harness).

:func:`run_campaign` starts SIPp with ``sipp/carrier_mix.xml`` (the last
digit of the dialled number decides: answer after 0.3-1.5 s and talk 2, 4
or 7 s, ring until CANCEL, or busy; answer probability 0.6) as the trunk,
an engine with the call path and the campaign service in this process, and
``agents`` engine/sim.py phones registered with digest auth that answer
after 0.2 s (their agents log in and go ready; wrap-up 1 s).  An answered
call not connected within ``connect_timeout_s`` (3 s by default: on this
2-core machine under the load of parallel builds an agent phone's answer
took up to 1.7 s from the offer, so 2 s measured the machine, not the
pacing) is dropped.  It imports
``records`` numbers, starts the campaign, dials for ``dial_s`` seconds,
stops it, waits for the calls to end and returns what the store and the
carrier saw.  Used by tests/interop/test_outbound_predictive.py and
bench/outbound_sip.py.
"""
from __future__ import annotations

import asyncio
import json
import math
import pathlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from conftest_inbound import DOMAIN, free_port, start_sipp, stop_proc, wait_udp_bound
from engine.app import Engine
from engine.callpath import CallCentre
from engine.campaign_service import CampaignService
from engine.client import ControlClient
from engine.config import parse_config
from engine.passwords import hash_password
from engine.sim import PhoneBank, RtpPump

SIPP = pathlib.Path(__file__).resolve().parent / "sipp"
ADMIN_PW = "admin-pw"


def config_text(tmp: pathlib.Path, sip_port: int, ctl_port: int, carrier_port: int, agents: int, mode: str,
                max_drop_rate: float, connect_timeout_s: float) -> str:
    rtp = 21000 + (sip_port % 40) * 200
    agent_tables = "".join(f"""
[agents.{1100 + i}]
name = "Agent {i}"
password = "{hash_password(f'pw-{1100 + i}', n=1024)}"
extension = "{2100 + i}"
groups = ["sales"]
""" for i in range(agents))
    return f"""
[engine]
name = "outbound-sip"
log_level = "INFO"

[sip]
domain = "{DOMAIN}"
listen = [ {{ transport = "udp", host = "127.0.0.1", port = {sip_port} }} ]

[media]
host = "127.0.0.1"
rtp_port_min = {rtp}
rtp_port_max = {rtp + 198}

[store]
path = "{tmp}/cc.db"
batch_interval_ms = 20

[control]
listen = [ {{ transport = "tcp", host = "127.0.0.1", port = {ctl_port} }} ]

[groups.sales]
{agent_tables}
[users.admin]
password = "{hash_password(ADMIN_PW, n=1024)}"
role = "admin"

[trunks.carrier]
host = "127.0.0.1"
port = {carrier_port}

[queues.sales]
groups = ["sales"]
ring_timeout_s = 5
wrapup_s = 1

[campaigns.run]
mode = "{mode}"
groups = ["sales"]
queue = "sales"
trunk = "carrier"
caller_number = "+4930999000"
ring_timeout_s = 5
max_drop_rate = {max_drop_rate}
connect_timeout_s = {connect_timeout_s}
"""


@dataclass
class SipRun:
    """What one run measured (rows from the store, INVITEs from the carrier's message log)."""

    mode: str
    dial_s: float
    rows: list[dict[str, Any]]
    invites: dict[str, set[str]]          # dialled number -> Call-IDs of the INVITEs the carrier got
    report: dict[str, Any]                 # campaign.report over the dialling window (one interval)
    pacing: dict[str, Any] = field(default_factory=dict)
    loop_lag_s: float = 0.0                # worst event-loop lag seen (the machine's load shows here)
    drops_offered: int = 0                 # dropped calls that an agent's phone was ringing for (slow answer)

    def count(self, event: str, outcome: str | None = None) -> int:
        return sum(1 for r in self.rows if r["event"] == event and (outcome is None or r["outcome"] == outcome))

    @property
    def attempts(self) -> int:
        return self.count("attempt")

    @property
    def connects(self) -> int:
        return self.count("connected")

    @property
    def dropped(self) -> int:
        return self.count("result", "dropped")

    @property
    def drop_rate(self) -> float:
        live = self.connects + self.dropped
        return self.dropped / live if live else 0.0

    def describe(self) -> dict[str, Any]:
        t = self.report["agent_time"]
        return {"mode": self.mode, "dial_s": self.dial_s, "attempts": self.attempts, "connects": self.connects,
                "dropped": self.dropped, "drop_rate": round(self.drop_rate, 4),
                "drop_rate_upper95": round(binomial_upper(self.dropped, self.connects + self.dropped), 4),
                "attempts_per_s": round(self.attempts / self.dial_s, 3), "talk_share": t["talk_share"],
                "idle_share": t["idle_share"], "max_loop_lag_s": round(self.loop_lag_s, 3),
                "drops_offered": self.drops_offered, "pacing": self.pacing}


def binomial_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial rate after ``k`` events in ``n`` trials."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:  # P(X <= k | n, p)
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


_INVITE = re.compile(r"^INVITE sip:([^@;>]+)@", re.M)
_CALL_ID = re.compile(r"^Call-ID:\s*(\S+)", re.M | re.I)


def carrier_invites(log_text: str) -> dict[str, set[str]]:
    """Dialled number → distinct Call-IDs of the INVITEs in a SIPp ``-trace_msg`` log."""
    out: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=-{5,})", log_text):
        m = _INVITE.search(block)
        c = _CALL_ID.search(block)
        if m and c and "message received" in block[:200]:
            out.setdefault(m[1], set()).add(c[1])
    return out


async def run_campaign(tmp: pathlib.Path, mode: str, *, agents: int = 8, dial_s: float = 50.0,
                       records: int = 900, max_drop_rate: float = 0.03, connect_timeout_s: float = 3.0) -> SipRun:
    """Run one campaign over SIP (see the module docstring); every process and socket is closed after."""
    from engine import agent_ops  # noqa: F401  (registers the ops)
    from engine import campaign_ops  # noqa: F401

    sip_port, ctl_port, carrier_port = free_port(), free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    sipp = start_sipp(["-sf", str(SIPP / "carrier_mix.xml"), "-i", "127.0.0.1", "-p", str(carrier_port),
                       "-mp", str(free_port()), "-timeout", str(int(dial_s + 60)), "-trace_msg",
                       "-message_file", str(tmp / "carrier_msg.log"), "-max_socket", "2000"], tmp)
    try:
        cfg = parse_config(config_text(tmp, sip_port, ctl_port, carrier_port, agents, mode, max_drop_rate,
                                       connect_timeout_s), str(tmp / "engine.toml"))
    except BaseException:
        stop_proc(sipp)
        raise
    centre = CallCentre()
    svc = CampaignService(tick_s=0.1)
    engine = Engine(cfg, services=[centre, svc])
    pump = RtpPump(capacity=agents + 2)
    bank = PhoneBank(("127.0.0.1", sip_port), DOMAIN, pump)
    admin = ControlClient(host="127.0.0.1", port=ctl_port, user="admin", password=ADMIN_PW)
    try:
        await wait_udp_bound(carrier_port)
        await engine.start()
        pump.start()
        await bank.start()
        await admin.connect()
        for i in range(agents):
            agent, ext = str(1100 + i), str(2100 + i)
            await admin.request("agent.login", agent=agent, password=f"pw-{agent}", extension=ext)
            await bank.register(ext, f"pw-{agent}", answer_after_s=0.2)
            await admin.request("agent.ready", agent=agent)
        csv = "number\n" + "".join(f"+4930{2000000 + i}\n" for i in range(records))
        await admin.request("campaign.import", name="run", csv=csv)
        start = time.time()
        await admin.request("campaign.start", name="run")
        lag = asyncio.get_running_loop().create_task(_loop_lag(dial_s))
        await asyncio.sleep(dial_s)
        loop_lag_s = await lag
        await admin.request("campaign.pause", name="run")
        core = svc.core("default", "run")
        pacing = core.pacer.stats().describe()
        deadline = time.monotonic() + 12
        while core.live and time.monotonic() < deadline:   # talks end by themselves (7 s at most)
            await asyncio.sleep(0.1)
        await admin.request("campaign.stop", name="run")
        end = time.time()
        await engine.store.aflush()
        rows = engine.store.select("campaign_log", {"campaign": "run"}, limit=100000)
        drops_offered = sum(1 for r in rows if r["outcome"] == "dropped" and
                            engine.store.select("queue_log", {"call_id": r["call_id"], "event": "offered"}, limit=1))
        rep = await admin.request("campaign.report", name="run", from_ts=start, to_ts=end, interval_s=end - start)
    finally:
        await admin.close()
        await bank.stop()
        await engine.stop()
        await pump.stop()
        stop_proc(sipp)
    log = tmp / "carrier_msg.log"
    invites = carrier_invites(log.read_text(errors="replace")) if log.exists() else {}
    return SipRun(mode=mode, dial_s=dial_s, rows=rows, invites=invites, report=rep["intervals"][0],
                  pacing=json.loads(json.dumps(pacing)), loop_lag_s=loop_lag_s, drops_offered=drops_offered)


async def _loop_lag(duration_s: float, step_s: float = 0.05) -> float:
    """The worst lateness of a ``step_s`` sleep over ``duration_s`` (an overloaded machine delays every
    SIP answer; a 2 s connect deadline then drops calls that a free agent would have taken)."""
    loop = asyncio.get_running_loop()
    end, worst = loop.time() + duration_s, 0.0
    while loop.time() < end:
        t = loop.time()
        await asyncio.sleep(step_s)
        worst = max(worst, loop.time() - t - step_s)
    return worst


__all__ = ["SipRun", "binomial_upper", "carrier_invites", "run_campaign"]
