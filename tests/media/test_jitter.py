"""Jitter buffer under simulated networks (deterministic seeds): loss,
reordering, duplication, jitter, sender clock drift, timestamp wrap."""
from __future__ import annotations

import heapq

import numpy as np
import pytest

from media.errors import LocalMediaError
from media.jitter import FrameKind, JitterBuffer

FRAME = 160
TICK = 0.02


def frame_of(k: int) -> np.ndarray:
    # Frame k carries its own number, so the output order can be checked.
    return np.full(FRAME, 1000 + k % 20000, np.int16)


def simulate(
    seconds: float = 20.0,
    seed: int = 1,
    base_delay: float = 0.03,
    jitter_s: float = 0.0,
    loss: float = 0.0,
    duplicate: float = 0.0,
    drift: float = 0.0,
    ts0: int = 12345,
    jb: JitterBuffer | None = None,
    gap: tuple[float, float] | None = None,
):
    """Send frames every 20 ms of sender clock (which runs ``drift`` fast),
    deliver them through a network with random delay, loss and duplicates,
    and pull one frame per 20 ms receiver tick.

    Returns (buffer, output list of (tick_time, kind, frame_number or None),
    send_time per frame, lost frame numbers).
    """
    rng = np.random.default_rng(seed)
    jb = jb or JitterBuffer()
    arrivals: list[tuple[float, int, int]] = []
    n_frames = int(seconds / TICK)
    send_time = {}
    lost = set()
    for k in range(n_frames):
        t_send = k * TICK / (1.0 + drift)
        if gap and gap[0] <= t_send < gap[1]:
            continue  # silence suppression: the sender sends nothing
        send_time[k] = t_send
        if rng.random() < loss:
            lost.add(k)
            continue
        copies = 2 if rng.random() < duplicate else 1
        for c in range(copies):
            delay = base_delay + (rng.exponential(jitter_s) if jitter_s else 0.0)
            heapq.heappush(arrivals, (t_send + delay, c, k))
    out = []
    now = 0.005
    end = seconds + 1.0
    while now < end:
        while arrivals and arrivals[0][0] <= now:
            t, _, k = heapq.heappop(arrivals)
            marker = bool(gap) and k > 0 and (k - 1) not in send_time
            jb.put(k & 0xFFFF, (ts0 + k * FRAME) & 0xFFFFFFFF, frame_of(k), t, marker=marker)
        frame, kind = jb.get(now)
        assert frame.shape == (FRAME,) and frame.dtype == np.int16
        number = int(frame[0]) - 1000 if kind is FrameKind.PLAYED else None
        if kind is FrameKind.PLAYED:
            assert np.all(frame == frame[0])
        out.append((now, kind, number))
        now += TICK
    return jb, out, send_time, lost


def played(out):
    return [(t, n) for t, kind, n in out if kind is FrameKind.PLAYED]


def check_in_order(out):
    numbers = [n for _, n in played(out)]
    assert all(b > a for a, b in zip(numbers, numbers[1:])), "output went backwards"


def latencies(out, send_time):
    return np.array([t - send_time[n] for t, n in played(out)])


def test_clean_network_plays_every_frame_in_order_with_low_latency():
    jb, out, send_time, _ = simulate(seconds=10)
    numbers = [n for _, n in played(out)]
    assert numbers == list(range(len(send_time)))
    assert jb.stats.late == 0
    last_played = max(i for i, (_, kind, _) in enumerate(out) if kind is FrameKind.PLAYED)
    assert all(kind is not FrameKind.CONCEALED for _, kind, _ in out[:last_played])
    lat = latencies(out, send_time)
    assert lat.max() < 0.03 + 0.04 + TICK + 1e-9  # base delay + initial depth + one tick


def test_loss_is_concealed_then_silenced():
    jb, out, send_time, lost = simulate(seconds=20, loss=0.05, seed=2)
    check_in_order(out)
    played_numbers = {n for _, n in played(out)}
    assert played_numbers.isdisjoint(lost)
    assert jb.stats.concealed + jb.stats.silence >= len(lost) - jb.stats.dropped_for_depth
    # Every output tick after the start has a frame (continuity).
    kinds = [k for _, k, _ in out]
    first = kinds.index(FrameKind.PLAYED)
    assert all(k in (FrameKind.PLAYED, FrameKind.CONCEALED, FrameKind.SILENCE) for k in kinds[first:])


def test_concealment_fades_the_last_frame():
    jb = JitterBuffer(initial_depth_ms=0, min_depth_ms=0)
    jb.put(0, 0, np.full(FRAME, 10000, np.int16), 0.0)
    frame, kind = jb.get(0.0)
    assert kind is FrameKind.PLAYED
    levels = []
    for i in range(6):
        frame, kind = jb.get(0.02 * (i + 1))
        levels.append((kind, int(frame[-1])))
    assert [k for k, _ in levels[:4]] == [FrameKind.CONCEALED] * 4
    assert [v for _, v in levels[:4]] == [9000, 6000, 3500, 1500]
    assert levels[4] == (FrameKind.SILENCE, 0)


@pytest.mark.parametrize("seed", [3, 4])
def test_heavy_jitter_reordering_adapts_depth_and_bounds_latency(seed):
    # Exponential delay with a 30 ms mean: many packets overtake each other.
    jb, out, send_time, _ = simulate(seconds=30, jitter_s=0.03, seed=seed)
    check_in_order(out)
    assert jb.jitter > 0
    assert jb.stats.resyncs == 0  # late stragglers never look like a moved stream
    assert jb.target_depth > jb.min_depth  # adapted above the minimum
    lat = latencies(out, send_time)
    assert lat.max() < 0.03 + 0.3 + 0.04  # never beyond base + max depth (+ slack)
    # After settling and before the stream ends, almost everything plays
    # (late losses plus inserted frames under 3 %).
    assert jb.stats.played > 0.98 * jb.stats.received
    late_half = [k for t, k, _ in out if 10 < t < 29]
    concealed = sum(k is not FrameKind.PLAYED for k in late_half) / len(late_half)
    assert concealed < 0.03


def test_duplicates_dropped():
    jb, out, send_time, _ = simulate(seconds=10, duplicate=0.2, jitter_s=0.005, seed=5)
    check_in_order(out)
    numbers = [n for _, n in played(out)]
    assert len(numbers) == len(set(numbers))
    assert jb.stats.duplicate > 50


@pytest.mark.parametrize("drift", [0.01, -0.01, 0.015])
def test_sender_clock_drift_keeps_latency_bounded(drift):
    # 60 s at 1 % drift is 600 ms of accumulated skew: without dropping or
    # inserting frames the latency would grow or the buffer run dry.
    jb, out, send_time, _ = simulate(seconds=60, drift=drift, jitter_s=0.002, seed=6)
    check_in_order(out)
    lat = latencies(out, send_time)
    tail = lat[len(lat) // 2 :]
    assert tail.max() < 0.03 + 0.12, f"latency grew to {tail.max():.3f}s"
    if drift > 0:
        assert jb.stats.dropped_for_depth >= 0.8 * 60 * drift / TICK / 2
    else:
        assert jb.stats.inserted_for_depth + jb.stats.concealed >= 0.8 * 60 * -drift / TICK / 2
    # Gaps from insertions stay rare: over 95 % of the ticks play real audio.
    kinds = [k for t, k, _ in out if 2 < t < 60]
    assert sum(k is FrameKind.PLAYED for k in kinds) / len(kinds) > 0.95


def test_timestamp_and_sequence_wrap():
    ts0 = 2**32 - 200 * FRAME  # wraps after 4 s
    jb, out, send_time, _ = simulate(seconds=10, ts0=ts0, jitter_s=0.004, seed=7)
    check_in_order(out)
    numbers = [n for _, n in played(out)]
    assert 190 in numbers and 210 in numbers and len(numbers) > 480
    assert jb.stats.resyncs == 0


def test_silence_suppression_gap_keeps_alignment():
    # RFC 3551 §4.1: timestamps keep running through silence, so the playout
    # point (which advanced through the gap) is still aligned: no resync.
    jb, out, send_time, _ = simulate(seconds=10, gap=(3.0, 5.0), seed=8)
    check_in_order(out)
    numbers = [n for _, n in played(out)]
    assert numbers[-1] == max(send_time)
    after = [t - send_time[n] for t, n in played(out) if n * TICK > 5.5]
    assert max(after) < 0.03 + 0.04 + TICK + 1e-9  # latency back to normal
    assert jb.stats.resyncs == 0


def test_stream_restart_with_a_new_timestamp_base_resyncs():
    jb = JitterBuffer()
    t = 0.0
    for k in range(100):
        jb.put(k, 5000 + k * FRAME, frame_of(k), t)
        jb.get(t + 0.045)
        t += TICK
    for k in range(100):  # a re-INVITE moved the stream: random new base
        jb.put(40000 + k, 3_000_000_000 + k * FRAME, frame_of(500 + k), t)
        jb.get(t + 0.045)
        t += TICK
    assert jb.stats.resyncs == 1
    assert jb.stats.played > 180


def test_multi_frame_packets_are_split():
    jb = JitterBuffer(initial_depth_ms=0, min_depth_ms=0)
    jb.put(1, 0, np.concatenate([frame_of(0), frame_of(1), frame_of(2)]), 0.0)
    got = [int(jb.get(0.02 * i)[0][0]) - 1000 for i in range(3)]
    assert got == [0, 1, 2]


def test_bad_payload_counted_not_raised():
    jb = JitterBuffer()
    jb.put(1, 0, np.zeros(100, np.int16), 0.0)
    jb.put(2, 0, np.zeros(160, np.float32), 0.0)
    assert jb.stats.malformed == 2 and jb.stats.received == 0


def test_bad_configuration_is_local_error():
    with pytest.raises(LocalMediaError, match="does not fit"):
        JitterBuffer(max_depth_ms=2000, capacity_frames=16)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.sampled_from([0, 80, 160, 320, 480]),
                          st.floats(0, 0.05), st.booleans(), st.booleans()), max_size=80))
def test_arbitrary_packet_streams_never_break_the_output(events):
    jb = JitterBuffer()
    now = 0.0
    for seq, ts, size, dt, marker, do_get in events:
        now += dt
        jb.put(seq, ts, np.full(size, 7, np.int16), now, marker=marker)
        if do_get:
            frame, kind = jb.get(now)
            assert frame.shape == (160,) and frame.dtype == np.int16 and isinstance(kind, FrameKind)
    s = jb.stats
    assert s.played + s.concealed + s.silence + s.inserted_for_depth >= 0
    assert s.received + s.malformed == len(events)


@pytest.mark.parametrize("marker", [True, False])
def test_sender_whose_timestamps_stop_during_silence(marker):
    """The sender pauses 1 s but its timestamps do not advance: every packet
    after the pause is 1 s "late".  The buffer must re-synchronise (at once on
    the marker bit, after a short run of late packets without it) instead of
    dropping the rest of the call."""
    jb = JitterBuffer()
    out = []
    now = 0.0
    for k in range(300):
        t_send = k * TICK + (1.0 if k >= 100 else 0.0)
        while now + TICK <= t_send + 0.03:
            frame, kind = jb.get(now)
            out.append((now, kind, int(frame[0]) - 1000 if kind is FrameKind.PLAYED else None))
            now += TICK
        jb.put(k, 5000 + k * FRAME, frame_of(k), t_send + 0.03, marker=marker and k == 100)
    for _ in range(10):
        frame, kind = jb.get(now)
        out.append((now, kind, int(frame[0]) - 1000 if kind is FrameKind.PLAYED else None))
        now += TICK
    numbers = [n for _, n in played(out)]
    assert jb.stats.resyncs == 1
    after = [n for n in numbers if n >= 100]
    assert len(after) >= 190  # at most a few frames of the new talkspurt lost
    check_in_order(out)
