"""Recorder: layout, mono/stereo, formats, limits, overflow, and SIGKILL survival."""
from __future__ import annotations

import datetime
import os
import pathlib
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from media.errors import LocalMediaError
from media.g711 import ulaw_decode, ulaw_encode
from media.recorder import FORMATS, Recorder, recording_path, recover_spools

ROOT = pathlib.Path(__file__).resolve().parents[2]
WHEN = datetime.datetime(2026, 11, 23, 23, 59, 30)


def tone_frames(freq: float, frames: int, amp: float = 8000, start: int = 0) -> np.ndarray:
    n = np.arange(start * 160, (start + frames) * 160)
    return np.rint(amp * np.sin(2 * np.pi * freq * n / 8000)).astype(np.int16).reshape(frames, 160)


def peak_freqs(x: np.ndarray, count: int = 1) -> list[float]:
    x = x.astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    f = np.fft.rfftfreq(x.size, 1 / 8000)
    out: list[float] = []
    for i in np.argsort(spec)[::-1]:
        if all(abs(f[i] - g) > 30 for g in out):
            out.append(float(f[i]))
        if len(out) == count:
            break
    return sorted(out)


def level(x: np.ndarray, freq: float) -> float:
    x = x.astype(np.float64)
    w = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * w)) / (w.sum() / 2)
    f = np.fft.rfftfreq(x.size, 1 / 8000)
    return float(spec[np.abs(f - freq) < 20].max())


def record(tmp_path, frames=100, **kw):
    rec = Recorder(tmp_path, **{k: v for k, v in kw.items() if k in ("fmt", "stereo", "min_length_s", "max_length_s")})
    try:
        rid = rec.start("call-1@example.com", WHEN, tenant="acme")
        caller, agent = tone_frames(1000, frames), tone_frames(600, frames)
        for k in range(frames):
            assert rec.write(rid, caller[k], agent[k])
        return rec.stop(rid).result(10)
    finally:
        rec.close()


def test_path_layout_and_sanitising(tmp_path):
    p = recording_path(tmp_path, "a/b c@host:5060", WHEN, "wav-ulaw")
    assert p == tmp_path / "2026" / "11" / "23" / "a_b_c@host_5060.wav"
    with pytest.raises(LocalMediaError, match="recording format 'ogg' is not one of"):
        recording_path(tmp_path, "x", WHEN, "ogg")
    a = record(tmp_path, frames=10)
    b = record(tmp_path, frames=10)
    assert a.path.name == "call-1@example.com.wav" and b.path.name == "call-1@example.com-2.wav"
    assert a.path.parent == tmp_path / "2026" / "11" / "23"
    assert a.tenant == "acme" and a.call_id == "call-1@example.com"


def test_mono_mix_holds_both_parties(tmp_path):
    res = record(tmp_path, fmt="wav", stereo=False)
    x, rate = sf.read(str(res.path), dtype="int16")
    assert rate == 8000 and x.ndim == 1 and x.size == 16000 and res.duration_s == 2.0
    assert peak_freqs(x, 2) == pytest.approx([600, 1000], abs=5)
    mix = np.clip(tone_frames(1000, 100).astype(int) + tone_frames(600, 100), -32768, 32767).ravel()
    assert np.array_equal(x, mix)


def test_stereo_caller_left_agent_right(tmp_path):
    res = record(tmp_path, fmt="wav", stereo=True)
    x, _ = sf.read(str(res.path), dtype="int16")
    assert x.shape == (16000, 2)
    assert np.array_equal(x[:, 0], tone_frames(1000, 100).ravel())
    assert np.array_equal(x[:, 1], tone_frames(600, 100).ravel())


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("stereo", [False, True])
def test_every_format_reads_back_with_the_tones(tmp_path, fmt, stereo):
    res = record(tmp_path, fmt=fmt, stereo=stereo)
    info = sf.info(str(res.path))
    assert info.samplerate == 8000 and info.channels == (2 if stereo else 1)
    x, _ = sf.read(str(res.path), dtype="int16", always_2d=True)
    assert abs(x.shape[0] - 16000) < 2000  # MP3 adds encoder padding
    if stereo:
        # MP3 (LAME through libsndfile) leaks between channels by a varying
        # amount (15-57 dB measured): demand the right tone on each side, 10 dB up.
        separation = 3 if fmt == "mp3" else 30
        assert level(x[:, 0], 1000) > separation * level(x[:, 0], 600)
        assert level(x[:, 1], 600) > separation * level(x[:, 1], 1000)
    else:
        assert peak_freqs(x[:, 0], 2) == pytest.approx([600, 1000], abs=5)
    assert not list(res.path.parent.glob("*.spool.wav"))


def test_ulaw_wav_is_g711_bit_exact(tmp_path):
    res = record(tmp_path, fmt="wav-ulaw", stereo=True)
    raw = res.path.read_bytes()
    assert raw[20:22] == (7).to_bytes(2, "little") and b"fact" in raw[:64]
    x, _ = sf.read(str(res.path), dtype="int16")
    expected = ulaw_decode(ulaw_encode(tone_frames(1000, 100).ravel()))
    assert np.array_equal(x[:, 0], expected)


def test_min_length_discards_and_max_length_stops(tmp_path):
    short = record(tmp_path / "a", frames=20, min_length_s=1.0)
    assert short.discarded and short.path is None
    assert not list((tmp_path / "a").rglob("*.wav"))
    long = record(tmp_path / "b", frames=100, max_length_s=1.25)
    assert long.max_length_reached and long.duration_s == 1.25
    assert sf.info(str(long.path)).frames == 10000
    flac_short = record(tmp_path / "c", frames=5, fmt="flac", min_length_s=1.0)
    assert flac_short.discarded and not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


class _StalledRecorder(Recorder):
    """A recorder whose worker stalls (as on a hung disk) until released."""

    def __init__(self, *a, **kw):
        self.release = threading.Event()
        super().__init__(*a, **kw)

    def _on_frames(self, *args):
        self.release.wait(10)
        super()._on_frames(*args)


def test_full_queue_drops_ticks_without_blocking_and_keeps_the_timeline(tmp_path):
    rec = _StalledRecorder(tmp_path, queue_ticks=5)
    try:
        rid = rec.start("overflow", WHEN)
        caller, agent = tone_frames(1000, 50), tone_frames(600, 50)
        # With the worker stalled, a blocking put would hang here (the
        # release only comes below): returning at all proves it never blocks.
        accepted = [rec.write(rid, caller[k], agent[k]) for k in range(50)]
        assert accepted.count(False) >= 40
        rec.release.set()
        res = rec.stop(rid).result(10)
    finally:
        rec.release.set()
        rec.close()
    assert res.dropped_frames == accepted.count(False)
    assert res.duration_s == pytest.approx(50 * 0.02)  # dropped ticks became silence
    x, _ = sf.read(str(res.path), dtype="int16")
    assert x.size == 50 * 160


def test_batch_of_many_recordings_and_callback(tmp_path):
    results = []
    rec = Recorder(tmp_path, stereo=True, on_finished=results.append)
    try:
        ids = [rec.start(f"c{i}", WHEN, tenant=f"t{i % 3}") for i in range(100)]
        for k in range(25):
            caller = np.stack([tone_frames(300 + 10 * i, 1, start=k)[0] for i in range(100)])
            agent = np.zeros((100, 160), np.int16)
            assert rec.write_batch(ids, caller, agent)
        futures = [rec.stop(r) for r in ids]
        done = [f.result(20) for f in futures]
    finally:
        rec.close()
    assert len(results) == 100 and {r.tenant for r in results} == {"t0", "t1", "t2"}
    x, _ = sf.read(str(done[42].path), dtype="int16")
    assert peak_freqs(x[:, 0]) == pytest.approx([720], abs=10)


def test_stop_unknown_recording_reports_error(tmp_path):
    rec = Recorder(tmp_path)
    try:
        with pytest.raises(Exception, match="recording 999 is not open"):
            rec.stop(999).result(5)
    finally:
        rec.close()


KILL_SCRIPT = r"""
import datetime, sys, time
import numpy as np
from media.recorder import Recorder
root, fmt, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = Recorder(root, fmt=fmt, stereo=True, header_update_s=1.0)
rid = r.start("killed-call", datetime.datetime(2026, 11, 23, 23, 59))
for k in range(frames):
    n = k * 160 + np.arange(160)
    caller = (8000 * np.sin(2 * np.pi * 1000 * n / 8000)).astype(np.int16)
    agent = (8000 * np.sin(2 * np.pi * 600 * n / 8000)).astype(np.int16)
    while not r.write(rid, caller, agent):
        time.sleep(0.01)
while r.frames_written < frames:
    time.sleep(0.01)
time.sleep(0.2)
print("READY", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("fmt", ["wav", "wav-ulaw", "mp3", "flac"])
def test_file_readable_after_sigkill_mid_call(tmp_path, fmt):
    frames = 175  # 3.5 s: the header was last updated at 3.0 s
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), fmt, str(frames)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()
    day = tmp_path / "2026" / "11" / "23"
    if fmt == "flac":
        spool = day / "killed-call.spool.wav"
        x, rate = sf.read(str(spool), dtype="int16")  # the spool is a valid WAV
        assert recover_spools(tmp_path) == [day / "killed-call.flac"] and not spool.exists()
        path = day / "killed-call.flac"
    else:
        path = day / f"killed-call.{FORMATS[fmt]}"
    x, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert rate == 8000 and x.shape[1] == 2
    assert 3.0 <= x.shape[0] / 8000 <= 3.6
    separation = 3 if fmt == "mp3" else 30  # see test_every_format_reads_back_with_the_tones
    assert level(x[:8000, 0], 1000) > separation * level(x[:8000, 0], 600)
    assert level(x[:8000, 1], 600) > separation * level(x[:8000, 1], 1000)


def test_open_failure_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    rec = Recorder(blocker)
    try:
        rid = rec.start("c", WHEN)
        assert rec.write(rid, tone_frames(1000, 1)[0], tone_frames(600, 1)[0])
        res = rec.stop(rid).result(10)
    finally:
        rec.close()
    assert res.error and "cannot open" in res.error and res.path is None and res.duration_s == 0


def test_closed_recorder_refuses_new_work(tmp_path):
    from media.errors import RecorderError

    rec = Recorder(tmp_path)
    rec.close()
    with pytest.raises(RecorderError, match="recorder is closed"):
        rec.start("c", WHEN)
