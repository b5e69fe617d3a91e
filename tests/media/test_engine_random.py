"""Random sequences of MediaEngine operations between real ticks over loopback:
the engine never raises from a tick, refuses illegal calls with
LocalMediaError, keeps rooms consistent with its legs, and after every tick
each room output equals the naive per-room mix (``mix_naive``) of that tick's
played-out frames (white-box: this checks the incremental plan under every
kind of change)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediart_peers import RtpPeer
from media import g711
from media.engine import MediaConfig, MediaEngine
from media.errors import LocalMediaError
from media.mixer import mix_naive
from media.player import ArraySource
from media.room import HearSet, MemberKind

pytestmark = pytest.mark.twin

OPS = ["create_leg", "destroy_leg", "create_room", "destroy_room", "join", "leave", "hear_set",
       "set_hearing", "play_room", "play_leg", "stop_playback", "direction", "dtmf", "tick", "tick"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(OPS), min_size=10, max_size=60), st.integers(0, 2**32 - 1))
def test_random_operations(ops: list[str], seed: int) -> None:
    rng = random.Random(seed)
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0.1, rtp_timeout_s=0.2))
    peers: dict[str, RtpPeer] = {}
    k = 0
    n = 0
    try:
        for op in ops:
            legs = list(engine.legs)
            rooms = list(engine.rooms)
            try:
                if op == "create_leg" or not legs:
                    n += 1
                    name = f"leg{n}"
                    p = RtpPeer(name, rng.choice([300.0, 500.0, 700.0, None]), codec=rng.choice(["PCMU", "PCMA"]))
                    leg = engine.create_leg(name, remote=p.address, codec=p.codec)
                    p.target = ("127.0.0.1", leg.local_port)
                    peers[name] = p
                elif op == "destroy_leg":
                    name = rng.choice(legs)
                    engine.destroy_leg(name)
                    peers.pop(name).close()
                elif op == "create_room" or not rooms:
                    engine.create_room(f"room{len(rooms)}-{rng.random():.6f}")
                elif op == "destroy_room":
                    engine.destroy_room(rng.choice(rooms))
                elif op == "join":
                    engine.join(rng.choice(rooms), rng.choice(legs))
                elif op == "leave":
                    room = engine.rooms[rng.choice(rooms)]
                    if room.members:
                        engine.leave(room.room_id, rng.choice(list(room.members)))
                elif op == "hear_set":
                    room = engine.rooms[rng.choice(rooms)]
                    ids = list(room.members)
                    if len(ids) >= 2:
                        engine.apply_hear_set(room.room_id, rng.choice([HearSet.TWO_PARTY, HearSet.LISTEN]),
                                              caller=ids[0], agent=ids[1], supervisor=ids[-1] if len(ids) > 2 else None)
                elif op == "set_hearing":
                    room = engine.rooms[rng.choice(rooms)]
                    ids = list(room.members)
                    if ids:
                        engine.set_hearing(room.room_id, rng.choice(ids), hears=rng.sample(ids, rng.randint(0, len(ids))))
                elif op == "play_room":
                    engine.play(ArraySource(np.full(rng.randint(1, 2000), 1000, np.int16)), room_id=rng.choice(rooms))
                elif op == "play_leg":
                    engine.play(ArraySource(np.full(rng.randint(1, 2000), -1000, np.int16)), leg_id=rng.choice(legs))
                elif op == "stop_playback" and engine.players:
                    engine.stop_playback(rng.choice(list(engine.players)))
                elif op == "direction":
                    engine.update_leg(rng.choice(legs), direction=rng.choice(["sendrecv", "recvonly", "sendonly", "inactive"]))
                elif op == "dtmf":
                    engine.send_dtmf(rng.choice(legs), "5")
            except LocalMediaError:
                pass  # e.g. joining a leg twice: refused with a clear error, state unchanged
            for p in peers.values():
                if rng.random() < 0.9:
                    p.send()
                if rng.random() < 0.05:
                    p.send(b"\x00garbage")
            engine.run_tick(k, 50.0 + 0.02 * k)  # raises if the tick has a bug
            k += 1
            for p in peers.values():
                p.drain()
            # consistency: every room member is a leg, a player or a recorder that exists
            for room in engine.rooms.values():
                for mid, m in room.members.items():
                    if m.kind is MemberKind.LEG:
                        assert mid in engine.legs
                    elif m.kind is MemberKind.PLAYER:
                        assert mid in engine.players
            frames = {leg.leg_id: engine._inputs[1 + leg.slot] for leg in engine.legs.values() if leg.direction.receives}
            frames.update({pl.player_id: engine._inputs[1 + engine._cap + pl.slot]
                           for pl in engine.players.values() if pl.room_id})
            ref = mix_naive(engine.rooms.values(), frames)
            for row, key in enumerate(engine._mixer.output_keys):
                if key is not None and key[0] in engine.rooms and key[1] in engine.rooms[key[0]].members:
                    np.testing.assert_array_equal(engine._mix_out[row], ref[key], err_msg=str(key))
            while engine.next_event() is not None:
                pass
        # every packet a peer received parses and has a payload of its codec
        for p in peers.values():
            for pkt in p.received:
                assert pkt.payload_type in (0, 8, 101)
                if pkt.payload_type != 101:
                    g711.decode(p.codec, np.frombuffer(pkt.payload, np.uint8))
    finally:
        engine.close()
        for p in peers.values():
            p.close()
