"""Foundation micro benchmarks, each beside a baseline from the same run.

* Event fan-out framing: one event to 500 subscribers with the frame packed
  once around ``seq`` (``engine.bus.event_frame_parts``, what the control
  server does) against packing the whole map per subscriber (the obvious
  way), for a small (~100 B) and a large (8 KiB) payload.
* Store writes: 2,000 rows through the batched writer thread
  (``SqliteStore.append`` + ``flush``) against one autocommitted INSERT per
  row on the caller's thread (what an unbatched store would do).
"""
from __future__ import annotations

import pathlib
import sqlite3

import msgpack
import pytest

from engine.bus import event_frame_parts
from engine.store import SqliteStore

SUBSCRIBERS = 500
ROWS = 2000
DATA = {"agent": "1001", "state": "ready", "previous_state": "wrapup", "reason_code": "",
        "groups": ["sales", "support"], "time_in_state_s": 12.5}


BIG = {"blob": "y" * 8192}
packb = msgpack.packb


def fanout_prepacked(data: dict) -> int:
    head, tail = event_frame_parts("agent.state", 1795430600.0, data)
    return sum(len(head + packb(seq) + tail) for seq in range(1, SUBSCRIBERS + 1))


def fanout_full_packb(data: dict) -> int:
    return sum(len(packb({"event": "agent.state", "seq": seq, "ts": 1795430600.0, "data": data},
                         use_bin_type=True)) for seq in range(1, SUBSCRIBERS + 1))


@pytest.mark.parametrize("seq", [1, 127, 128, 70000, 2**40])
def test_fanout_frames_equal(seq: int) -> None:
    head, tail = event_frame_parts("agent.state", 1.5, DATA)
    assert head + packb(seq) + tail == packb({"event": "agent.state", "seq": seq, "ts": 1.5, "data": DATA},
                                             use_bin_type=True)


@pytest.mark.benchmark(group="foundation-fanout-small")
def test_bench_fanout_small_prepacked(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(fanout_prepacked, DATA)


@pytest.mark.benchmark(group="foundation-fanout-small")
def test_bench_fanout_small_baseline_full_packb(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(fanout_full_packb, DATA)


@pytest.mark.benchmark(group="foundation-fanout-8k")
def test_bench_fanout_8k_prepacked(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(fanout_prepacked, BIG)


@pytest.mark.benchmark(group="foundation-fanout-8k")
def test_bench_fanout_8k_baseline_full_packb(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(fanout_full_packb, BIG)


def _row(i: int) -> dict:
    return {"ts": 1795430600.0 + i, "call_id": f"c{i}", "queue": "sales", "event": "joined", "position": i % 10}


@pytest.mark.benchmark(group="foundation-store")
def test_bench_store_batched(benchmark, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    store = SqliteStore(str(tmp_path / "batched.db"), batch_max_rows=500, batch_interval_ms=50)

    def write() -> None:
        for i in range(ROWS):
            store.append("queue_log", _row(i))
        store.flush(60)

    try:
        benchmark.pedantic(write, rounds=5, iterations=1)
    finally:
        store.close()


@pytest.mark.benchmark(group="foundation-store")
def test_bench_store_baseline_autocommit(benchmark, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    SqliteStore(str(tmp_path / "auto.db")).close()  # same schema, WAL
    conn = sqlite3.connect(tmp_path / "auto.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")

    def write() -> None:
        for i in range(ROWS):
            r = _row(i)
            conn.execute(f"INSERT INTO queue_log ({', '.join(r)}) VALUES ({', '.join('?' * len(r))})",
                         tuple(r.values()))

    try:
        benchmark.pedantic(write, rounds=5, iterations=1)
    finally:
        conn.close()
