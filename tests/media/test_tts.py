"""espeak-ng TTS with its on-disk cache (real espeak-ng runs)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf

from media.errors import TtsError
from media.tts import Tts


def test_synthesize_writes_8k_mono_pcm16_and_caches(tmp_path):
    tts = Tts(tmp_path)
    path = tts.synthesize("Please hold the line.", voice="en")
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.duration > 0.5
    mtime = path.stat().st_mtime_ns
    again = tts.synthesize("Please hold the line.", voice="en")
    assert again == path and tts.synthesized == 1 and path.stat().st_mtime_ns == mtime
    # A second Tts on the same directory (another process) hits the cache too.
    other = Tts(tmp_path)
    assert other.synthesize("Please hold the line.", voice="en") == path and other.synthesized == 0


def test_key_includes_voice_language_and_text(tmp_path):
    tts = Tts(tmp_path)
    a = tts.synthesize("hello", voice="en")
    b = tts.synthesize("hello", voice="en+f3")
    c = tts.synthesize("hello!", voice="en")
    d = tts.synthesize("您好", language="zh")
    assert len({a, b, c, d}) == 4 and tts.synthesized == 4
    assert tts.cache_path("您好", language="zh") == d
    zh = sf.read(str(d), dtype="int16")[0]
    assert zh.size > 2000 and np.abs(zh).max() > 1000


def test_text_with_dashes_and_quotes_is_spoken_not_parsed(tmp_path):
    path = Tts(tmp_path).synthesize('--help "quoted" -v 12', voice="en")
    assert sf.info(str(path)).duration > 0.5


def test_errors(tmp_path):
    with pytest.raises(TtsError, match="TTS text is empty"):
        Tts(tmp_path).synthesize("   ")
    with pytest.raises(TtsError, match="no-such-espeak is not installed"):
        Tts(tmp_path, executable="no-such-espeak").synthesize("hi")
    with pytest.raises(TtsError, match="failed"):
        Tts(tmp_path).synthesize("hi", voice="xx-not-a-voice")


def test_async_synthesize(tmp_path):
    tts = Tts(tmp_path)
    path = asyncio.run(tts.asynthesize("one two three", voice="en"))
    assert path.exists() and tts.load("one two three", voice="en").dtype == np.int16
