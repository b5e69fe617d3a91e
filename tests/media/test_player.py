"""Player sources: prompt loading/resampling/caching, music loop, playlist, TTS source."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from media.errors import MediaFormatError, PromptNotFoundError
from media.player import (
    ArraySource,
    MusicSource,
    Playlist,
    PromptCache,
    PromptSource,
    SilenceSource,
    TtsSource,
    load_prompt,
)
from media.resample import resample
from media.tones import ToneSource
from media.tts import Tts


def sine(freq: float, seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def level_db(x: np.ndarray, freq: float, rate: int = 8000) -> float:
    """Level of ``freq`` in ``x`` relative to a full-scale int16 sine."""
    x = x.astype(np.float64)
    w = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * w)) / (w.sum() / 2)
    f = np.fft.rfftfreq(x.size, 1 / rate)
    band = np.abs(f - freq) < 15
    return 20 * np.log10(spec[band].max() / 32768 + 1e-12)


def drain(src) -> list[np.ndarray]:
    out = []
    while (frame := src.read()) is not None:
        assert frame.shape == (160,) and frame.dtype == np.int16
        out.append(frame.copy())
    return out


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 44100, 48000])
def test_prompt_any_rate_to_8k_keeps_band_and_rejects_aliases(tmp_path, rate):
    path = tmp_path / f"p{rate}.wav"
    x = sine(1000, 1.0, rate)
    if rate > 8000:
        # An out-of-band tone that would fold to 8000 - f without a proper filter.
        alias_src = min(rate / 2 - 200, 6000)
        x = x + sine(alias_src, 1.0, rate)
    sf.write(path, x, rate, subtype="PCM_16")
    pcm = load_prompt(path, PromptCache())
    assert pcm.dtype == np.int16 and abs(pcm.size - 8000) <= 1
    assert level_db(pcm, 1000) == pytest.approx(20 * np.log10(0.3), abs=0.3)
    if rate > 8000:
        assert level_db(pcm, 8000 - alias_src) < -60, "alias leaked through the resampler"


def test_stereo_is_mixed_to_mono(tmp_path):
    path = tmp_path / "st.wav"
    stereo = np.stack([sine(600, 0.5, 16000), sine(1500, 0.5, 16000)], axis=1)
    sf.write(path, stereo, 16000)
    pcm = load_prompt(path, PromptCache())
    assert level_db(pcm, 600) == pytest.approx(level_db(pcm, 1500), abs=0.5)
    assert level_db(pcm, 600) == pytest.approx(20 * np.log10(0.15), abs=0.5)


def test_flac_prompt_and_errors(tmp_path):
    path = tmp_path / "p.flac"
    sf.write(path, sine(440, 0.2, 8000), 8000, format="FLAC")
    assert load_prompt(path, PromptCache()).size == 1600
    with pytest.raises(PromptNotFoundError, match="does not exist"):
        load_prompt(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    with pytest.raises(MediaFormatError, match="cannot read audio file"):
        load_prompt(bad)


def test_cache_by_path_and_mtime(tmp_path):
    cache = PromptCache()
    path = tmp_path / "c.wav"
    sf.write(path, sine(500, 0.1, 8000), 8000)
    a = cache.load(path)
    b = cache.load(str(path))
    assert a is b and cache.loads == 1
    assert not a.flags.writeable
    sf.write(path, sine(500, 0.3, 8000), 8000)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = cache.load(path)
    assert cache.loads == 2 and c.size == 2400


def test_cache_is_bounded(tmp_path):
    cache = PromptCache(max_bytes=20_000)
    for i in range(5):
        p = tmp_path / f"{i}.wav"
        sf.write(p, sine(500, 0.5, 8000), 8000)  # 8 kB each
        cache.load(p)
    assert cache._bytes <= 20_000


def test_prompt_source_frames_and_padding(tmp_path):
    path = tmp_path / "p.wav"
    x = (np.arange(400) % 100 + 1).astype(np.int16)
    sf.write(path, x, 8000, subtype="PCM_16")
    src = PromptSource(path, PromptCache())
    frames = drain(src)
    assert len(frames) == 3 and src.finished and src.read() is None
    assert np.array_equal(np.concatenate(frames)[:400], x)
    assert np.all(frames[-1][80:] == 0)


def test_music_on_hold_loops_seamlessly():
    # 0.5 s of 400 Hz holds whole cycles: the loop must reproduce an unbroken sine.
    n = 4000
    music = np.rint(8000 * np.sin(2 * np.pi * 400 * np.arange(n) / 8000)).astype(np.int16)
    src = MusicSource(music, crossfade_ms=0)
    out = np.concatenate([src.read().copy() for _ in range(80)])  # 1.6 s, 3 loops
    ideal = np.rint(8000 * np.sin(2 * np.pi * 400 * np.arange(out.size) / 8000))
    assert np.max(np.abs(out - ideal)) <= 1 and src.loops == 3


def test_music_crossfade_hides_a_bad_seam():
    # 0.3 s of 330 Hz does not end where it starts: without the crossfade the
    # loop point jumps; with it the step stays within a sine's slope.
    music = np.rint(8000 * np.sin(2 * np.pi * 330 * np.arange(2430) / 8000)).astype(np.int16)
    slope = 2 * np.pi * 330 / 8000 * 8000
    raw_src, faded_src = MusicSource(music, crossfade_ms=0), MusicSource(music, crossfade_ms=10)
    raw = np.concatenate([raw_src.read().copy() for _ in range(40)])
    faded = np.concatenate([faded_src.read().copy() for _ in range(40)])
    assert np.max(np.abs(np.diff(raw.astype(int)))) > 2 * slope
    assert np.max(np.abs(np.diff(faded.astype(int)))) < 1.2 * slope


def test_music_offset_and_stop():
    music = np.arange(1000, dtype=np.int16)
    src = MusicSource(music, offset_s=0.1, crossfade_ms=0)
    assert src.read()[0] == 800
    src.stop()
    assert src.read() is None


def test_playlist_order_end_report_once():
    reports = []
    a = ArraySource(np.full(320, 1, np.int16))
    b = SilenceSource(40)
    c = ToneSource("busy", duration_ms=60)
    pl = Playlist([a, b, c], on_finished=lambda p, reason: reports.append(reason))
    frames = drain(pl)
    assert len(frames) == 2 + 2 + 3
    assert frames[0][0] == 1 and np.all(frames[2] == 0)
    assert reports == ["finished"] and pl.reason == "finished"
    pl.stop()
    assert reports == ["finished"]


def test_playlist_barge_in_and_stop():
    reports = []
    pl = Playlist([ToneSource("ringback")], barge_in=True, on_finished=lambda p, r: reports.append(r))
    pl.read()
    assert pl.barge_in("5") is True
    assert pl.read() is None and reports == ["barge_in"]
    assert pl.barge_in("6") is False
    no_barge = Playlist([ToneSource("ringback")], barge_in=False, on_finished=lambda p, r: reports.append(r))
    assert no_barge.barge_in("1") is False and no_barge.read() is not None
    no_barge.stop()
    assert reports == ["barge_in", "stopped"]


def test_tts_source_speaks(tmp_path):
    src = TtsSource("Your call is important to us.", voice="en", tts=Tts(tmp_path / "tts"))
    frames = drain(src)
    audio = np.concatenate(frames).astype(np.float64)
    assert 1.0 < audio.size / 8000 < 5.0
    spec = np.abs(np.fft.rfft(audio))
    f = np.fft.rfftfreq(audio.size, 1 / 8000)
    voice_band = spec[(f > 100) & (f < 3400)].sum()
    assert voice_band > 0.95 * spec[f > 50].sum()


def test_resampler_rejects_bad_arguments():
    from media.errors import LocalMediaError

    with pytest.raises(LocalMediaError, match="1-D"):
        resample(np.zeros((2, 2)), 16000)
    with pytest.raises(LocalMediaError, match="positive"):
        resample(np.zeros(4), 0)
