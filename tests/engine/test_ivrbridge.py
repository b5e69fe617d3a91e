"""engine/ivrbridge.py PromptCache: decoded prompts served again, bounded,
re-read when a prompt file changes (real files)."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from engine.ivrbridge import PromptCache
from ivr.actions import PromptItem


def test_hit_miss_lru_bound_and_file_change(tmp_path: pathlib.Path) -> None:
    cache = PromptCache(max_samples=4000)
    hello = (PromptItem("tts", "Hello", "en"),)
    bye = (PromptItem("tts", "Bye", "en"),)
    assert cache.get(hello) is None and cache.misses == 1
    cache.put(hello, np.ones(900, np.int16))
    got = cache.get(hello)
    assert got is not None and got.size == 900 and cache.hits == 1
    with pytest.raises(ValueError):
        got[0] = 5  # shared between players: read-only
    cache.put(bye, np.ones(900, np.int16))
    cache.get(hello)  # hello is now the most recently used
    for i in range(3):
        cache.put((PromptItem("tts", f"n{i}", "en"),), np.ones(900, np.int16))
    assert cache.samples <= 4000
    assert cache.get(bye) is None and cache.get(hello) is not None  # least recently used went first
    cache.put((PromptItem("tts", "huge", "en"),), np.ones(2000, np.int16))  # > a quarter: not kept
    assert cache.get((PromptItem("tts", "huge", "en"),)) is None
    cache.put((PromptItem("tts", "empty", "en"),), np.zeros(0, np.int16))
    assert cache.get((PromptItem("tts", "empty", "en"),)) is None

    wav = tmp_path / "welcome.wav"
    wav.write_bytes(b"x")
    item = (PromptItem("file", str(wav), "en"),)
    cache.put(item, np.ones(100, np.int16))
    assert cache.get(item) is not None
    st = wav.stat()
    os.utime(wav, (st.st_atime, st.st_mtime + 5))  # the prompt file was replaced
    assert cache.get(item) is None
