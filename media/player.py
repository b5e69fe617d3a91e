"""Audio sources for playback: prompts, tones, music on hold, TTS, playlists.

Theory of operation
-------------------
Everything the engine plays to a leg is a *source*: an object with
``read() -> int16[160] | None`` (the next 20 ms frame at 8 kHz, ``None`` when
finished), a ``finished`` flag and ``stop()``.  The media clock calls
``read()`` once per tick for each leg that is playing and copies the frame
into its batch; the frame belongs to the source until its next ``read()``.
All decoding, mixing-down and resampling happens when a file is *loaded*, not
when it is played:

* :func:`load_prompt` reads a WAV (or anything libsndfile reads: FLAC, OGG,
  MP3 ...) at any rate and channel count, averages the channels, resamples to
  8 kHz with the band-limited (anti-aliased) resampler of
  :mod:`media.resample`, saturates to int16, and caches the result keyed by
  (absolute path, mtime, size): a changed file is re-read, an unchanged one
  never again.  Arrays in the cache are read-only and shared by every leg.
* :class:`PromptSource` plays such an array once; the last partial frame is
  padded with silence.
* :class:`MusicSource` (music on hold) plays an array in a loop, frames
  straddling the loop point take the end and the start, so there is no gap;
  a short crossfade (``crossfade_ms``) at the loop point hides a click when
  the file does not end where it starts.  ``offset_s`` lets legs start at
  different places.
* :class:`media.tones.ToneSource` plays call-progress tones.
* :class:`TtsSource` speaks text through :mod:`media.tts` (espeak-ng,
  disk-cached) and then plays it like a prompt.
* :class:`SilenceSource` plays silence for a while (pauses in a playlist).
* :class:`Playlist` plays sources one after another, reports the end once
  through ``on_finished(playlist, reason)`` with reason ``"finished"``,
  ``"stopped"`` or ``"barge_in"``, and supports barge-in: a DTMF digit stops
  it if it was started with ``barge_in=True``.

Nothing here touches sockets or the clock; files are read when a source is
created (callers create sources off the media clock, e.g. in a worker
thread, or preload with :func:`load_prompt`).
"""
from __future__ import annotations

import logging
import os
import pathlib
import threading
from collections import OrderedDict
from typing import Callable, Iterable, Protocol

import numpy as np
import numpy.typing as npt
import soundfile

from media.errors import MediaFormatError, PromptNotFoundError
from media.resample import TELEPHONY_RATE, resample, to_int16, to_mono
from media.tones import ToneSource

__all__ = [
    "Source",
    "load_prompt",
    "PromptCache",
    "ArraySource",
    "PromptSource",
    "MusicSource",
    "SilenceSource",
    "TtsSource",
    "ToneSource",
    "Playlist",
    "FRAME_SAMPLES",
]

logger = logging.getLogger(__name__)

FRAME_SAMPLES = 160


class Source(Protocol):
    """What the media clock plays: 160-sample int16 frames until ``None``."""

    finished: bool

    def read(self) -> npt.NDArray[np.int16] | None: ...

    def stop(self) -> None: ...


# ---------------------------------------------------------------- loading


class PromptCache:
    """Decoded 8 kHz mono prompts keyed by (path, mtime, size), LRU-bounded by bytes."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], npt.NDArray[np.int16]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.loads = 0  # files actually decoded (cache misses)

    def load(self, path: str | os.PathLike[str]) -> npt.NDArray[np.int16]:
        """The prompt at ``path`` as read-only int16 8 kHz mono samples.

        Raises:
            PromptNotFoundError: no such file.
            MediaFormatError: libsndfile cannot read it.
        """
        p = pathlib.Path(path).resolve()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise PromptNotFoundError(f"prompt {str(path)!r} does not exist") from None
        key = (str(p), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        audio = decode_file(p)
        with self._lock:
            self.loads += 1
            self._items[key] = audio
            self._bytes += audio.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return audio

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def decode_file(path: str | os.PathLike[str]) -> npt.NDArray[np.int16]:
    """Read any libsndfile-readable file → read-only int16 8 kHz mono (no cache)."""
    try:
        audio, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise MediaFormatError(f"cannot read audio file {str(path)!r}: {exc}") from None
    mono = to_mono(audio) * 32768.0
    out = to_int16(resample(mono, rate, TELEPHONY_RATE))
    out.setflags(write=False)
    logger.debug("loaded %s: %d Hz x %d ch -> %d samples at 8 kHz", path, rate, audio.shape[1], out.size)
    return out


_DEFAULT_CACHE = PromptCache()


def load_prompt(path: str | os.PathLike[str], cache: PromptCache | None = None) -> npt.NDArray[np.int16]:
    """Load (once) a prompt as int16 8 kHz mono; see :meth:`PromptCache.load`."""
    return (cache or _DEFAULT_CACHE).load(path)


# ---------------------------------------------------------------- sources


class ArraySource:
    """Plays an int16 8 kHz array once."""

    def __init__(self, samples: npt.NDArray[np.int16]) -> None:
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise MediaFormatError(f"ArraySource needs 1-D int16 samples, got {samples.dtype} {samples.shape}")
        self.samples = samples
        self._pos = 0
        self._frame = np.zeros(FRAME_SAMPLES, np.int16)
        self.finished = samples.size == 0

    @property
    def position_ms(self) -> float:
        """How much has been played."""
        return self._pos * 1000.0 / TELEPHONY_RATE

    def read(self) -> npt.NDArray[np.int16] | None:
        if self.finished:
            return None
        end = self._pos + FRAME_SAMPLES
        chunk = self.samples[self._pos : end]
        self._pos = end
        if end >= self.samples.size:
            self.finished = True
        if chunk.size == FRAME_SAMPLES:
            return chunk  # a read-only view: no copy
        self._frame[: chunk.size] = chunk
        self._frame[chunk.size :] = 0
        return self._frame

    def stop(self) -> None:
        self.finished = True


class PromptSource(ArraySource):
    """Plays a prompt file once (loaded through the prompt cache)."""

    def __init__(self, path: str | os.PathLike[str], cache: PromptCache | None = None) -> None:
        self.path = str(path)
        super().__init__(load_prompt(path, cache))


class SilenceSource(ArraySource):
    """Silence for ``duration_ms``."""

    def __init__(self, duration_ms: float) -> None:
        super().__init__(np.zeros(int(round(duration_ms * TELEPHONY_RATE / 1000)), np.int16))


class MusicSource:
    """Music on hold: a file (or array) looped seamlessly until stopped."""

    def __init__(
        self,
        music: str | os.PathLike[str] | npt.NDArray[np.int16],
        offset_s: float = 0.0,
        crossfade_ms: float = 10.0,
        cache: PromptCache | None = None,
    ) -> None:
        samples = music if isinstance(music, np.ndarray) else load_prompt(music, cache)
        if samples.size < FRAME_SAMPLES:
            raise MediaFormatError(f"music on hold is too short ({samples.size} samples)")
        fade = min(int(crossfade_ms * TELEPHONY_RATE / 1000), samples.size // 4)
        if fade > 0:
            # Blend the tail into the head so that end -> start is continuous,
            # then drop the tail: the loop is samples[:-fade] with a smooth seam.
            s = samples.astype(np.float64)
            w = np.linspace(0.0, 1.0, fade, endpoint=False)
            s[:fade] = s[:fade] * w + s[-fade:] * (1.0 - w)
            samples = to_int16(s[:-fade])
        self._loop = samples
        self._pos = int(offset_s * TELEPHONY_RATE) % samples.size
        self._frame = np.empty(FRAME_SAMPLES, np.int16)
        self.finished = False
        self.loops = 0

    def read(self) -> npt.NDArray[np.int16] | None:
        if self.finished:
            return None
        n = self._loop.size
        filled = 0
        while filled < FRAME_SAMPLES:
            take = min(FRAME_SAMPLES - filled, n - self._pos)
            self._frame[filled : filled + take] = self._loop[self._pos : self._pos + take]
            filled += take
            self._pos += take
            if self._pos == n:
                self._pos = 0
                self.loops += 1
        return self._frame

    def stop(self) -> None:
        self.finished = True


class TtsSource(ArraySource):
    """Speaks ``text`` with espeak-ng (cached on disk by text, voice, language)."""

    def __init__(self, text: str, voice: str = "en", language: str | None = None, tts: "object | None" = None,
                 cache: PromptCache | None = None) -> None:
        from media.tts import default_tts

        engine = tts or default_tts()
        self.path = engine.synthesize(text, voice=voice, language=language)
        super().__init__(load_prompt(self.path, cache))


class Playlist:
    """Plays sources in order; one end report; optional barge-in.

    Args:
        sources: the sources (consumed lazily, so a generator may create
            them one at a time).
        barge_in: whether :meth:`barge_in` (a DTMF digit) stops playback.
        on_finished: called once as ``on_finished(playlist, reason)`` with
            ``"finished"``, ``"stopped"`` or ``"barge_in"``.
    """

    def __init__(
        self,
        sources: Iterable[Source],
        barge_in: bool = False,
        on_finished: Callable[["Playlist", str], None] | None = None,
    ) -> None:
        self._sources = iter(sources)
        self._current: Source | None = None
        self.allow_barge_in = barge_in
        self.on_finished = on_finished
        self.finished = False
        self.reason: str | None = None
        self.frames_played = 0

    def read(self) -> npt.NDArray[np.int16] | None:
        while not self.finished:
            if self._current is None:
                self._current = next(self._sources, None)
                if self._current is None:
                    self._finish("finished")
                    return None
            frame = self._current.read()
            if frame is not None:
                self.frames_played += 1
                return frame
            self._current = None
        return None

    def stop(self) -> None:
        """Stop now (the ``"stopped"`` end report)."""
        self._finish("stopped")

    def barge_in(self, digit: str = "") -> bool:
        """A digit arrived: stop if barge-in is allowed.  Returns whether it stopped."""
        if self.finished or not self.allow_barge_in:
            return False
        self._finish("barge_in")
        return True

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.reason = reason
        if self._current is not None:
            self._current.stop()
        if self.on_finished is not None:
            self.on_finished(self, reason)
