"""Generated greetings for the answering-machine detector: espeak-ng speech over a telephone path.

Human style: a short answer ("Hello?") then silence, waiting for the caller.
Machine style: a long continuous greeting, then a 1 kHz beep, then silence.
Each clip: random answer delay, random level, -60 dBFS noise, G.711 mu-law
round trip.  Used by tests/media/test_amd.py and bench/outbound_amd.py.
"""
from __future__ import annotations

import concurrent.futures
import os
import random

import numpy as np

from media.g711 import ulaw_decode, ulaw_encode
from media.tts import Tts

HUMAN_TEXTS = ("Hello?", "Yes?", "Hello, who is this?", "Hi.", "Speaking.", "Yeah, hello?",
               "Good morning.", "Hello, Anna speaking.")
MACHINE_TEXTS = (
    "Hi, you have reached the voicemail of John Smith. I am not available right now, "
    "please leave a message after the tone.",
    "The person you are calling is not available. Please leave your message after the beep.",
    "Hello, this is Anna. Sorry I missed your call, leave me a message and I will call you back.",
    "Thank you for calling Acme Plumbing. Our office is closed. Please leave your name and number.",
    "You have reached 555 0123. Nobody can take your call, please speak after the tone.",
    "Hey, it's Mike, I can't talk right now. Leave a message.",
)
VOICES = (("en", 175), ("en-us+f3", 160), ("en-gb-scotland", 190))


def _tts() -> Tts:
    return Tts(os.environ.get("CTIENGINE_TTS_CACHE", "var/cache/tts"))


def _clip(speech: np.ndarray, machine: bool, rng: random.Random) -> np.ndarray:
    rate = 8000
    lead = np.zeros(int(rate * rng.uniform(0.2, 0.8)), np.float64)
    gain = 10 ** (rng.uniform(-14.0, 0.0) / 20)
    parts = [lead, speech.astype(np.float64) * gain]
    if machine:
        parts.append(np.zeros(int(rate * 0.3)))
        t = np.arange(int(rate * 0.4)) / rate
        parts.append(8000 * np.sin(2 * np.pi * 1000 * t))
    parts.append(np.zeros(rate * 4))
    x = np.concatenate(parts)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 32768 * 10 ** (-60 / 20), len(x))
    pcm = np.clip(x + noise, -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(pcm)).astype(np.int16)


def corpus(seed: int = 7, voices: tuple[tuple[str, int], ...] = VOICES) -> list[tuple[str, str, np.ndarray]]:
    """``(kind, label, samples)`` for every text × voice; ``kind`` is ``human`` or ``machine``."""
    tts = _tts()
    jobs = [(kind, text, v, s) for kind, texts in (("human", HUMAN_TEXTS), ("machine", MACHINE_TEXTS))
            for text in texts for v, s in voices]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda j: tts.synthesize(j[1], voice=j[2], speed_wpm=j[3]), jobs))
    import soundfile

    rng = random.Random(seed)
    out = []
    for (kind, text, v, s), path in zip(jobs, paths):
        speech, _ = soundfile.read(str(path), dtype="int16")
        out.append((kind, f"{kind} {v}@{s}: {text[:30]}", _clip(speech, kind == "machine", rng)))
    return out
