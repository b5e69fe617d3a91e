"""The batched prompt table (media/prompttable.py): frame for frame what the
per-player ArraySource path plays, through arena compaction, and the media
engine's output over real loopback RTP identical on both paths."""
from __future__ import annotations

import numpy as np
import pytest

from mediart_peers import RtpPeer
from media.engine import MediaConfig, MediaEngine
from media.events import PlaybackFinished
from media.player import ArraySource, MusicSource, SilenceSource
from media.prompttable import PromptTable, batchable

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins, end to end

RNG = np.random.default_rng(7)


def prompt(n: int) -> np.ndarray:
    return RNG.integers(-20000, 20000, n).astype(np.int16)


def reference_frames(samples: np.ndarray) -> list[np.ndarray]:
    src, out = ArraySource(samples), []
    while (f := src.read()) is not None:
        out.append(f.copy())
    return out


def test_table_reads_what_array_sources_read_and_reports_the_end() -> None:
    table = PromptTable(slots=4, samples=1024)  # small arena: forces compactions
    out = np.full((1 + 8, 160), 99, np.int16)
    lengths = {0: 1000, 3: 160, 5: 4321, 7: 1}
    arrays = {slot: prompt(n) for slot, n in lengths.items()}
    shared = arrays[5]
    arrays[6] = shared  # two legs hearing the same cached prompt share its segment
    for slot, a in arrays.items():
        table.start(slot, a)
    expected = {slot: reference_frames(a) for slot, a in arrays.items()}
    got: dict[int, list[np.ndarray]] = {slot: [] for slot in arrays}
    finished_at: dict[int, int] = {}
    for tick in range(40):
        done = table.read(out, 1).tolist()
        for slot in list(got):
            if slot not in finished_at:
                got[slot].append(out[1 + slot].copy())
        for slot in done:
            finished_at[slot] = tick
            table.stop(slot)
        if tick == 3:  # a new prompt while others play: it lands after a compaction
            arrays[2] = prompt(3000)
            expected[2] = reference_frames(arrays[2])
            got[2] = []
            table.start(2, arrays[2])
    assert table.compactions >= 1
    for slot, frames in expected.items():
        assert len(got[slot]) == len(frames), slot
        assert all(np.array_equal(a, b) for a, b in zip(got[slot], frames)), slot
    assert len(table) == 0


def test_stop_reports_samples_played_and_only_array_sources_qualify(tmp_path) -> None:
    table = PromptTable()
    out = np.zeros((3, 160), np.int16)
    table.start(1, prompt(800))
    table.read(out, 0)
    table.read(out, 0)
    assert table.stop(1) == 320 and table.stop(1) == 0
    assert batchable(ArraySource(prompt(10))) and batchable(SilenceSource(100))
    played = ArraySource(prompt(400))
    played.read()
    assert not batchable(played) and not batchable(ArraySource(np.zeros(0, np.int16)))
    assert not batchable(MusicSource(prompt(400)))


def _run(batch: bool, n_legs: int = 6, ticks: int = 60) -> tuple[list[np.ndarray], list]:
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0))
    engine._batch_prompts = batch
    peers = []
    try:
        for i in range(n_legs):
            peer = RtpPeer(f"p{i}", 0.0)
            leg = engine.create_leg(f"l{i}", call_id=f"c{i}", remote=peer.address)
            peer.target = ("127.0.0.1", leg.local_port)
            peers.append(peer)
        rng = np.random.default_rng(3)
        cached = rng.integers(-8000, 8000, 5000).astype(np.int16)
        for i in range(n_legs):
            # half the legs hear the same array (a cached prompt), the others their own
            samples = cached if i % 2 else rng.integers(-8000, 8000, 1600 + 700 * i).astype(np.int16)
            engine.play(ArraySource(samples), leg_id=f"l{i}", player_id=f"pl{i}")
        engine.play(MusicSource(rng.integers(-8000, 8000, 900).astype(np.int16)), leg_id="l0", player_id="moh")
        events = []
        for k in range(ticks):
            if k == 10:
                engine.stop_playback("pl3")
            if k == 12:  # a fresh prompt on a leg whose prompt was stopped
                engine.play(ArraySource(cached), leg_id="l3", player_id="again")
            if k == 30:
                engine.stop_playback("moh")
            for p in peers:
                p.send()
            engine.run_tick(k, 1000.0 + 0.02 * k)
            for p in peers:
                p.drain()
            while (ev := engine.next_event()) is not None:
                events.append((k, ev))
        if batch:
            assert len(engine._table_players) == 0 and engine._prompts.top > 0
        return [p.audio(skip_frames=0) for p in peers], events
    finally:
        engine.close()
        for p in peers:
            p.close()


def test_engine_output_is_identical_on_both_prompt_paths() -> None:
    batched_audio, batched_events = _run(True)
    loose_audio, loose_events = _run(False)
    for a, b in zip(batched_audio, loose_audio):
        assert len(a) == len(b) and np.array_equal(a, b)
    assert any(np.abs(a).max() > 1000 for a in batched_audio)
    # The table ends a prompt right after its last frame; the per-player path one tick later (a read of None).
    ends = {ev.player_id: (k, ev.reason) for k, ev in batched_events if isinstance(ev, PlaybackFinished)}
    loose = {ev.player_id: (k, ev.reason) for k, ev in loose_events if isinstance(ev, PlaybackFinished)}
    assert ends.keys() == loose.keys() == {"pl0", "pl1", "pl2", "pl3", "pl4", "pl5", "moh", "again"}
    for pid, (k, reason) in loose.items():
        assert ends[pid][1] == reason
        assert ends[pid][0] == (k if pid in ("moh", "pl3") else k - 1), pid
