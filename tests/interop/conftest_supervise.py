"""Supervisor interop helpers: tone-sending SIP phones with real RTP and Goertzel checks of what they hear.

A :class:`Phone` owns an RTP socket and (for agent and supervisor phones) a
:class:`sip.useragent.SipEndpoint` that answers, rejects or only rings
INVITEs.  Once connected it sends its own sine tone every 20 ms (PCMU) and
keeps every frame it receives with its arrival time, so a test can ask
"which tones did this phone hear between t0 and t1".
"""
from __future__ import annotations

import asyncio
import pathlib
import socket
import time
from typing import Any

import numpy as np

from conftest_inbound import EngineProcess, register
from engine.passwords import hash_password
from media import g711
from media.rtp import RtpPacket
from sip.events import DialogTerminated, RequestReceived
from sip.sdp import SessionDescription
from sip.uas import sdp_answer
from sip.useragent import SipEndpoint

TONES_HZ = {"caller": 500.0, "agent": 1100.0, "supervisor": 1700.0}
AMPLITUDE = 6000
HEARD = 1200.0
"""Goertzel amplitude above which a tone counts as heard (sent at 6000; 0 dB through G.711)."""
SILENT = 300.0
"""... and below which it counts as not heard."""
SUP_PASSWORDS = {"sup": "sup-pw", "sup2": "sup2-pw"}
SUP_EXTENSIONS = {"sup": "3001", "sup2": "3002"}

SUPERVISOR_CONFIG = """
[groups.support]

[users.sup]
password = "{sup}"
role = "supervisor"
groups = ["sales"]
extension = "3001"

[users.sup2]
password = "{sup2}"
role = "supervisor"
groups = ["support"]
extension = "3002"
"""


def supervised_engine(tmp: pathlib.Path, **kw: Any) -> EngineProcess:
    """The inbound test engine plus supervisors ``sup`` (group sales) and ``sup2`` (group support)."""
    eng = EngineProcess(tmp, **kw)
    with open(eng.config, "a") as f:
        f.write(SUPERVISOR_CONFIG.format(**{u: hash_password(pw, n=1024) for u, pw in SUP_PASSWORDS.items()}))
    return eng


def tone_level(pcm: np.ndarray, hz: float) -> float:
    """Goertzel amplitude of ``hz`` in ``pcm`` (8 kHz): a full-scale sine of amplitude A gives ~A."""
    n = len(pcm)
    if n == 0:
        return 0.0
    x = pcm.astype(np.float64) * np.hanning(n)
    k = 2 * np.pi * hz / 8000.0
    s_prev = s_prev2 = 0.0
    coeff = 2 * np.cos(k)
    for v in x:  # the Goertzel recurrence (one bin), written out for clarity
        s = v + coeff * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    power = s_prev2 ** 2 + s_prev ** 2 - coeff * s_prev * s_prev2
    return float(2 * np.sqrt(max(power, 0.0)) / np.hanning(n).sum())


def tones_in(pcm: np.ndarray) -> dict[str, float]:
    """Level of each party's tone in ``pcm``."""
    return {who: round(tone_level(pcm, hz), 1) for who, hz in TONES_HZ.items()}


def who_is_heard(pcm: np.ndarray) -> set[str]:
    """The parties whose tone is clearly in ``pcm``; raises on an ambiguous level."""
    levels = tones_in(pcm)
    ambiguous = {w: v for w, v in levels.items() if SILENT <= v <= HEARD}
    assert not ambiguous, f"ambiguous tone levels {levels}"
    return {w for w, v in levels.items() if v > HEARD}


class Phone:
    """A phone (or the trunk's caller side) sending ``TONES_HZ[role]`` and recording what it hears."""

    def __init__(self, role: str, user: str = "phone") -> None:
        self.role = role
        self.tone = (AMPLITUDE * np.sin(2 * np.pi * TONES_HZ[role] * np.arange(160 * 50) / 8000)).astype(np.int16)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.rtp_port = self.rtp.getsockname()[1]
        self.endpoint = SipEndpoint("127.0.0.1", 0, on_event=self._on_sip, tcp=False, user=user)
        self.behaviour = "answer"
        """``answer``, ``reject`` (486) or ``ring`` (180, never answers)."""
        self.invites = 0
        self.ended = 0
        self.remote: tuple[str, int] | None = None
        self.dialog: Any = None
        self.received: list[tuple[float, np.ndarray]] = []
        self._task: asyncio.Task | None = None
        self._seq = 0
        self._session = 0

    async def start(self) -> int:
        """Bind SIP, start the RTP loop; returns the SIP port."""
        _, port = await self.endpoint.start()
        self._task = asyncio.get_running_loop().create_task(self._rtp_loop())
        return port

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.endpoint.stop()
        self.rtp.close()

    async def register(self, engine: EngineProcess, extension: str, password: str) -> int:
        return await register(engine.sip_port, extension, password, contact_port=self.endpoint.address[1])

    def connect(self, sdp: bytes) -> None:
        """Send our tone to the RTP address of ``sdp`` (the engine's offer or answer)."""
        sd = SessionDescription.parse(sdp)
        m = next(m for m in sd.media if m.media == "audio")
        conn = m.connection or sd.connection
        assert conn is not None
        self.remote = (conn.address, m.port)

    def hang_up(self) -> None:
        """BYE the current call (the phone's user hangs up)."""
        assert self.dialog is not None, f"{self.role} phone is not in a call"
        self.endpoint.bye(self.dialog)
        self.remote = None

    def _on_sip(self, ev: Any) -> None:
        if isinstance(ev, RequestReceived):
            req = ev.request
            if req.method == "INVITE" and ev.dialog is None:
                self.invites += 1
                if self.behaviour == "reject":
                    self.endpoint.respond(ev.transaction, 486)
                    return
                self.endpoint.respond(ev.transaction, 180)
                if self.behaviour == "ring":
                    return
                self._session += 1
                body = sdp_answer(req.body, "127.0.0.1", self.rtp_port, self._session)
                assert body is not None
                self.connect(req.body)
                self.dialog = self.endpoint.respond(ev.transaction, 200, body=body, content_type="application/sdp")
            else:
                self.endpoint.respond(ev.transaction, 200)
        elif isinstance(ev, DialogTerminated):
            self.ended += 1
            if ev.dialog is self.dialog:
                self.remote = None
                self.dialog = None

    async def _rtp_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        frame = 0
        while True:
            while True:
                try:
                    data = self.rtp.recv(2048)
                except BlockingIOError:
                    break
                try:
                    pkt = RtpPacket.parse(data)
                except Exception:
                    continue
                if pkt.payload_type == 0 and len(pkt.payload) == 160:
                    self.received.append((time.time(), g711.ulaw_decode(np.frombuffer(pkt.payload, np.uint8))))
            if self.remote is not None:
                pcm = self.tone[(frame % 50) * 160:(frame % 50 + 1) * 160]
                self._seq = (self._seq + 1) & 0xFFFF
                pkt = RtpPacket(0, self._seq, (160 * frame) & 0xFFFFFFFF, 0x5000 + self.rtp_port,
                                g711.ulaw_encode(pcm).tobytes())
                try:
                    self.rtp.sendto(bytes(pkt), self.remote)
                except OSError:
                    pass
            frame += 1
            next_t += 0.02
            delay = next_t - loop.time()
            if delay < -0.2:  # starved (loaded machine): resynchronise rather than burst
                next_t = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    def heard_between(self, t0: float, t1: float) -> np.ndarray:
        """Concatenated audio received between wall-clock times t0 and t1."""
        chunks = [pcm for ts, pcm in self.received if t0 <= ts < t1]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


async def listen_window(phones: dict[str, Phone], settle_s: float = 0.3,
                        window_s: float = 0.45) -> tuple[dict[str, set[str]], tuple[float, float]]:
    """Wait ``settle_s`` after a change, then what each phone hears over ``window_s``.

    Returns ``({phone role: parties heard}, (t0, t1))`` (wall clock, for the recording).
    """
    await asyncio.sleep(settle_s)
    t0 = time.time()
    await asyncio.sleep(window_s)
    t1 = time.time()
    out = {}
    for role, p in phones.items():
        pcm = p.heard_between(t0, t1)
        out[role] = who_is_heard(pcm) if len(pcm) >= 1600 else set()
    return out, (t0, t1)


__all__ = ["Phone", "SUP_EXTENSIONS", "SUP_PASSWORDS", "TONES_HZ", "listen_window", "supervised_engine",
           "tones_in", "who_is_heard"]
