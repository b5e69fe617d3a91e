"""The media tick with 500 callers each hearing an IVR prompt: per-player vs the batched prompt table.

One whole ``MediaEngine.run_tick`` for 500 legs (receive on empty sockets,
playout, sources, mix, record, G.711 encode, RTP headers) with the kernel
send replaced by a no-op (``_transmit``), so only the engine's own CPU work
is timed, not loopback delivery.  Same run:

* ``no-prompts``: 500 legs, no player (the baseline: what every tick costs);
* ``per-player``: 500 prompt players read one by one (``ArraySource.read()``
  per leg and tick, one row add per player into the leg's output: the code
  before :mod:`media.prompttable`, ``_batch_prompts = False``);
* ``batched``: the same 500 players read from the prompt table in one
  gather and added in one scatter-add.

The players play three shared prompts (the engine's prompt cache gives every
caller of a menu the same array) long enough never to end during the rounds.

Run: ``.venv/bin/python -m pytest -q -p no:cacheprovider bench/test_ivr_prompts.py --benchmark-json=bench/results/ivr_prompts.json``.
"""
from __future__ import annotations

import numpy as np
import pytest

from media.engine import MediaConfig, MediaEngine
from media.player import ArraySource

LEGS = 500
PROMPTS = [np.random.default_rng(i).integers(-8000, 8000, 8000 * 600).astype(np.int16) for i in range(3)]


class NoSendEngine(MediaEngine):
    def _transmit(self, fds, pkt, lengths, ips, ports) -> int:  # type: ignore[no-untyped-def]
        return len(fds)


@pytest.mark.parametrize("case", ["no-prompts", "per-player", "batched"])
def test_tick_500_callers_in_menus(benchmark, case: str) -> None:
    e = NoSendEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0))
    try:
        e._batch_prompts = case == "batched"
        for i in range(LEGS):
            e.create_leg(f"leg-{i}", call_id=f"call-{i}", remote=("127.0.0.1", 9))
            if case != "no-prompts":
                e.play(ArraySource(PROMPTS[i % 3]), leg_id=f"leg-{i}")
        tick = {"k": 0}

        def one() -> None:
            k = tick["k"]
            e.run_tick(k, 1000.0 + 0.02 * k)
            tick["k"] = k + 1

        one()  # compile
        benchmark.pedantic(one, rounds=200, iterations=1, warmup_rounds=5)
        if case == "batched":
            assert len(e._table_players) == LEGS
        elif case == "per-player":
            assert len(e._loose_players) == LEGS
    finally:
        e.close()
