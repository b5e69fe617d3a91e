"""Text to speech with espeak-ng, cached on disk as 8 kHz mono WAV.

Theory of operation
-------------------
``espeak-ng -v VOICE -w OUT.wav -f TEXT.txt`` synthesises at its native rate
(22,050 Hz).  We resample once to 8 kHz mono PCM16 (:mod:`media.resample`)
and store the result under ``CACHE/<sha256>.wav``, the hash taken over
(text, voice, language, speed, the espeak-ng version): the same request never
runs the synthesiser twice, across processes too, and an upgrade of
espeak-ng does not serve stale audio.  Files are written to a temporary name
and renamed, so a concurrent reader never sees half a file.  The text goes
through a file (``-f``), never the command line, so any text is safe
(leading dashes, quotes, non-ASCII).

``language`` picks the voice when ``voice`` is not given (``zh`` → the
Mandarin voice ``cmn``); a voice may carry an espeak-ng variant (``en+f3``).

Synthesis takes a fraction of a second: call :meth:`Tts.synthesize` from a
worker thread (or ``await Tts.asynthesize``), never from the media clock.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading

import numpy as np
import soundfile

from media.errors import TtsError
from media.resample import TELEPHONY_RATE, resample, to_int16, to_mono

__all__ = ["Tts", "default_tts", "LANGUAGE_VOICES"]

#: language code -> espeak-ng voice
LANGUAGE_VOICES = {"en": "en", "en-us": "en-us", "en-gb": "en-gb", "zh": "cmn", "cmn": "cmn",
                   "zh-cn": "cmn", "yue": "yue", "de": "de", "fr": "fr", "es": "es"}


class Tts:
    """espeak-ng synthesiser with an on-disk cache."""

    def __init__(self, cache_dir: str | os.PathLike[str], executable: str = "espeak-ng",
                 timeout_s: float = 60.0) -> None:
        self.cache_dir = pathlib.Path(cache_dir)
        self.executable = executable
        self.timeout_s = timeout_s
        self._version: str | None = None
        self.synthesized = 0  # cache misses

    def version(self) -> str:
        """espeak-ng's version string (part of the cache key)."""
        if self._version is None:
            exe = shutil.which(self.executable)
            if exe is None:
                raise TtsError(f"{self.executable} is not installed (Debian package espeak-ng)")
            try:
                out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=self.timeout_s)
            except (OSError, subprocess.SubprocessError) as exc:
                raise TtsError(f"{self.executable} --version failed: {exc}") from None
            self._version = out.stdout.strip()
        return self._version

    def cache_path(self, text: str, voice: str | None = None, language: str | None = None,
                   speed_wpm: int | None = None) -> pathlib.Path:
        """Where the audio for this request is (or will be) cached."""
        voice = self._voice(voice, language)
        key = json.dumps([text, voice, language, speed_wpm, self.version()], ensure_ascii=False)
        return self.cache_dir / (hashlib.sha256(key.encode()).hexdigest() + ".wav")

    @staticmethod
    def _voice(voice: str | None, language: str | None) -> str:
        if voice:
            return voice
        if language:
            return LANGUAGE_VOICES.get(language.lower(), language)
        return "en"

    def synthesize(self, text: str, voice: str | None = None, language: str | None = None,
                   speed_wpm: int | None = None) -> pathlib.Path:
        """Speak ``text``; return the cached 8 kHz mono PCM16 WAV path.

        Raises:
            TtsError: empty text, espeak-ng missing, failing or producing no audio.
        """
        if not text or not text.strip():
            raise TtsError("TTS text is empty")
        target = self.cache_path(text, voice, language, speed_wpm)
        if target.exists():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        v = self._voice(voice, language)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            txt = pathlib.Path(tmp, "text.txt")
            raw = pathlib.Path(tmp, "raw.wav")
            txt.write_text(text, encoding="utf-8")
            cmd = [self.executable, "-v", v, "-w", str(raw), "-f", str(txt)]
            if speed_wpm:
                cmd[1:1] = ["-s", str(int(speed_wpm))]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
            except FileNotFoundError:
                raise TtsError(f"{self.executable} is not installed (Debian package espeak-ng)") from None
            except subprocess.TimeoutExpired:
                raise TtsError(f"espeak-ng took over {self.timeout_s:.0f} s for {len(text)} characters") from None
            if proc.returncode != 0 or not raw.exists():
                raise TtsError(f"espeak-ng -v {v} failed ({proc.returncode}): {proc.stderr.strip()[:200]}")
            audio, rate = soundfile.read(str(raw), dtype="float64", always_2d=True)
            if audio.shape[0] == 0:
                raise TtsError(f"espeak-ng -v {v} produced no audio for {text[:40]!r}")
            pcm = to_int16(resample(to_mono(audio) * 32768.0, rate, TELEPHONY_RATE))
            staged = pathlib.Path(tmp, "out.wav")
            soundfile.write(str(staged), pcm, TELEPHONY_RATE, subtype="PCM_16")
            os.replace(staged, target)
        self.synthesized += 1
        return target

    async def asynthesize(self, text: str, voice: str | None = None, language: str | None = None,
                          speed_wpm: int | None = None) -> pathlib.Path:
        """:meth:`synthesize` on a worker thread."""
        return await asyncio.to_thread(self.synthesize, text, voice, language, speed_wpm)

    def load(self, text: str, voice: str | None = None, language: str | None = None) -> np.ndarray:
        """Synthesize (if needed) and return int16 8 kHz samples."""
        audio, _ = soundfile.read(str(self.synthesize(text, voice, language)), dtype="int16")
        return audio


_default: Tts | None = None
_default_lock = threading.Lock()


def default_tts() -> Tts:
    """A process-wide :class:`Tts` caching under ``$CTIENGINE_TTS_CACHE`` or
    ``var/cache/tts`` (relative to the working directory)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Tts(os.environ.get("CTIENGINE_TTS_CACHE", "var/cache/tts"))
        return _default
