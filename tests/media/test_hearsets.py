"""Every hear-set row of ARCHITECTURE.md over real RTP on loopback.

Each participant is a test-side RTP endpoint sending its own sine frequency
through a real UDP socket to its leg; the engine ticks in lockstep with the
senders (``run_tick``), and an FFT of what each endpoint receives -- and of
each recorder channel -- must show exactly the tones of its hear set and no
others (a tone between 2 % and 50 % of its level fails as a leak).
"""
from __future__ import annotations

import numpy as np
import pytest

from mediart_peers import AMPLITUDE, RtpPeer, heard
from media.engine import MediaConfig, MediaEngine
from media.player import MusicSource
from media.room import HearSet

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins, end to end

TONES = {"caller": 400.0, "agent": 700.0, "supervisor": 1100.0, "music": 1500.0, "consulted": 1900.0}
TICKS = 70  # 1.4 s; the FFT uses the last 60 frames (1.2 s)


def SineSource(freq_hz: float) -> MusicSource:
    """Music on hold (media.player.MusicSource) looping one second of a sine."""
    t = np.arange(8000)
    return MusicSource(np.round(AMPLITUDE * np.sin(2 * np.pi * freq_hz * t / 8000)).astype(np.int16), crossfade_ms=0)


class MemorySink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.closed = False

    def write_frame(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed = True

    def channel(self, c: int, skip: int = 10) -> np.ndarray:
        return np.concatenate([f[c] for f in self.frames[skip:]])


@pytest.fixture
def rig():
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0))
    peers: dict[str, RtpPeer] = {}

    def add(name: str, codec: str = "PCMU") -> RtpPeer:
        peer = RtpPeer(name, TONES[name], codec)
        leg = engine.create_leg(name, call_id="call-1", remote=peer.address, codec=codec)
        peer.target = ("127.0.0.1", leg.local_port)
        peers[name] = peer
        return peer

    def run(ticks: int = TICKS) -> None:
        for k in range(ticks):
            for p in peers.values():
                p.send()
            engine.run_tick(k, 100.0 + 0.02 * k)
            for p in peers.values():
                p.drain()

    def hears(name: str) -> set[str]:
        p = peers[name]
        assert len(p.received) >= TICKS - 1
        return heard(p.audio(), TONES)

    yield engine, add, run, hears
    engine.close()
    for p in peers.values():
        p.close()


def _room(engine: MediaEngine, room_id: str, *legs: str) -> None:
    engine.create_room(room_id)
    for leg in legs:
        engine.join(room_id, leg)


def test_two_party(rig) -> None:
    engine, add, run, hears = rig
    add("caller")
    add("agent", codec="PCMA")  # the bridge transcodes μ-law ↔ A-law
    _room(engine, "call", "caller", "agent")
    engine.apply_hear_set("call", HearSet.TWO_PARTY, caller="caller", agent="agent")
    rec = MemorySink()
    engine.record("call", "rec", rec, channels=[["caller"], ["agent"]])
    run()
    assert hears("caller") == {"agent"}
    assert hears("agent") == {"caller"}
    assert heard(rec.channel(0), TONES) == {"caller"}
    assert heard(rec.channel(1), TONES) == {"agent"}


def test_hold(rig) -> None:
    engine, add, run, hears = rig
    add("caller")
    add("agent")
    _room(engine, "call", "caller", "agent")
    rec = MemorySink()
    engine.record("call", "rec", rec, channels=[["caller"], ["agent"]])
    engine.play(SineSource(TONES["music"]), room_id="call", player_id="music")
    engine.apply_hear_set("call", HearSet.HOLD, caller="caller", agent="agent", music="music")
    run()
    assert hears("caller") == {"music"}
    assert hears("agent") == set()
    assert heard(rec.channel(0), TONES) == {"caller"}
    assert heard(rec.channel(1), TONES) == {"agent"}


def test_consult(rig) -> None:
    engine, add, run, hears = rig
    for name in ("caller", "agent", "consulted"):
        add(name)
    _room(engine, "call", "caller", "agent")
    engine.play(SineSource(TONES["music"]), room_id="call", player_id="music")
    engine.apply_hear_set("call", HearSet.CONSULT, caller="caller", agent="agent", music="music")
    _room(engine, "consult", "agent", "consulted")
    engine.apply_hear_set("consult", HearSet.TWO_PARTY, caller="consulted", agent="agent")
    run()
    assert hears("caller") == {"music"}
    assert hears("agent") == {"consulted"}
    assert hears("consulted") == {"agent"}


@pytest.mark.parametrize("row", [HearSet.THREE_WAY, HearSet.BARGE])
def test_three_way_and_barge(rig, row) -> None:
    engine, add, run, hears = rig
    for name in ("caller", "agent", "supervisor"):
        add(name)
    _room(engine, "call", "caller", "agent", "supervisor")
    engine.apply_hear_set("call", row, caller="caller", agent="agent", supervisor="supervisor")
    run()
    assert hears("caller") == {"agent", "supervisor"}
    assert hears("agent") == {"caller", "supervisor"}
    assert hears("supervisor") == {"caller", "agent"}


def test_listen(rig) -> None:
    engine, add, run, hears = rig
    for name in ("caller", "agent", "supervisor"):
        add(name)
    _room(engine, "call", "caller", "agent", "supervisor")
    rec = MemorySink()
    engine.record("call", "rec", rec, channels=[["caller"], ["agent"]])
    engine.apply_hear_set("call", HearSet.LISTEN, caller="caller", agent="agent", supervisor="supervisor")
    run()
    assert hears("caller") == {"agent"}
    assert hears("agent") == {"caller"}
    assert hears("supervisor") == {"caller", "agent"}
    assert heard(rec.channel(0), TONES) == {"caller"}
    assert heard(rec.channel(1), TONES) == {"agent"}


def test_whisper(rig) -> None:
    engine, add, run, hears = rig
    for name in ("caller", "agent", "supervisor"):
        add(name)
    _room(engine, "call", "caller", "agent", "supervisor")
    engine.apply_hear_set("call", HearSet.WHISPER, caller="caller", agent="agent", supervisor="supervisor")
    run()
    assert hears("caller") == {"agent"}
    assert hears("agent") == {"caller", "supervisor"}
    assert hears("supervisor") == {"caller", "agent"}


def test_row_changes_mid_call(rig) -> None:
    """Two-party → hold → retrieve on the same legs: each phase hears its own set."""
    engine, add, run, hears = rig
    caller, agent = add("caller"), add("agent")
    _room(engine, "call", "caller", "agent")
    engine.apply_hear_set("call", HearSet.TWO_PARTY, caller="caller", agent="agent")
    run()
    assert hears("caller") == {"agent"}
    caller.received.clear()
    agent.received.clear()
    engine.play(SineSource(TONES["music"]), room_id="call", player_id="music")
    engine.apply_hear_set("call", HearSet.HOLD, caller="caller", agent="agent", music="music")
    run()
    assert hears("caller") == {"music"} and hears("agent") == set()
    caller.received.clear()
    agent.received.clear()
    engine.stop_playback("music")
    engine.apply_hear_set("call", HearSet.TWO_PARTY, caller="caller", agent="agent")
    run()
    assert hears("caller") == {"agent"} and hears("agent") == {"caller"}


@pytest.mark.parametrize("row", [HearSet.TWO_PARTY, HearSet.HOLD, HearSet.THREE_WAY, HearSet.LISTEN, HearSet.WHISPER])
def test_recording_file_channels(rig, tmp_path, row) -> None:
    """The real recorder (media.recorder, stereo WAV in per-day folders) keeps the
    caller on the left and the agent on the right through every row."""
    import datetime

    import soundfile

    from media.recorder import Recorder

    engine, add, run, hears = rig
    for name in ("caller", "agent", "supervisor"):
        add(name)
    _room(engine, "call", "caller", "agent", "supervisor")
    engine.play(SineSource(TONES["music"]), room_id="call", player_id="music")
    engine.apply_hear_set("call", HearSet.THREE_WAY, caller="caller", agent="agent", supervisor="supervisor")
    engine.set_hearing("call", "music", heard_by=set())
    engine.apply_hear_set("call", row, caller="caller", agent="agent", supervisor="supervisor", music="music")
    recorder = Recorder(tmp_path, fmt="wav", stereo=True)
    try:
        rid = recorder.start("call-1", datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.timezone.utc))
        engine.record("call", "rec", recorder, [["caller"], ["agent"]], recording_id=rid)
        run()
        result = engine.stop_recording("call", "rec").result(timeout=10)
    finally:
        recorder.close()
    assert result.path.parent == tmp_path / "2026" / "11" / "23"
    audio, rate = soundfile.read(result.path, dtype="int16")
    assert rate == 8000 and audio.shape == (TICKS * 160, 2)
    assert heard(audio[1600:, 0], TONES) == {"caller"}
    assert heard(audio[1600:, 1], TONES) == {"agent"}
