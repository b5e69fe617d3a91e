"""Call-control interop helpers: an in-process engine (CallCentre + control socket) with trunks,
tone-sending RTP parties, scripted phones (register, answer, hold by re-INVITE, REFER), and a
Goertzel "who hears whom" check on what each party received."""
from __future__ import annotations

import asyncio
import pathlib
import socket
import time
from typing import Any

import numpy as np

from conftest_inbound import AGENT_PASSWORDS, DOMAIN, engine_config, free_port, register
from engine.app import Engine
from engine.callpath import CallCentre
from engine.client import ControlClient
from engine.config import parse_config
from media import g711
from media.rtp import RtpPacket
from sip.events import (
    AckReceived, CancelReceived, DialogTerminated, Event, RequestReceived, ResponseReceived,
)
from sip.sdp import SdpSession, SessionDescription
from sip.useragent import SipEndpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIPP_DIR = pathlib.Path(__file__).resolve().parent / "sipp"
ADMIN = ("admin", "admin-pw")

# Distinct tones, away from the music on hold (392 / 523 Hz).
CALLER_HZ = 1000.0
AGENT_HZ = 700.0
AGENT2_HZ = 1400.0
EXTERNAL_HZ = 1800.0
THIRD_HZ = 2300.0


def goertzel_power(x: np.ndarray, hz: float) -> float:
    """Power of ``x`` at ``hz`` (one DFT bin at any frequency, as Goertzel computes it; 8 kHz).

    Normalised so a sine of amplitude A gives A²/4 whatever the length."""
    n = len(x)
    if n == 0:
        return 0.0
    w = np.exp(-2j * np.pi * hz * np.arange(n) / 8000.0)
    return float(abs(np.dot(x.astype(np.float64) * np.hanning(n), w)) ** 2) / (n * n) * 4 * 4 / 4


class ToneParty:
    """One RTP endpoint: sends a sine at ``hz`` (PCMU, 20 ms) to ``remote`` and keeps what it receives."""

    def __init__(self, hz: float, name: str = "") -> None:
        self.hz = hz
        self.name = name or f"{hz:.0f}Hz"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.sending = True
        self.received: list[tuple[float, np.ndarray]] = []
        self.events: list[tuple[float, int]] = []
        self._seq = 0
        self._ts = 0
        self._phase = 0
        self._ssrc = (hash(self.name) & 0x7FFFFFFF) | 1
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._readable)
        self._task = loop.create_task(self._send_loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except Exception:
            pass
        self.sock.close()

    def _readable(self) -> None:
        now = time.monotonic()
        for _ in range(64):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, OSError):
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            if pt == 0 and len(data) == 172:
                self.received.append((now, g711.ulaw_decode(np.frombuffer(data[12:], np.uint8))))
            elif pt == 101 and len(data) >= 16:
                self.events.append((now, data[12]))

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, t0 + 0.02 * n - loop.time()))
            if self.remote is None or not self.sending:
                continue
            idx = np.arange(self._phase, self._phase + 160)
            self._phase += 160
            pcm = (8000 * np.sin(2 * np.pi * self.hz * idx / 8000.0)).astype(np.int16)
            pkt = RtpPacket(0, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc,
                            g711.ulaw_encode(pcm).tobytes())
            self._seq += 1
            self._ts += 160
            try:
                self.sock.sendto(bytes(pkt), self.remote)
            except OSError:
                pass

    def audio(self, since: float, until: float | None = None) -> np.ndarray:
        until = until if until is not None else time.monotonic()
        frames = [f for t, f in self.received if since <= t <= until]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def hears(self, since: float, until: float | None = None) -> dict[str, float]:
        """Power at every test tone (and the music) in what arrived since ``since``."""
        x = self.audio(since, until)
        return {name: goertzel_power(x[-8000:], hz) for name, hz in TONES.items()}

    async def window(self, seconds: float = 0.8) -> dict[str, float]:
        """Wait ``seconds`` and return the tone powers heard during the last part of it."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        return self.hears(start + 0.25)


TONES = {"caller": CALLER_HZ, "agent": AGENT_HZ, "agent2": AGENT2_HZ, "external": EXTERNAL_HZ,
         "third": THIRD_HZ, "music": 392.0, "music_high": 523.25}
"""Test tones by party, and the two notes of the engine's default music on hold."""
HEARD = 1.0e5
"""Power above which a tone counts as heard (a tone at amplitude 8000 gives 1.6e7; silence ~0)."""


def heard_set(powers: dict[str, float]) -> set[str]:
    """The parties heard (either note of the music counts as ``music``)."""
    return {"music" if name == "music_high" else name for name, p in powers.items() if p > HEARD}


def sdp_for(port: int, direction: str = "sendrecv", session: int = 1) -> bytes:
    return (f"v=0\r\no=- {session} {session} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n").encode()


def remote_of(body: bytes) -> tuple[str, int]:
    sd = SessionDescription.parse(body)
    m = sd.media[0]
    conn = sd.media_connection(m)
    return (conn.address if conn else "127.0.0.1", m.port)


class Phone:
    """A scripted SIP phone (our own UA) with a :class:`ToneParty` for media.

    Answers INVITEs after ``answer_after_s`` (None: never; ``reject``: that status), keeps
    every event, can hold/retrieve by re-INVITE, REFER, and hang up.
    """

    def __init__(self, extension: str, hz: float, *, answer_after_s: float | None = 0.1,
                 reject: int | None = None) -> None:
        self.extension = extension
        self.party = ToneParty(hz, f"phone-{extension}")
        self.answer_after_s = answer_after_s
        self.reject = reject
        self.ep = SipEndpoint("127.0.0.1", 0, on_event=self._on_event, tcp=False, user=extension)
        self.dialog: Any = None
        self.line: Any = None
        self.events: list[Event] = []
        self.requests: list[Any] = []
        self.invites = 0
        self._waiters: list[tuple[Any, asyncio.Future]] = []
        self._session = 0

    async def start(self, engine_port: int | None = None, password: str = "") -> None:
        """Bind and start the media; with ``engine_port`` also REGISTER (digest) as ``extension``."""
        _, port = await self.ep.start()
        self.port = port
        self.party.start()
        if engine_port is not None:
            assert await register(engine_port, self.extension, password, contact_port=port) == 200

    async def stop(self) -> None:
        self.party.close()
        await self.ep.stop()

    def _on_event(self, ev: Event) -> None:
        self.events.append(ev)
        if isinstance(ev, RequestReceived):
            self.requests.append(ev.request)
            if ev.request.method == "INVITE" and ev.dialog is None:
                self.invites += 1
                self.ep.respond(ev.transaction, 180)
                if self.reject:
                    self.ep.respond(ev.transaction, self.reject)
                elif self.answer_after_s is not None:
                    asyncio.get_running_loop().call_later(self.answer_after_s, self._answer, ev)
            elif ev.request.method == "INVITE":
                self._session += 1
                self.party.remote = remote_of(ev.request.body)
                self.ep.respond(ev.transaction, 200, body=sdp_for(self.party.port, session=10 + self._session),
                                content_type="application/sdp")
            elif ev.request.method in ("NOTIFY", "INFO"):
                self.ep.respond(ev.transaction, 200)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(ev):
                fut.set_result(ev)
                self._waiters.remove((pred, fut))

    def _answer(self, ev: RequestReceived) -> None:
        if ev.transaction.state.name.lower() not in ("proceeding", "trying"):
            return
        self.party.remote = remote_of(ev.request.body)
        self.dialog = self.ep.respond(ev.transaction, 200, body=sdp_for(self.party.port),
                                      content_type="application/sdp")

    async def wait(self, pred: Any, timeout: float = 5.0) -> Event:
        for ev in self.events:
            if pred(ev):
                return ev
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    async def wait_new(self, pred: Any, timeout: float = 5.0) -> Event:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    async def invite(self, engine_port: int, user: str, password: str) -> Any:
        """Dial ``sip:<user>@cc.test`` through the engine (digest as the phone's extension); the final response."""
        from sip.auth import DigestClient

        self.ep.invite(f"sip:{user}@{DOMAIN}", dest=("127.0.0.1", engine_port),
                       from_=f"<sip:{self.extension}@{DOMAIN}>", body=sdp_for(self.party.port, session=99),
                       content_type="application/sdp", auth=DigestClient(self.extension, password))
        ev = await self.wait_new(lambda e: isinstance(e, ResponseReceived) and e.response.cseq[1] == "INVITE"
                                 and e.response.status_code >= 200, timeout=10)
        if ev.response.status_code < 300:
            self.line = ev.dialog
            self.party.remote = remote_of(ev.response.body)
        return ev.response

    async def reinvite(self, direction: str) -> int:
        """Hold (``sendonly``/``inactive``) or retrieve (``sendrecv``) by re-INVITE; returns the status."""
        self._session += 1
        self.ep.request_in_dialog(self.dialog, "INVITE", body=sdp_for(self.party.port, direction, 20 + self._session),
                                  content_type="application/sdp")
        ev = await self.wait_new(lambda e: isinstance(e, ResponseReceived) and e.response.status_code >= 200
                                 and e.response.cseq[1] == "INVITE")
        return ev.response.status_code

    def replaces(self, dialog: Any) -> str:
        """The escaped ``Replaces`` header value naming ``dialog`` (RFC 3891 §3) for a Refer-To URI."""
        return f"{dialog.call_id}%3Bto-tag%3D{dialog.remote_tag}%3Bfrom-tag%3D{dialog.local_tag}"

    async def refer(self, refer_to: str, extra: list[tuple[str, str]] = ()) -> int:
        self.ep.request_in_dialog(self.dialog, "REFER", headers=[("Refer-To", refer_to), *extra])
        ev = await self.wait_new(lambda e: isinstance(e, ResponseReceived) and e.response.cseq[1] == "REFER")
        return ev.response.status_code

    def bye(self) -> None:
        self.ep.bye(self.dialog)


class TrunkCaller:
    """A customer calling in through the trunk (our UAC) with a tone party."""

    def __init__(self, hz: float = CALLER_HZ, caller: str = "+4917000001") -> None:
        self.party = ToneParty(hz, "caller")
        self.caller = caller
        self.ep = SipEndpoint("127.0.0.1", 0, tcp=False, user="trunk")
        self.dialog: Any = None

    async def call(self, engine_port: int, dialed: str) -> int:
        await self.ep.start()
        self.party.start()
        self.ep.invite(f"sip:{dialed}@127.0.0.1:{engine_port}", from_=f"<sip:{self.caller}@127.0.0.1>",
                       body=sdp_for(self.party.port), content_type="application/sdp")
        while True:
            ev = await self.ep.next_event(10.0)
            if isinstance(ev, ResponseReceived) and ev.response.status_code >= 200:
                if ev.response.status_code < 300:
                    self.dialog = ev.dialog
                    self.party.remote = remote_of(ev.response.body)
                return ev.response.status_code

    async def stop(self) -> None:
        self.party.close()
        await self.ep.stop()


class InProcessEngine:
    """The engine (store, CallCentre, control socket) on the test's own loop."""

    def __init__(self, tmp: pathlib.Path, *, extra: str = "", **kw: Any) -> None:
        self.tmp = tmp
        self.sip_port = free_port()
        self.ctl_port = free_port()
        self.text = engine_config(tmp, self.sip_port, self.ctl_port, **kw) + extra
        self.engine: Engine | None = None
        self.centre: CallCentre | None = None

    async def start(self) -> None:
        import engine.agent_ops  # noqa: F401
        try:
            import engine.callcontrol_ops  # noqa: F401
        except ImportError:
            pass
        cfg = parse_config(self.text, str(self.tmp / "engine.toml"))
        self.centre = CallCentre()
        self.engine = Engine(cfg, services=[self.centre])
        await self.engine.start()

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    async def client(self, user: str = "admin", password: str = "admin-pw") -> ControlClient:
        c = ControlClient(host="127.0.0.1", port=self.ctl_port, user=user, password=password)
        await c.connect()
        return c


def trunk_section(name: str, port: int, *, username: str = "", password: str = "", caller_number: str = "",
                  max_channels: int = 0, host: str = "127.0.0.1") -> str:
    """A ``[trunks.NAME]`` table for an outbound trunk at ``host:port``."""
    lines = [f"\n[trunks.{name}]", f'host = "{host}"', f"port = {port}"]
    if username:
        lines += [f'username = "{username}"', f'password = "{password}"']
    if caller_number:
        lines.append(f'caller_number = "{caller_number}"')
    if max_channels:
        lines.append(f"max_channels = {max_channels}")
    return "\n".join(lines) + "\n"


__all__ = ["ADMIN", "AGENT_PASSWORDS", "DOMAIN", "InProcessEngine", "Phone", "ToneParty", "TrunkCaller",
           "heard_set", "trunk_section", "free_port", "AckReceived", "CancelReceived", "DialogTerminated",
           "SdpSession"]
