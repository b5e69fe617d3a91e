"""DTMF: RFC 4733 wire format, receiver, sender, and the batched in-band detector."""
from __future__ import annotations

import numpy as np
import pytest

from media.dtmf import (
    DIGITS,
    DetectorConfig,
    DtmfDetector,
    Rfc4733Event,
    Rfc4733Receiver,
    build_event,
    dtmf_tone,
    rfc4733_packets,
)
from media.errors import LocalMediaError, RemoteMediaError

# ---------------------------------------------------------------- RFC 4733


def test_event_parse_and_bytes_round_trip():
    data = bytes.fromhex("018a08c0")  # SIPp dtmf_2833_1.pcap end packet
    ev = Rfc4733Event.parse(data)
    assert (ev.event, ev.end, ev.volume, ev.duration, ev.digit) == (1, True, 10, 0x8C0, "1")
    assert bytes(ev) == data
    assert build_event("#", 320, end=False, volume=7) == bytes([11, 7, 1, 64])
    assert Rfc4733Event.parse(bytes([16, 0, 0, 0])).digit is None


def test_event_parse_short_payload_is_remote_error():
    with pytest.raises(RemoteMediaError, match="RFC 4733 event payload is 3 bytes, needs 4"):
        Rfc4733Event.parse(b"\x01\x02\x03")


def test_packets_for_a_digit():
    pkts = rfc4733_packets("5", duration_ms=100, ptime_ms=20)
    events = [(Rfc4733Event.parse(p), m) for p, m in pkts]
    assert events[0][1] is True and all(m is False for _, m in events[1:])
    assert [e.duration for e, _ in events] == [0, 160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e, _ in events] == [False] * 5 + [True] * 3
    assert {e.event for e, _ in events} == {5}


@pytest.mark.parametrize("bad", [dict(digit="x"), dict(digit="5", duration_ms=0), dict(digit="5", volume=64)])
def test_packets_reject_bad_arguments(bad):
    with pytest.raises(LocalMediaError):
        rfc4733_packets(**bad)


def feed(rx: Rfc4733Receiver, packets, ts: int, ssrc: int = 1, t0: float = 0.0, step: float = 0.02):
    got = []
    for i, (payload, marker) in enumerate(packets):
        got += rx.receive(payload, ts, marker, ssrc, t0 + i * step)
    return got


def test_sender_to_receiver_reports_each_digit_once_with_duration():
    rx = Rfc4733Receiver()
    got = []
    for i, d in enumerate("0123456789*#ABCD"):
        got += feed(rx, rfc4733_packets(d, 120), ts=1000 + i * 4000, t0=i * 0.5)
    assert "".join(g.digit for g in got) == "0123456789*#ABCD"
    assert {g.duration_ms for g in got} == {120.0} and {g.source for g in got} == {"rfc4733"}
    assert rx.duplicates_dropped == 2 * 16  # the 2nd and 3rd end packets


def test_receiver_survives_reordering_and_duplication():
    pkts = rfc4733_packets("7", 200)
    shuffled = [pkts[0], pkts[2], pkts[1], pkts[1], pkts[4], pkts[3]] + pkts[5:] + [pkts[6], pkts[-1]]
    rx = Rfc4733Receiver()
    got = feed(rx, shuffled, ts=5000)
    assert [(g.digit, g.duration_ms) for g in got] == [("7", 200.0)]


def test_lost_end_packets_reported_by_timer_or_next_event():
    rx = Rfc4733Receiver(end_timeout_s=0.5)
    pkts = rfc4733_packets("3", 100)
    assert feed(rx, pkts[:-3], ts=100) == []
    assert rx.get_timer() == pytest.approx(0.08 + 0.5)
    assert rx.handle_timer(0.3) == []
    got = rx.handle_timer(0.6)
    assert [(g.digit, g.duration_ms) for g in got] == [("3", 80.0)]
    assert rx.get_timer() is None
    # Next event's start reports the previous one whose end was lost.
    feed(rx, rfc4733_packets("4", 60)[:-3], ts=9000, t0=1.0)
    got = feed(rx, rfc4733_packets("5", 60), ts=12000, t0=1.2)
    assert [g.digit for g in got] == ["4", "5"]


def test_malformed_payload_is_counted_not_raised():
    rx = Rfc4733Receiver()
    assert rx.receive(b"\x01", 0, True, 1, 0.0) == []
    assert rx.malformed_dropped == 1


def test_long_event_segments_are_joined():
    # RFC 4733 §2.5.1.3: a 10 s key press at 8 kHz overflows 0xFFFF; the
    # sender starts a new segment (new timestamp, no marker) at ts + 0xFFFF.
    rx = Rfc4733Receiver()
    got = rx.receive(build_event("9", 0), 1000, True, 7, 0.0)
    got += rx.receive(build_event("9", 0xFFFF), 1000, False, 7, 8.0)
    got += rx.receive(build_event("9", 80000 - 0xFFFF), 1000 + 0xFFFF, False, 7, 10.0)
    got += rx.receive(build_event("9", 80000 - 0xFFFF, end=True), 1000 + 0xFFFF, False, 7, 10.0)
    assert [(g.digit, g.duration_ms) for g in got] == [("9", 10000.0)]


def test_sipp_pcaps_including_the_same_capture_replayed(sipp_dtmf_pcaps):
    """SIPp plays these pcaps as they are: repeated sequence numbers in the
    end packets, jumps between files, and the same timestamp again when a
    file is replayed (e.g. dialling "11")."""
    rx = Rfc4733Receiver()
    sequence = "1123#*09987654"
    got = []
    now = 0.0
    for digit in sequence:
        pkts = sipp_dtmf_pcaps[digit]
        t_first = pkts[0]["time"]
        for p in pkts:
            assert p["payload_type"] == 101
            got += rx.receive(p["payload"], p["timestamp"], p["marker"], p["ssrc"], now + p["time"] - t_first)
        now += 1.0
    assert "".join(g.digit for g in got) == sequence
    assert all(g.duration_ms == 280.0 for g in got)  # 0x8c0 = 2240 units


def test_replay_without_marker_after_gap_is_a_new_event():
    rx = Rfc4733Receiver(replay_gap_s=0.25)
    pkts = rfc4733_packets("2", 60)
    got = feed(rx, pkts, ts=100)
    got += feed(rx, pkts[1:], ts=100, t0=2.0)  # marker lost, same key, much later
    got += feed(rx, pkts[-1:], ts=100, t0=2.05)  # a late duplicate end: dropped
    assert [g.digit for g in got] == ["2", "2"]


# ---------------------------------------------------------------- in-band

PAUSE = np.zeros(480)


def run_detector(signal: np.ndarray, detector: DtmfDetector | None = None) -> str:
    detector = detector or DtmfDetector(1)
    signal = np.concatenate([np.zeros(400), signal, np.zeros(1600)])
    signal = signal[: len(signal) // 160 * 160]
    frames = np.clip(np.rint(signal), -32768, 32767).astype(np.int16).reshape(-1, 1, 160)
    out = []
    for frame in frames:
        out += detector.process(frame)
    return "".join(d.digit for d in out)


def test_every_digit_detected_once_with_duration():
    det = DtmfDetector(1)
    signal = np.concatenate([np.concatenate([dtmf_tone(d, 80), PAUSE]) for d in DIGITS])
    frames = np.concatenate([signal, np.zeros(800)]).astype(np.int16)
    frames = frames[: len(frames) // 160 * 160].reshape(-1, 1, 160)
    got = [g for f in frames for g in det.process(f)]
    assert "".join(g.digit for g in got) == DIGITS
    assert all(70 <= g.duration_ms <= 90 and g.source == "inband" and g.leg == 0 for g in got)


@pytest.mark.parametrize("snr_db", [30, 20, 12, 8])
def test_digits_in_noise(snr_db):
    rng = np.random.default_rng(snr_db)
    for digit in DIGITS:
        tone = dtmf_tone(digit, 60, level_dbm0=-15, phase=rng.uniform(0, 2 * np.pi))
        noise_power = np.mean(tone**2) / 10 ** (snr_db / 10)
        signal = np.concatenate([np.zeros(160), tone, PAUSE])
        signal = signal + rng.normal(0, np.sqrt(noise_power), signal.size)
        assert run_detector(signal) == digit, f"{digit} at {snr_db} dB SNR"


@pytest.mark.parametrize("deviation, accepted", [(0.015, True), (-0.015, True), (0.035, False), (-0.035, False)])
def test_frequency_deviation_q24(deviation, accepted):
    got = [run_detector(dtmf_tone(d, 80, deviation=deviation)) for d in DIGITS]
    assert got == (list(DIGITS) if accepted else [""] * 16)


@pytest.mark.parametrize(
    "twist_db, accepted",
    [(-6, True), (-7.5, True), (-10, False), (-12, False), (3, True), (3.5, True), (5, False), (8, False)],
)
def test_twist_normal_and_reverse(twist_db, accepted):
    got = [run_detector(dtmf_tone(d, 80, twist_db=twist_db)) for d in DIGITS]
    assert got == (list(DIGITS) if accepted else [""] * 16)


@pytest.mark.parametrize("level, accepted", [(0, True), (-25, True), (-28, True), (-33, False), (-40, False)])
def test_signal_level_minimum(level, accepted):
    got = [run_detector(dtmf_tone(d, 80, level_dbm0=level)) for d in "159#D"]
    assert got == (list("159#D") if accepted else [""] * 5)


@pytest.mark.parametrize("duration_ms, accepted", [(15, False), (20, False), (40, True), (45, True), (1000, True)])
def test_minimum_duration(duration_ms, accepted):
    got = [run_detector(dtmf_tone(d, duration_ms)) for d in "0*7C"]
    assert got == (list("0*7C") if accepted else [""] * 4)


def test_inter_digit_pause_and_dropout():
    tone = dtmf_tone("5", 60)
    assert run_detector(np.concatenate([tone, np.zeros(40 * 8), tone])) == "55"
    assert run_detector(np.concatenate([tone, np.zeros(10 * 8), tone])) == "5"  # 10 ms drop-out


def test_single_tone_and_three_tones_rejected():
    t = np.arange(800) / 8000
    single = 8000 * np.sin(2 * np.pi * 697 * t)
    assert run_detector(single) == ""
    triple = dtmf_tone("1", 100) + 0.9 * 8000 * np.sin(2 * np.pi * 770 * t)
    assert run_detector(triple) == ""
    # A second harmonic 8 dB under the high tone (voiced speech, not a keypad)
    # passes the energy ratio (93 % in the pair) but not the harmonic check.
    amplitude = np.max(np.abs(dtmf_tone("1", 100))) / 2
    harm = dtmf_tone("1", 100) + 0.4 * amplitude * np.sin(2 * np.pi * 2 * 1209 * t)
    assert run_detector(harm) == ""
    assert run_detector(dtmf_tone("1", 100) + 0.1 * amplitude * np.sin(2 * np.pi * 2 * 1209 * t)) == "1"


def test_batch_of_1000_legs_each_with_its_own_digit():
    n = 1000
    rng = np.random.default_rng(3)
    digits = rng.integers(0, 16, n)
    onset = rng.integers(0, 160, n)  # each leg starts its tone at a different sample
    duration = 30 * 160
    signal = np.zeros((n, duration))
    for i in range(n):
        tone = dtmf_tone(DIGITS[digits[i]], 70, level_dbm0=float(rng.uniform(-25, -5)))
        signal[i, 160 + onset[i] : 160 + onset[i] + tone.size] = tone
    frames = signal.astype(np.int16).reshape(n, -1, 160)
    slots = rng.permutation(n)  # rows map to arbitrary slots
    det = DtmfDetector(n)
    got = []
    for k in range(frames.shape[1]):
        got += det.process(np.ascontiguousarray(frames[:, k]), slots)
    by_slot = {g.leg: g.digit for g in got}
    assert len(got) == n
    assert all(by_slot[slots[i]] == DIGITS[digits[i]] for i in range(n))


def test_reset_forgets_a_slot():
    det = DtmfDetector(2)
    tone = dtmf_tone("8", 100).astype(np.int16)
    det.process(np.stack([tone[:160], tone[:160]]))
    det.process(np.stack([tone[160:320], tone[160:320]]))
    det.reset(1)
    got = det.process(np.zeros((2, 160), np.int16)) + det.process(np.zeros((2, 160), np.int16))
    assert [(g.leg, g.digit) for g in got] == [(0, "8")]


def test_detector_rejects_bad_input():
    det = DtmfDetector(4)
    with pytest.raises(LocalMediaError, match=r"expects int16 frames of shape \(n, 160\)"):
        det.process(np.zeros((2, 80), np.int16))
    with pytest.raises(LocalMediaError, match="slots must be 2 values"):
        det.process(np.zeros((2, 160), np.int16), [0, 9])
    with pytest.raises(LocalMediaError, match="max_slots"):
        DtmfDetector(0)


def test_talk_off_real_speech_english_and_mandarin(speech_8k):
    """Zero false digits on espeak-ng speech (several voices, en and cmn), at two levels."""
    seconds = 0.0
    for voice, text, audio in speech_8k:
        for gain_db in (0, -12):
            signal = audio * 10 ** (gain_db / 20)
            got = run_detector(signal)
            assert got == "", f"talk-off: {got!r} from {voice} {text!r} at {gain_db} dB"
            seconds += signal.size / 8000
    assert seconds > 60


def test_talk_off_checks_are_what_rejects_speech(speech_8k):
    """The same speech through a detector with the talk-off checks relaxed
    produces false digits, so the test above can fail."""
    lax = DetectorConfig(min_tone_energy_ratio=0.2, harmonic_margin_db=-20, max_deviation=0.2,
                         group_margin_db=1, hits_to_start=1)
    false = "".join(run_detector(audio, DtmfDetector(1, lax)) for _, _, audio in speech_8k)
    assert len(false) > 5


def test_digit_within_speech_still_detected(speech_8k):
    audio = speech_8k[1][2]
    signal = audio.copy()
    at = signal.size // 2
    signal[at : at + 800] = 0.3 * signal[at : at + 800] + dtmf_tone("6", 100, level_dbm0=-8)
    assert run_detector(signal) == "6"


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_digits_survive_g711_line(codec):
    from media import g711

    for digit in DIGITS:
        tone = np.clip(np.rint(dtmf_tone(digit, 60, level_dbm0=-25)), -32768, 32767).astype(np.int16)
        line = g711.decode(codec, g711.encode(codec, tone))
        assert run_detector(line.astype(np.float64)) == digit, f"{digit} over {codec}"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=0, max_size=6), st.integers(0, 2**32 - 1), st.booleans(),
                          st.integers(0, 3), st.floats(0, 0.1)), max_size=60))
def test_receiver_never_raises_and_reports_each_key_once_per_start(packets):
    rx = Rfc4733Receiver()
    now = 0.0
    reported = []
    for payload, ts, marker, ssrc, dt in packets:
        now += dt
        reported += rx.receive(payload, ts, marker, ssrc, now)
        reported += rx.handle_timer(now)
    reported += rx.handle_timer(now + 10)
    assert rx.get_timer() is None
    starts = sum(1 for p, *_ in packets if len(p) >= 4 and p[0] < 16)
    assert len(reported) <= starts
    assert all(d.digit in DIGITS and d.duration_ms >= 0 for d in reported)


def test_grow_keeps_state_of_existing_slots():
    det = DtmfDetector(1)
    tone = np.concatenate([dtmf_tone("3", 100), np.zeros(800)]).astype(np.int16).reshape(-1, 160)
    for frame in tone[:3]:  # slot 0 is in the middle of a "3"
        assert det.process(frame[None, :]) == []
    det.grow(3)
    assert det.max_slots == 3 and det.grow(2) is None and det.max_slots == 3
    got = []
    for frame in tone[3:]:
        got += det.process(np.stack([frame, np.zeros(160, np.int16)]), [0, 2])
    # Slot 0 finishes the digit it started before the growth (100 ms long).
    assert [(g.leg, g.digit, g.duration_ms) for g in got] == [(0, "3", 100.0)]
