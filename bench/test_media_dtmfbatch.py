"""Classifying one tick's received packets for 500 legs: audio only vs DTMF-heavy.

What the media tick does with the rows ``recvmmsg`` filled (``MediaEngine._classify``:
header read, playout-ring insert, RFC 3550 counters, RFC 4733 receivers),
without the sockets, so only the per-packet work is timed.  Same run:

* ``audio``: 500 rows, one 20 ms PCMU packet per leg (the baseline: the
  batched audio path);
* ``dtmf-batched``: the same 500 audio rows plus one RFC 4733 event update
  per leg (1,000 rows: every caller holding a key), events on the batch path;
* ``dtmf-slow``: the same 1,000 rows with events on the per-packet slow path
  (``_batch_events = False``, the code before the batch path).

Run: ``.venv/bin/python -m pytest -q -p no:cacheprovider bench/test_media_dtmfbatch.py --benchmark-json=bench/results/media_dtmfbatch.json``.
"""
from __future__ import annotations

import numpy as np
import pytest

from media.dtmf import build_event
from media.engine import MediaConfig, MediaEngine
from media.rtp import RtpPacket

LEGS = 500


@pytest.fixture(scope="module")
def engine():
    e = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0))
    for i in range(LEGS):
        e.create_leg(f"leg-{i}", call_id=f"call-{i}", remote=("127.0.0.1", 9))
    e._compile()
    yield e
    e.close()


def _rows(engine: MediaEngine, events: bool) -> int:
    """Fill the engine's receive buffers as ``recvmmsg`` would; return the row count."""
    buf = engine._recv
    owners = np.arange(LEGS)  # row i belongs to _rx_slots[i]
    n = 0
    for k in range(2 if events else 1):
        for i in owners:
            slot = int(engine._rx_slots[i])
            ssrc = 0x10000 + slot
            if k == 0:
                data = bytes(RtpPacket(0, 100, 16000, ssrc, b"\xff" * 160))
            else:
                data = bytes(RtpPacket(101, 101, 15840, ssrc, build_event("5", 320)))
            buf.data[n, : len(data)] = np.frombuffer(data, np.uint8)
            buf.lengths[n] = len(data)
            buf.owners[n] = i
            n += 1
    engine._rx_ssrc[engine._rx_slots] = 0x10000 + engine._rx_slots
    return n


@pytest.mark.parametrize("case", ["audio", "dtmf-batched", "dtmf-slow"])
def test_classify_500_legs(benchmark, engine, case) -> None:
    n = _rows(engine, case != "audio")
    engine._batch_events = case != "dtmf-slow"
    now = [1000.0]

    def classify() -> None:
        now[0] += 0.02
        engine._classify(n, now[0])

    benchmark.group = "classify-500-legs"
    benchmark.extra_info["rows"] = n
    benchmark.pedantic(classify, rounds=5 if case == "dtmf-slow" else 30, iterations=1, warmup_rounds=1)
    engine._batch_events = True
    engine.events.clear()
