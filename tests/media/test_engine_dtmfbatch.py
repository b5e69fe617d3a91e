"""MediaEngine: RFC 4733 events and other non-audio packets on the batch path.

Every scenario is played over real loopback RTP into two engines, one with
the batched event path (the default) and one with every non-audio packet on
the per-packet slow path (the reference, ``_batch_events = False``); the
digits, their order per leg, the receiver counters and the RFC 3550 figures
must be identical, and the digits must be the ones RFC 4733 says.
"""
from __future__ import annotations

import random

import pytest

from mediart_peers import RtpPeer
from media.dtmf import build_event, rfc4733_packets
from media.engine import MediaConfig, MediaEngine
from media.events import DtmfReceived
from media.rtp import RtcpReceiverReport

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins

T0 = 1000.0

# One tick of a script: leg name -> packets (built by the peer) it sends
# before the tick; a leg not named sends one audio packet.
Script = list[dict[str, list]]


def _run(script: Script, names: tuple[str, ...], batched: bool, seed: int = 7) -> dict:
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0))
    engine._batch_events = batched
    slow_calls = 0
    slow = engine._slow_packet

    def counting(*args):
        nonlocal slow_calls
        slow_calls += 1
        return slow(*args)

    engine._slow_packet = counting  # type: ignore[method-assign]
    rng = random.Random(seed)
    peers: dict[str, RtpPeer] = {}
    try:
        for name in names:
            p = peers[name] = RtpPeer(name, 700.0)
            p.ssrc, p.seq, p.ts = rng.getrandbits(32), 65530, rng.getrandbits(32)  # the sequence wraps
            leg = engine.create_leg(name, call_id=f"call-{name}", remote=p.address)
            p.target = ("127.0.0.1", leg.local_port)
        for k, step in enumerate(script):
            for name, p in peers.items():
                for item in step.get(name, [None]):
                    p.send(item(p) if callable(item) else item)
            engine.run_tick(k, T0 + 0.02 * k)
            for p in peers.values():
                p.drain()
        digits = []
        while (ev := engine.next_event()) is not None:
            if isinstance(ev, DtmfReceived):
                digits.append((ev.leg_id, ev.digit, round(ev.duration_ms, 3)))
        legs = {}
        for name in names:
            rx = engine.legs[name].dtmf_receiver
            legs[name] = (engine.leg_statistics(name), rx.duplicates_dropped, rx.malformed_dropped)
        return {"digits": digits, "legs": legs, "slow_calls": slow_calls}
    finally:
        engine.close()
        for p in peers.values():
            p.close()


def _both(script: Script, names: tuple[str, ...] = ("a",)) -> tuple[dict, dict]:
    batched = _run(script, names, True)
    reference = _run(script, names, False)
    assert batched["digits"] == reference["digits"]
    assert batched["legs"] == reference["legs"]
    return batched, reference


def ev(payload: bytes, start: dict, marker: bool = False, ssrc: int | None = None):
    """A telephone-event packet; all packets sharing ``start`` carry the RTP timestamp of
    the first of them sent (RFC 4733 §2.5.1.2), even when audio goes out in between."""

    def build(p: RtpPeer) -> bytes:
        keep = p.ssrc
        if ssrc is not None:
            p.ssrc = ssrc
        ts = start.setdefault("ts", p.ts)
        data = p.packet(payload, payload_type=101, marker=marker, timestamp=ts)
        p.ssrc = keep
        return data

    return build


def _digit_packets(digit: str, duration_ms: float) -> list:
    start: dict = {}
    return [ev(payload, start, marker) for payload, marker in rfc4733_packets(digit, duration_ms)]


def test_one_digit_with_its_three_end_packets() -> None:
    script: Script = [{}] * 5 + [{"a": [pk]} for pk in _digit_packets("5", 100)] + [{}] * 3
    batched, reference = _both(script)
    assert batched["digits"] == [("a", "5", 100.0)]
    # nothing on the slow path: the stream's first packet (a new SSRC) is adopted in the batch too
    assert batched["slow_calls"] == 0
    assert reference["slow_calls"] == 8  # the start, 4 updates, 3 end packets
    stats = batched["legs"]["a"][0]
    assert stats.packets_received == stats.packets_expected == len(script)
    assert batched["legs"]["a"][1] == 2  # the 2 redundant end packets


def test_reordered_and_duplicated_end_packets_in_one_batch() -> None:
    st: dict = {}
    end = ev(build_event("9", 960, end=True), st)
    script: Script = [{}] * 3 + [
        {"a": [ev(build_event("9", 0), st, marker=True)]},
        {"a": [ev(build_event("9", 160), st), ev(build_event("9", 320), st), None]},
        # an end packet overtakes the last update; the end is then repeated and an older update comes late
        {"a": [end, ev(build_event("9", 480), st), end, ev(build_event("9", 640), st), end, end]},
        {"a": [end]},
        {},
        {},
    ]
    batched, _ = _both(script)
    assert batched["digits"] == [("a", "9", 120.0)]  # once, with the end packet's final duration
    assert batched["slow_calls"] == 0
    assert batched["legs"]["a"][1] == 6  # every later end copy and late update dropped


def test_two_legs_in_one_batch() -> None:
    a = _digit_packets("1", 80)
    b = _digit_packets("#", 120)
    script: Script = [{}] * 2
    for i in range(max(len(a), len(b))):
        step = {}
        if i < len(a):
            step["a"] = [a[i]]
        if i < len(b):
            step["b"] = [b[i], None]  # b also sends an audio packet in the same tick
        script.append(step)
    # then both legs send a whole digit in one tick each (a burst after a network stall)
    script.append({"a": _digit_packets("2", 60), "b": _digit_packets("3", 60)})
    script += [{}] * 2
    batched, _ = _both(script, ("a", "b"))
    assert sorted(batched["digits"]) == [("a", "1", 80.0), ("a", "2", 60.0), ("b", "#", 120.0), ("b", "3", 60.0)]
    assert [d for d in batched["digits"] if d[0] == "a"] == [("a", "1", 80.0), ("a", "2", 60.0)]
    assert batched["slow_calls"] == 0


def test_lost_end_packets_reported_by_the_timer() -> None:
    pk = _digit_packets("7", 100)[:-3]  # no end packet arrives
    script: Script = [{}] * 2 + [{"a": [p]} for p in pk] + [{}] * 30
    batched, _ = _both(script)
    assert batched["digits"] == [("a", "7", 80.0)]


def test_comfort_noise_unknown_payloads_and_slow_packets_mixed_with_events() -> None:
    cn = lambda p: p.packet(b"\x40", payload_type=13)  # noqa: E731  RFC 3389 comfort noise
    odd = lambda p: p.packet(b"\x00" * 80, payload_type=0)  # noqa: E731  audio PT, not 160 octets
    unknown = lambda p: p.packet(b"\x00" * 10, payload_type=99)  # noqa: E731
    rtcp = bytes(RtcpReceiverReport(1234, ()))
    short = ev(b"\x05\x00", {})  # a telephone-event payload shorter than 4 octets
    stray = ev(build_event("4", 0), {}, marker=True, ssrc=0x11111111)  # another source's event
    d6 = _digit_packets("6", 100)
    script: Script = [{}] * 3 + [
        {"a": [d6[0], cn], "b": [cn, None]},
        {"a": [d6[1], odd], "b": [unknown, None]},
        {"a": [d6[2], rtcp], "b": [short, None]},  # a's event goes to the slow path with the RTCP
        {"a": [d6[3]], "b": [stray, None]},
        {"a": d6[4:]},
        {},
    ]
    batched, reference = _both(script, ("a", "b"))
    assert batched["digits"] == [("a", "6", 100.0)]
    assert batched["legs"]["a"][0].malformed_packets == 1  # the odd-sized audio packet
    assert batched["legs"]["b"][0].malformed_packets == 1  # the unknown payload type
    assert batched["legs"]["b"][2] == 1  # the short event payload
    # a's RTCP tick (event + RTCP), b's short event and the stray source
    assert batched["slow_calls"] == 4
    assert reference["slow_calls"] == 11 + 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_event_streams_match_the_reference(seed: int) -> None:
    """Digits of random lengths, packets duplicated, dropped, reordered and bunched, two legs."""
    rng = random.Random(seed)
    script: Script = [{} for _ in range(160)]
    for name in ("a", "b"):
        k = 2
        while k < 130:
            digit = rng.choice("0123456789*#ABCD")
            packets = _digit_packets(digit, rng.choice([40, 60, 100, 200]))
            if rng.random() < 0.5:
                packets += [packets[-1]] * rng.randint(0, 3)
            for pk in packets:
                r = rng.random()
                if r < 0.1:
                    continue  # lost
                if r < 0.2 and script[k].get(name):
                    script[k][name].insert(0, pk)  # overtakes the previous packet
                else:
                    script[k].setdefault(name, []).append(pk)
                if rng.random() < 0.8:
                    k += 1
            k += rng.randint(1, 15)
    for step in script:
        for name in step:
            if rng.random() < 0.5:
                step[name].append(None)  # and its audio
    batched, _ = _both(script, ("a", "b"))
    assert len(batched["digits"]) >= 6
    assert batched["slow_calls"] == 0


def test_receive_event_fields_match_receive_payload() -> None:
    """``receive_event`` (fields, the batch path) and ``receive`` (payload bytes) are one state machine."""
    from media.dtmf import Rfc4733Receiver

    rng = random.Random(11)
    by_payload, by_fields = Rfc4733Receiver(), Rfc4733Receiver()
    now = 0.0
    for _ in range(3000):
        event = rng.choice([1, 1, 5, 11, 20])  # 20: a non-DTMF event
        end = rng.random() < 0.3
        duration = rng.choice([0, 160, 320, 800, 0xFFFF])
        ts = rng.choice([1000, 1000, 2000, 0xFFFFFFFF])
        marker = rng.random() < 0.1
        ssrc = rng.choice([1, 1, 2])
        now += rng.choice([0.0, 0.02, 0.3])
        payload = bytes([event, 0x80 if end else 0, duration >> 8, duration & 0xFF])
        assert by_payload.receive(payload, ts, marker, ssrc, now) == by_fields.receive_event(
            event, end, duration, ts, marker, ssrc, now)
        assert by_payload.get_timer() == by_fields.get_timer()
    assert by_payload.duplicates_dropped == by_fields.duplicates_dropped > 0
