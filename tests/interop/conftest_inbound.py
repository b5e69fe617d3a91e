"""Inbound call-path interop helpers: the engine as a subprocess on free ports,
a control client, phone registration with digest, SIPp peers (bounded, by PID)."""
from __future__ import annotations

import asyncio
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from engine.client import ControlClient
from engine.passwords import hash_password
from sip.auth import DigestClient
from sip.events import ResponseReceived
from sip.useragent import SipEndpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = sys.executable
AGENT_PASSWORDS = {"1001": "pw-1001", "1002": "pw-1002"}
ADMIN_PASSWORD = "admin-pw"
DOMAIN = "cc.test"
DIALED = "+4930555100"
IVR_DIALED = "+4930555200"
VM_DIALED = "+4930555300"


PROBE_PORTS = range(10000, 20000)
"""Where engines' SIP and control ports are probed: below the kernel's ephemeral range (32768+ here),
which every ``bind(0)`` and outgoing connection draws from, and below the RTP ranges tests give
engines (20000+). A port probed free from the ephemeral range could be handed to another socket
of the test run before the engine subprocess binds it ("address already in use")."""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (see :data:`PROBE_PORTS`)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(PROBE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


FLOW = '''
[flow]
name = "inbound_menu"
start = "menu"

[nodes.menu]
type = "menu"
prompts = [{ tts = "Press one for sales." }]
choices = { "1" = "sales_queue" }
variable = "department"
timeout_s = 15
retries = 1
on_failure = "bye"

[nodes.sales_queue]
type = "queue"
queue = "sales"
announce_interval_s = 0
on_failure = "bye"

[nodes.bye]
type = "hangup"
'''


def engine_config(tmp: pathlib.Path, sip_port: int, ctl_port: int, *, ring_timeout_s: int = 10,
                  wrapup_s: int = 1, queue_timeout_s: int = 0, timeout_destination: str = "",
                  announce_interval_s: int = 0) -> str:
    (tmp / "menu.toml").write_text(FLOW)
    h = {a: hash_password(pw, n=1024) for a, pw in AGENT_PASSWORDS.items()}
    admin = hash_password(ADMIN_PASSWORD, n=1024)
    rtp = 20000 + (sip_port % 200) * 40
    return f"""
[engine]
name = "inbound-test"
log_level = "DEBUG"

[sip]
domain = "{DOMAIN}"
listen = [
  {{ transport = "udp", host = "127.0.0.1", port = {sip_port} }},
  {{ transport = "tcp", host = "127.0.0.1", port = {sip_port} }},
]

[media]
host = "127.0.0.1"
rtp_port_min = {rtp}
rtp_port_max = {rtp + 38}

[store]
path = "{tmp}/cc.db"
batch_interval_ms = 20

[control]
listen = [ {{ transport = "tcp", host = "127.0.0.1", port = {ctl_port} }} ]

[recording]
mode = "all"
path = "{tmp}/recordings"
format = "wav"
stereo = true

[skills.sales]
[groups.sales]

[agents.1001]
name = "Alice"
password = "{h['1001']}"
extension = "2001"
groups = ["sales"]
skills = {{ sales = 5 }}

[agents.1002]
name = "Bob"
password = "{h['1002']}"
extension = "2002"
groups = ["sales"]
skills = {{ sales = 5 }}

[users.admin]
password = "{admin}"
role = "admin"

[users.alice]
password = "{h['1001']}"
role = "agent"
agent = "1001"

[users.bob]
password = "{h['1002']}"
role = "agent"
agent = "1002"

[trunks.carrier]
host = "127.0.0.1"
accept_networks = ["127.0.0.0/8"]

[queues.sales]
groups = ["sales"]
skills = {{ sales = 1 }}
ring_timeout_s = {ring_timeout_s}
wrapup_s = {wrapup_s}
timeout_s = {queue_timeout_s}
timeout_destination = "{timeout_destination}"
announcements = {{ position = {str(bool(announce_interval_s)).lower()}, interval_s = {announce_interval_s or 60} }}

[[routes]]
dialed_number = "{DIALED}"
destination = "queue:sales"

[flows.inbound_menu]
path = "{tmp}/menu.toml"

[[routes]]
dialed_number = "{VM_DIALED}"
destination = "voicemail:sales"

[[routes]]
dialed_number = "{IVR_DIALED}"
destination = "flow:inbound_menu"
"""


class EngineProcess:
    """``ctiengine run`` in a subprocess (own session, stopped by PID)."""

    def __init__(self, tmp: pathlib.Path, **kw: Any) -> None:
        self.tmp = tmp
        self.sip_port = free_port()
        self.ctl_port = free_port()
        self.config = tmp / "engine.toml"
        self.config.write_text(engine_config(tmp, self.sip_port, self.ctl_port, **kw))
        self.log = tmp / "engine.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        out = open(self.log, "wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CTIENGINE_TTS_CACHE": str(self.tmp / "tts")}
        self.proc = subprocess.Popen([PYTHON, "-m", "engine.cli", "run", str(self.config)], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.ctl_port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"engine did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int | None:
        p = self.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.terminate()
        try:
            return p.wait(8)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    async def client(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> ControlClient:
        c = ControlClient(host="127.0.0.1", port=self.ctl_port, user=user, password=password)
        await c.connect()
        return c


async def register(engine_port: int, extension: str, password: str, contact_port: int | None = None,
                   expires: int = 300) -> int:
    """REGISTER ``sip:<extension>@cc.test`` with digest (our own UAC); returns the final status.

    ``contact_port``: register a Contact at another port (a SIPp phone on
    that port) — the REGISTER itself comes from our endpoint.
    """
    ep = SipEndpoint("127.0.0.1", 0, tcp=False, user=extension)
    host, port = await ep.start()
    try:
        uri = f"sip:{DOMAIN}"
        aor = f"<sip:{extension}@{DOMAIN}>"
        contact = f"<sip:{extension}@127.0.0.1:{contact_port or port}>"
        dest = ("127.0.0.1", engine_port)
        headers = [("Contact", contact), ("Expires", str(expires))]
        call_id = f"reg-{extension}-{time.monotonic_ns()}"
        ep.request("REGISTER", uri, from_=aor, to=aor, call_id=call_id, cseq=1, headers=headers, dest=dest)
        resp = await _final(ep)
        if resp.status_code == 401:
            name, value = DigestClient(extension, password).authorize(resp.headers, "REGISTER", uri)
            ep.request("REGISTER", uri, from_=aor, to=aor, call_id=call_id, cseq=2,
                       headers=headers + [(name, value)], dest=dest)
            resp = await _final(ep)
        return resp.status_code
    finally:
        await ep.stop()


async def _final(ep: SipEndpoint) -> Any:
    while True:
        ev = await ep.next_event(5.0)
        if isinstance(ev, ResponseReceived) and ev.response.status_code >= 200:
            return ev.response


def sipp_dir(tmp: pathlib.Path, name: str, tone_hz: int, seconds: float = 8.0) -> pathlib.Path:
    """A SIPp working directory with ``audio.ul`` (a sine) and the ``pcap`` link."""
    d = tmp / name
    d.mkdir()
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-t", "ul", str(d / "audio.ul"), "synth", str(seconds),
                    "sine", str(tone_hz), "vol", "0.5"], check=True, timeout=20)
    (d / "pcap").symlink_to("/usr/share/sip-tester")
    return d


def start_sipp(args: list[str], cwd: pathlib.Path) -> subprocess.Popen:
    sipp = shutil.which("sipp")
    assert sipp, "sipp not installed (apt-get install sip-tester)"
    out = open(cwd / "sipp.log", "wb")
    p = subprocess.Popen([sipp, *args, "-nostdin", "-trace_err"], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return p


def stop_proc(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(3)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


async def wait_udp_bound(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing bound UDP {port}")


def offer_sdp(port: int, formats: str = "0 101", rtpmap: str = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n") -> bytes:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {formats}\r\n{rtpmap}").encode()


async def trunk_call(engine_port: int, dialed: str, body: bytes, caller: str = "+4917000001") -> tuple[SipEndpoint, Any]:
    """Place an INVITE from our own UAC (the trunk); returns (endpoint, final ResponseReceived)."""
    ep = SipEndpoint("127.0.0.1", 0, tcp=False, user="trunk")
    await ep.start()
    ep.invite(f"sip:{dialed}@127.0.0.1:{engine_port}", from_=f"<sip:{caller}@127.0.0.1>",
              body=body, content_type="application/sdp")
    while True:
        ev = await ep.next_event(10.0)
        if isinstance(ev, ResponseReceived) and ev.response.status_code >= 200:
            return ep, ev


async def next_event_named(client: ControlClient, name: str, timeout_s: float = 10.0,
                           seen: list | None = None) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        ev = await client.next_event(timeout=max(0.05, deadline - loop.time()))
        if ev is None:
            break
        if seen is not None:
            seen.append(ev)
        if ev["event"] == name:
            return ev
    raise AssertionError(f"no {name} event within {timeout_s} s (seen: {[e['event'] for e in seen or []]})")
