"""The media clock stays on its absolute grid: simulated and real time."""
from __future__ import annotations

import asyncio
import random

import pytest

from media.clock import MediaClock, TickStats
from media.errors import LocalMediaError


def test_simulated_no_drift_over_a_day_of_ticks() -> None:
    # 4.32 million ticks is a day; simulate 200,000 with jittery wake-ups
    clock = MediaClock(origin_s=1000.0)
    rng = random.Random(5)
    ran: list[int] = []
    now = 1000.0
    while clock.tick < 200_000:
        now = clock.deadline() + rng.uniform(0.0, 0.004)  # wake up 0-4 ms late
        ran.extend(clock.due(now))
    assert ran == list(range(200_000))
    # timestamp of tick k is exactly k*160 and its deadline exactly origin + k*20 ms
    assert clock.timestamp(199_999) == 199_999 * 160
    assert clock.deadline(200_000) == pytest.approx(1000.0 + 4000.0, abs=1e-6)
    assert clock.late_ticks == 0 and clock.skipped_ticks == 0


def test_late_tick_is_compensated_not_accumulated() -> None:
    clock = MediaClock(origin_s=0.0)
    assert clock.due(0.0) == [0]
    assert clock.due(0.019) == []
    # tick 1 runs 15 ms late: the next deadline stays on the grid (40 ms), not 35+20
    assert clock.due(0.035) == [1]
    assert clock.deadline() == pytest.approx(0.040)
    assert clock.delay(0.035) == pytest.approx(0.005)
    # a 70 ms stall: ticks 2..5 are owed and run back to back
    assert clock.due(0.105) == [2, 3, 4, 5]
    assert clock.late_ticks == 1
    assert clock.deadline() == pytest.approx(0.120)


def test_long_stall_skips_beyond_catchup() -> None:
    clock = MediaClock(origin_s=0.0, max_catchup_ticks=3)
    clock.due(0.0)
    ticks = clock.due(1.0)  # 50 ticks owed
    assert ticks == [48, 49, 50] and clock.skipped_ticks == 47
    assert clock.deadline() == pytest.approx(1.02)
    assert clock.timestamp() == 51 * 160


def test_bad_config() -> None:
    with pytest.raises(LocalMediaError, match="ptime_s > 0"):
        MediaClock(0.0, ptime_s=0)


def test_real_clock_on_asyncio_does_not_drift() -> None:
    """150 real ticks (3 s) driven by loop.call_at: late wake-ups never accumulate."""

    async def run() -> tuple[list[float], MediaClock]:
        loop = asyncio.get_running_loop()
        clock = MediaClock(origin_s=loop.time())
        starts: list[float] = []
        done = loop.create_future()

        def on_timer() -> None:
            now = loop.time()
            for k in clock.due(now):
                starts.append(now - clock.deadline(k))
            if clock.tick >= 150:
                done.set_result(None)
                return
            if len(starts) % 5 == 0:
                sum(range(150_000))  # a busy tick (a few ms), so some wake-ups are late
            loop.call_at(clock.deadline(), on_timer)

        loop.call_at(clock.deadline(), on_timer)
        await asyncio.wait_for(done, 10)
        return starts, clock

    lateness, clock = asyncio.run(run())
    assert len(lateness) == 150
    # lateness is bounded by scheduling noise, and the last ticks are no later
    # than the first ones: no accumulation (a naive sleep(0.02) loop drifts by
    # the busy time of every busy tick: 30 of them, about 100 ms here)
    assert max(lateness) < 0.5
    late_tail = sorted(lateness[-50:])[25]
    late_head = sorted(lateness[:50])[25]
    assert late_tail < late_head + 0.03
    assert clock.timestamp() == 150 * 160


def test_tick_stats_percentiles() -> None:
    s = TickStats(size=100)
    for i in range(250):
        s.add(i / 1000, 0.0)
    # only the last 100 (150..249 ms) are kept
    assert s.max_ms() == pytest.approx(249)
    assert 245 <= s.percentile_ms(99) <= 249
    s.reset()
    assert s.percentile_ms(99) == 0.0
