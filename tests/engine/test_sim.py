"""engine/sim.py: the analysis functions on synthetic audio, and two parties of
one RtpPump talking over real UDP on 127.0.0.1 (tones, RFC 4733 digits)."""
from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from engine.sim import (
    FRAME_SAMPLES, LOUD_DB, RtpPump, SimError, envelope, envelope_match, level_db, speech_segments, tone_ratio,
)
from media.dtmf import Rfc4733Receiver
from media.rtp import RtpPacket


def sine(hz: float, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000.0
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_tone_ratio_finds_the_tone_and_not_another() -> None:
    x = sine(1400, 0.5)
    assert tone_ratio(x, 1400) > 0.9
    assert tone_ratio(x, 1000) < 0.01
    two = np.concatenate([sine(392, 0.5), sine(523, 0.5)])
    assert 0.35 < tone_ratio(two, 392) < 0.65
    assert tone_ratio(np.zeros(800, np.int16), 1000) == 0.0
    assert tone_ratio(np.zeros(10, np.int16), 1000) == 0.0  # shorter than a block


def test_levels_and_segments() -> None:
    frames = np.concatenate([np.zeros(1600, np.int16), sine(440, 1.0), np.zeros(800, np.int16), sine(440, 0.1)])
    levels = envelope(frames)
    assert len(levels) == len(frames) // FRAME_SAMPLES
    assert levels[0] == pytest.approx(-120.0) and levels[20] > LOUD_DB
    # -15 dBFS RMS for a sine of amplitude 8000: 20*log10(8000/sqrt(2)/32768)
    assert level_db(sine(440, 0.02)[None, :])[0] == pytest.approx(-15.26, abs=0.2)
    assert speech_segments(levels, min_s=0.2) == [(pytest.approx(0.2), pytest.approx(1.4))]  # 0.1 s gap bridged
    assert speech_segments(levels, min_s=0.05, bridge_s=0.0) == [(pytest.approx(0.2), pytest.approx(1.2)),
                                                                (pytest.approx(1.3), pytest.approx(1.4))]
    assert speech_segments(levels, min_s=0.5, bridge_s=0.0) == [(pytest.approx(0.2), pytest.approx(1.2))]


def test_envelope_match_finds_a_pattern_and_its_offset() -> None:
    rng = np.random.default_rng(3)
    word = np.concatenate([rng.normal(0, a, 800) for a in (3000, 200, 6000, 50, 2500, 4000)]).astype(np.int16)
    other = np.concatenate([rng.normal(0, a, 800) for a in (4000, 1500, 300, 5000, 800, 2500)]).astype(np.int16)
    heard = np.concatenate([np.zeros(1600, np.int16), word, np.zeros(800, np.int16),
                            rng.normal(0, 3000, 4000).astype(np.int16)])
    score, offset = envelope_match(envelope(heard), envelope(word))
    assert score > 0.95 and offset == 10
    assert envelope_match(envelope(heard), envelope(other))[0] < 0.85  # the interop tests demand > 0.85
    assert envelope_match(envelope(word)[:3], envelope(heard)) == (0.0, -1)  # expected longer than heard


@pytest.mark.twin  # the pump's socket work is media.rtpio: compiled, or its pure twin
def test_two_parties_hear_each_others_tone_and_digits() -> None:
    async def scenario() -> None:
        pump = RtpPump(capacity=2)
        a = pump.open(keep_audio=True, tone_hz=1000)
        b = pump.open(keep_audio=True, tone_hz=1600)
        a.connect(("127.0.0.1", b.port))
        b.connect(("127.0.0.1", a.port))
        spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        spy.bind(("127.0.0.1", 0))
        spy.setblocking(False)
        pump.start()
        try:
            await asyncio.sleep(0.5)
            assert tone_ratio(b.heard_audio()[-1600:], 1000) > 0.9
            assert tone_ratio(a.heard_audio()[-1600:], 1600) > 0.9
            assert a.loud_frames > 10 and b.frames_heard > 10
            # Digits go out as RFC 4733 events: watch them on a third socket.
            a.connect(spy.getsockname())
            seconds = a.send_digits("5#", duration_ms=60, gap_ms=40)
            await asyncio.sleep(seconds + 0.2)
            receiver = Rfc4733Receiver()
            digits = []
            loop = asyncio.get_running_loop()
            while True:
                try:
                    data = spy.recv(2048)
                except BlockingIOError:
                    break
                pkt = RtpPacket.parse(data)
                if pkt.payload_type == 101:
                    digits += [d.digit for d in receiver.receive(pkt.payload, pkt.timestamp, pkt.marker, pkt.ssrc,
                                                                  loop.time())]
            assert digits == ["5", "#"]
        finally:
            spy.close()
            await pump.stop()
        assert pump.parties == {} and a.closed and b.closed

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_pump_capacity_and_bad_input() -> None:
    async def scenario() -> None:
        pump = RtpPump(capacity=1)
        p = pump.open()
        with pytest.raises(SimError, match="full"):
            pump.open()
        with pytest.raises(SimError, match="keep_audio"):
            p.heard_audio()
        from media.errors import LocalMediaError
        with pytest.raises(LocalMediaError):
            p.send_digits("x")
        p.close()
        p.close()  # idempotent
        assert pump.open().slot == 0
        await pump.stop()

    asyncio.run(scenario())
