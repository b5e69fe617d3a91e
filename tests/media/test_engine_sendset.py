"""The set of legs that send changes without a room change (hold by direction,
a leg's remote address arriving late): the output map indexes sending
positions, so it must follow.  A merge once kept a stale map: every tick
raised IndexError and the callee of a campaign call heard nothing."""
from __future__ import annotations

import pytest

from mediart_peers import RtpPeer, heard
from media.engine import MediaConfig, MediaEngine

pytestmark = pytest.mark.twin

TONES = {"a": 600.0, "b": 1000.0, "c": 1500.0}


def test_direction_change_keeps_every_other_leg_hearing_the_room() -> None:
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0))
    peers = {name: RtpPeer(name, f) for name, f in TONES.items()}
    try:
        engine.create_room("conf")
        # a ringing leg in no room yet (a campaign's callee before the bridge), in the first slot
        spare = RtpPeer("spare", 2000.0)
        peers_spare = engine.create_leg("spare", call_id="call-2", remote=spare.address)
        spare.target = ("127.0.0.1", peers_spare.local_port)
        for name, peer in peers.items():
            leg = engine.create_leg(name, call_id="call-1", remote=peer.address)
            peer.target = ("127.0.0.1", leg.local_port)
            engine.join("conf", name)
        k = 0

        def run(ticks: int) -> None:
            nonlocal k
            for _ in range(ticks):
                for p in peers.values():
                    p.send()
                engine.run_tick(k, 100.0 + 0.02 * k)   # raises if the output map is stale
                k += 1
                for p in peers.values():
                    p.drain()

        run(30)
        # the ringing leg goes away without any room changing: the others' sending positions shift
        engine.destroy_leg("spare")
        spare.close()
        for p in peers.values():
            p.received.clear()
        run(40)
        assert heard(peers["b"].audio(), TONES) == {"a", "c"}
        # "a" is put on hold with recvonly (it still sends, we stop sending to it);
        # positions of "b" and "c" among the sending legs shift
        engine.update_leg("a", direction="recvonly")
        for p in peers.values():
            p.received.clear()
        run(40)
        assert peers["a"].received == [] or len(peers["a"].received) <= 2
        assert heard(peers["b"].audio(), TONES) == {"a", "c"}
        assert heard(peers["c"].audio(), TONES) == {"a", "b"}
        # resumed: "a" hears the others again
        engine.update_leg("a", direction="sendrecv")
        for p in peers.values():
            p.received.clear()
        run(40)
        assert heard(peers["a"].audio(), TONES) == {"b", "c"}
        assert heard(peers["b"].audio(), TONES) == {"a", "c"}
    finally:
        engine.close()
        for p in peers.values():
            p.close()
