"""MediaWorker: the media engine in its own process, driven over a pipe, with
real RTP on loopback between test-side phones and the child's legs."""
from __future__ import annotations

import asyncio
import datetime
import os

import numpy as np
import pytest
import soundfile

from mediart_peers import AMPLITUDE, RtpPeer, heard
from media.engine import MediaConfig
from media.errors import LocalMediaError
from media.events import PlaybackFinished
from media.player import ArraySource
from media.worker import MediaWorker

TONES = {"caller": 450.0, "agent": 850.0, "prompt": 1250.0}


def test_worker_bridges_records_and_forwards_events(tmp_path) -> None:
    async def main() -> None:
        events: list = []
        worker = MediaWorker(MediaConfig(port_range=None, rtcp_interval_s=0), on_event=events.append)
        await worker.start()
        peers = {n: RtpPeer(n, TONES[n]) for n in ("caller", "agent")}
        try:
            assert worker.pid != os.getpid()
            for n, p in peers.items():
                info = await worker.call("create_leg", n, call_id="w-1", remote=p.address)
                p.target = ("127.0.0.1", info["local_port"])
            await worker.call("create_room", "call")
            await worker.call("join", "call", "caller")
            await worker.call("join", "call", "agent")
            await worker.call("apply_hear_set", "call", "two_party", caller="caller", agent="agent")
            await worker.call("start_recording", "call", "rec", "w-1",
                              datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc),
                              [["caller"], ["agent"]], str(tmp_path))
            t = np.arange(4000)
            prompt = np.round(AMPLITUDE * np.sin(2 * np.pi * TONES["prompt"] * t / 8000)).astype(np.int16)
            pid = await worker.call("play", ArraySource(prompt), leg_id="agent")
            with pytest.raises(LocalMediaError, match="no leg ghost"):
                await worker.call("destroy_leg", "ghost")
            with pytest.raises(LocalMediaError, match="not allowed"):
                await worker.call("close")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for k in range(80):
                await asyncio.sleep(max(0.0, t0 + 0.02 * k - loop.time()))
                for p in peers.values():
                    p.send()
                    p.drain()
            await asyncio.sleep(0.1)
            for p in peers.values():
                p.drain()
            result = await worker.call("stop_recording", "call", "rec")
            stats = await worker.call("destroy_leg", "caller")
            figures = await worker.call("tick_figures")
        finally:
            await worker.stop()
            for p in peers.values():
                p.close()
        assert heard(peers["caller"].audio(), TONES) == {"agent"}
        assert heard(peers["agent"].audio(skip_frames=30), TONES) == {"caller"}  # after the 0.5 s prompt
        assert heard(peers["agent"].audio(skip_frames=0)[:4000], TONES) == {"caller", "prompt"}
        assert PlaybackFinished(pid, "agent", None, "completed") in events
        assert stats.packets_received >= 60 and stats.packets_lost == 0
        assert figures["ticks"] >= 60 and figures["pid"] == worker.pid
        audio, rate = soundfile.read(result.path, dtype="int16")
        assert result.path.parent == tmp_path / "2026" / "11" / "23"
        assert heard(audio[1600:, 0], TONES) == {"caller"}
        assert heard(audio[1600:, 1], TONES) == {"agent"}

    asyncio.run(main())
