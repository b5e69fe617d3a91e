"""Test-side RTP endpoints for the media engine tests: real UDP sockets on
127.0.0.1 that send a sine at their own frequency and keep what they receive,
plus FFT helpers that say which tones a signal holds."""
from __future__ import annotations

import random
import socket

import numpy as np

from media import g711
from media.rtp import RtpPacket, is_rtcp

RATE = 8000
FRAME = 160
AMPLITUDE = 6000.0


class RtpPeer:
    """A phone stand-in: sends a continuous sine, one 20 ms PCMU/PCMA packet per call."""

    def __init__(self, name: str, freq_hz: float | None, codec: str = "PCMU", payload_type: int | None = None) -> None:
        self.name = name
        self.freq_hz = freq_hz
        self.codec = codec
        self.payload_type = payload_type if payload_type is not None else (0 if codec == "PCMU" else 8)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.sample = 0
        self.target: tuple[str, int] | None = None
        self.received: list[RtpPacket] = []
        self.rtcp: list[bytes] = []

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def frame(self) -> np.ndarray:
        n = np.arange(self.sample, self.sample + FRAME)
        self.sample += FRAME
        if self.freq_hz is None:
            return np.zeros(FRAME, np.int16)
        return np.round(AMPLITUDE * np.sin(2 * np.pi * self.freq_hz * n / RATE)).astype(np.int16)

    def packet(self, payload: bytes | None = None, payload_type: int | None = None, marker: bool = False,
               timestamp: int | None = None) -> bytes:
        if payload is None:
            payload = g711.encode(self.codec, self.frame()).tobytes()
        p = RtpPacket(self.payload_type if payload_type is None else payload_type, self.seq, 
                      self.ts if timestamp is None else timestamp, self.ssrc, payload, marker)
        self.seq = (self.seq + 1) & 0xFFFF
        if timestamp is None:
            self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        return bytes(p)

    def send(self, data: bytes | None = None) -> None:
        assert self.target is not None
        self.sock.sendto(self.packet() if data is None else data, self.target)

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            if is_rtcp(data):
                self.rtcp.append(data)
            else:
                self.received.append(RtpPacket.parse(data))

    def audio(self, skip_frames: int = 10, codec: str | None = None) -> np.ndarray:
        """Received audio in sequence order (first ``skip_frames`` dropped), decoded."""
        pkts = [p for p in self.received if len(p.payload) == FRAME]
        pkts.sort(key=lambda p: p.sequence_number)  # no wrap in these short runs (checked below)
        pcm = [g711.decode(codec or self.codec, np.frombuffer(p.payload, np.uint8)) for p in pkts[skip_frames:]]
        return np.concatenate(pcm) if pcm else np.zeros(0, np.int16)

    def close(self) -> None:
        self.sock.close()


def tone_levels(pcm: np.ndarray, freqs: list[float]) -> dict[float, float]:
    """Amplitude (int16 scale) of each frequency in ``pcm`` by a Hann-windowed FFT."""
    x = pcm.astype(np.float64)
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    hz = np.fft.rfftfreq(len(x), 1 / RATE)
    out = {}
    for f in freqs:
        band = (hz > f - 8) & (hz < f + 8)
        out[f] = float(spec[band].max())
    return out


def heard(pcm: np.ndarray, candidates: dict[str, float], present: float = 0.5, absent: float = 0.02) -> set[str]:
    """Which named tones are in ``pcm``: at least ``present`` of the sent amplitude.

    Raises AssertionError when a tone sits between the two thresholds (neither
    clearly there nor clearly absent), so a leak cannot pass as silence.
    """
    assert len(pcm) >= RATE // 2, f"only {len(pcm)} samples received"
    levels = tone_levels(pcm, list(candidates.values()))
    names = set()
    for name, f in candidates.items():
        rel = levels[f] / AMPLITUDE
        assert rel >= present or rel <= absent, f"tone {name} ({f} Hz) at {rel:.3f} of full level: a leak"
        if rel >= present:
            names.add(name)
    return names
