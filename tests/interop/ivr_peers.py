"""Real peers for the IVR end-to-end tests: baresip as a caller and SIPp
replaying RFC 4733 digits from pcaps written here.

baresip (1.0.0, ``../shared/testpeers``) dials the engine's trunk from
127.0.0.1, sends RFC 4733 digits with ``sndcode`` over ctrl_tcp, streams a
tone file as its microphone and records what it receives (decoded) to
``rec/dump-*-dec.wav``: that file is what the caller heard, checked after the
call by level envelope (fingerprint) against the engine's own espeak-ng
prompts and by Goertzel at the agent's tone.

:func:`write_rfc4733_pcap` writes a capture of RTP telephone-event packets
(RFC 4733 §2.3: event, E bit, volume, duration) for a digit string, in the
layout SIPp's ``play_pcap_audio`` replays (pcap, Ethernet, IPv4, UDP):
one event per digit, a new RTP timestamp per event, the marker bit on its
first packet, an update every 20 ms with the duration so far, and the final
(E) packet sent three times (§2.5.1.4).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import wave

import numpy as np

from conftest_inbound import free_port
from engine.sim import LOUD_DB, envelope, envelope_match

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testpeers"
sys.path.insert(0, str(SHARED))
from bsctl import BaresipCtl  # noqa: E402

EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
"""RFC 4733 §3.2 table 7: DTMF named events."""


def heard_match(heard: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """Best :func:`engine.sim.envelope_match` of ``expected`` in ``heard`` over four 5 ms phases.

    A recording's 20 ms frame grid is not aligned with the engine's packets:
    trying four phases of the grid removes the up-to-half-frame smear.
    Returns (score, offset in 20 ms frames).
    """
    want = envelope(expected)
    best = (0.0, -1)
    for phase in (0, 40, 80, 120):
        score, offset = envelope_match(envelope(heard[phase:]), want)
        if score > best[0]:
            best = (score, offset)
    return best


# --------------------------------------------------------------------------- RFC 4733 pcaps

def rfc4733_packets(digits: str, *, payload_type: int = 101, ssrc: int = 0x4733D1D1, seq: int = 1000,
                    timestamp: int = 160000, tone_ms: int = 100, gap_ms: int = 80,
                    volume: int = 10) -> list[tuple[float, bytes]]:
    """``(send time s, RTP packet)`` for ``digits``: RFC 4733 events, 20 ms updates, E packet x3."""
    out: list[tuple[float, bytes]] = []
    t = 0.0
    for digit in digits:
        event = EVENT_CODES[digit.upper()]
        updates = max(1, tone_ms // 20)
        for i in range(updates + 2):
            n = min(i, updates - 1) + 1
            end = i >= updates - 1
            duration = n * 160
            marker = 0x80 if i == 0 else 0
            header = struct.pack("!BBHII", 0x80, marker | payload_type, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)
            out.append((t, header + payload))
            seq += 1
            t += 0.02 if i < updates - 1 else 0.0005  # the E retransmissions follow closely (as Debian's pcaps)
        timestamp += (tone_ms + gap_ms) * 8
        t += gap_ms / 1000.0
    return out


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rfc4733_pcap(path: pathlib.Path, digits: str, **kw: int) -> float:
    """Write ``digits`` as RFC 4733 RTP to a pcap SIPp can replay; returns its length in seconds.

    Addresses and ports are placeholders (SIPp sends the UDP payloads from
    its media port to the remote media address of the call).
    """
    packets = rfc4733_packets(digits, **kw)
    base = 1_700_000_000.0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # pcap, DLT_EN10MB
        for ident, (t, rtp) in enumerate(packets):
            udp = struct.pack("!HHHH", 49176, 10000, 8 + len(rtp), 0) + rtp  # UDP checksum 0: none (RFC 768)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0, 64, 17, 0,
                             bytes([192, 168, 0, 3]), bytes([192, 168, 0, 1]))
            ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
            frame = bytes.fromhex("0050bf990336000d8714ac24") + b"\x08\x00" + ip + udp
            ts = base + t
            f.write(struct.pack("<IIII", int(ts), int(round((ts % 1) * 1e6)) % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return packets[-1][0] if packets else 0.0


def read_pcap_rtp(path: pathlib.Path) -> list[bytes]:
    """The UDP payloads of an Ethernet/IPv4 pcap (to check the writer)."""
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and link == 1
    out, off = [], 24
    while off < len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ihl = (frame[14] & 0x0F) * 4
        out.append(frame[14 + ihl + 8:])
    return out


# --------------------------------------------------------------------------- baresip caller

class BaresipCaller:
    """One baresip process that calls the engine as a trunk caller (no registration).

    ``tone_hz``: its microphone (a sine file of ``tone_s``); what it hears is
    recorded by the sndfile module and read by :meth:`heard` after :meth:`stop`.
    """

    def __init__(self, tmp: pathlib.Path, name: str, caller_number: str, tone_hz: float,
                 tone_s: float = 40.0) -> None:
        self.dir = tmp / name
        self.rec = self.dir / "rec"
        self.rec.mkdir(parents=True)
        self.caller_number = caller_number
        self.tone_hz = tone_hz
        self.tone_s = tone_s
        self.proc: subprocess.Popen | None = None
        self.ctl: BaresipCtl | None = None
        self.mark = 0  # samples of the recording already waited through (see wait_prompt)

    def start(self) -> None:
        baresip = shutil.which("baresip")
        assert baresip, "baresip not installed (apt-get install baresip)"
        wav = self.dir / "mic.wav"
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(wav),
                        "synth", str(self.tone_s), "sine", str(self.tone_hz), "vol", "0.3"], check=True, timeout=20)
        rtp = free_port() & ~1
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        config = (SHARED / "baresip" / "config.template").read_text()
        for key, value in {"@SIP_PORT@": str(free_port()), "@CTRL_PORT@": str(self.ctrl_port),
                           "@RTP_PORTS@": f"{rtp}-{rtp + 9}", "@SRC_WAV@": str(wav),
                           "@REC_DIR@": str(self.rec)}.items():
            config = config.replace(key, value)
        (self.dir / "config").write_text(config)
        (self.dir / "accounts").write_text(f"<sip:{self.caller_number}@127.0.0.1>;regint=0;answermode=manual;"
                                           "audio_codecs=PCMU,PCMA\n")
        out = open(self.dir / "baresip.log", "wb")
        self.proc = subprocess.Popen([baresip, "-f", str(self.dir)], stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 5.0
        while True:
            assert self.proc.poll() is None, f"baresip exited {self.proc.returncode}:\n{self.log()}"
            try:
                self.ctl = BaresipCtl(self.ctrl_port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"baresip ctrl_tcp not up:\n{self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "baresip.log").read_text(errors="replace")[-3000:]
        return ""

    def dial(self, uri: str, timeout_s: float = 10.0) -> None:
        assert self.ctl is not None
        self.ctl.command("dial", uri)
        try:
            self.ctl.wait_event("CALL_ESTABLISHED", timeout_s)
        except TimeoutError:
            raise AssertionError(f"baresip call to {uri} not established:\n{self.log()}") from None

    def press(self, digits: str) -> None:
        """RFC 4733 digits in the current call (baresip's own telephone-event sender)."""
        assert self.ctl is not None
        reply = self.ctl.command("sndcode", digits)
        assert reply.get("ok"), reply

    def hangup(self) -> None:
        assert self.ctl is not None
        self.ctl.command("hangup")

    def wait_closed(self, timeout_s: float) -> str:
        """The reason of the next CALL_CLOSED (the engine hung up, or we did)."""
        assert self.ctl is not None
        try:
            return str(self.ctl.wait_event("CALL_CLOSED", timeout_s).get("param", ""))
        except TimeoutError:
            raise AssertionError(f"baresip call not closed in {timeout_s} s:\n{self.log()}") from None

    def stop(self) -> None:
        """quit, then SIGTERM, then SIGKILL of its own session (each step bounded): the WAVs are final."""
        p = self.proc
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                self.ctl.command("quit", timeout=2.0)
            self.ctl.close()
            self.ctl = None
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(3)
            return
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def received_so_far(self) -> np.ndarray:
        """The samples of the (growing) received-audio dump, read while the call is up.

        sndfile writes each decoded frame as it plays it; the WAV header's
        sizes are only final at the end, so the data chunk is read to EOF.
        """
        dumps = sorted(self.rec.glob("dump-*-dec.wav"))
        if not dumps:
            return np.zeros(0, np.int16)
        data = dumps[-1].read_bytes()
        at = data.find(b"data", 12)
        if at < 0:
            return np.zeros(0, np.int16)
        body = data[at + 8:]
        return np.frombuffer(body[:len(body) // 2 * 2], "<i2")

    async def wait_prompt(self, speech_s: float = 0.5, quiet_s: float = 0.6, timeout_s: float = 15.0) -> float:
        """Wait until baresip has received at least ``speech_s`` of sound since the last wait
        followed by ``quiet_s`` of silence (a whole prompt heard); returns the seconds of sound."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        quiet = int(round(quiet_s / 0.02))
        loud_s = 0.0
        while loop.time() < deadline:
            x = self.received_so_far()
            loud = envelope(x[self.mark:]) > LOUD_DB
            loud_s = float(np.count_nonzero(loud)) * 0.02
            if loud_s >= speech_s and len(loud) >= quiet and not loud[-quiet:].any():
                self.mark = len(x)
                return loud_s
            await asyncio.sleep(0.1)
        raise AssertionError(f"baresip heard {loud_s:.2f} s of sound then no {quiet_s} s pause "
                             f"within {timeout_s} s:\n{self.log()}")

    async def wait_sound(self, seconds: float, timeout_s: float = 15.0) -> None:
        """Wait until baresip has received ``seconds`` of sound since the last wait (a prompt playing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            x = self.received_so_far()
            if np.count_nonzero(envelope(x[self.mark:]) > LOUD_DB) * 0.02 >= seconds:
                self.mark = len(x)
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"baresip did not hear {seconds} s of sound within {timeout_s} s:\n{self.log()}")

    def heard(self) -> np.ndarray:
        """The decoded audio baresip received in its (single) call, int16 at 8 kHz."""
        dumps = sorted(self.rec.glob("dump-*-dec.wav"))
        assert len(dumps) == 1, f"expected one received-audio dump, found {dumps}:\n{self.log()}"
        with wave.open(str(dumps[0])) as w:
            assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 8000, 2)
            return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()
