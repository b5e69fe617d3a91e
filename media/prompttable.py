"""Batched prompt playback: every leg's prompt read in one numpy gather per tick.

Theory of operation
-------------------
An IVR with hundreds of callers in menus has one prompt player per caller.
Reading each through its own :class:`media.player.ArraySource` costs a
Python call, a slice and a row copy per leg and tick.  A
:class:`PromptTable` instead keeps:

- one **sample arena** (``int16``) holding each distinct prompt array once,
  followed by one frame of zeros (so a frame that runs past a prompt's end
  reads silence without a mask).  Arrays are interned by identity: the
  engine's prompt cache hands every caller of a menu the same array, so 500
  callers hearing three prompts need three segments;
- per **player slot** (the media engine's player row): the arena offset of
  the next frame and the end offset of its prompt.

:meth:`PromptTable.read` then gathers ``arena[offset + 0..159]`` for every
active slot in one fancy-indexing operation straight into the rows of the
engine's input matrix, advances the offsets and returns the slots whose
prompt is done.  New prompts are appended at the arena's top; when it is
full the live segments are copied into a fresh arena (twice their size, so
compaction is amortised) and the offsets of the active slots are moved.

Only sources that are plain arrays played from their start qualify
(:func:`batchable`); anything else (music, playlists, generated tones) stays
on the per-player path of :class:`media.engine.MediaEngine`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from media.player import ArraySource, PromptSource, SilenceSource, TtsSource

__all__ = ["PromptTable", "batchable"]

FRAME = 160
_AR = np.arange(FRAME, dtype=np.int64)
_ARRAY_SOURCES = (ArraySource, PromptSource, SilenceSource, TtsSource)


def batchable(source: Any) -> bool:
    """Whether ``source`` is a plain array source not yet read (its samples can be played from the arena)."""
    return type(source) in _ARRAY_SOURCES and not source.finished and source.position_ms == 0.0


class PromptTable:
    """The sample arena and per-slot play positions (see the module docstring).

    Args:
        slots: initial number of player slots (grown by :meth:`ensure_slots`).
        samples: initial arena size in samples.
    """

    def __init__(self, slots: int = 16, samples: int = 1 << 16) -> None:
        self.arena = np.zeros(samples, np.int16)
        self.top = 0
        # id(array) -> [array, start, length, users]; the array is held so its id stays unique
        self._segments: dict[int, list[Any]] = {}
        self._off = np.zeros(slots, np.int64)
        self._end = np.zeros(slots, np.int64)
        self._seg_of: dict[int, int] = {}  # active slot -> segment key
        self._active = np.zeros(0, np.intp)
        self._dirty = False
        self.compactions = 0

    def __len__(self) -> int:
        return len(self._seg_of)

    def __contains__(self, slot: int) -> bool:
        return slot in self._seg_of

    def ensure_slots(self, n: int) -> None:
        """Make room for player slots ``0..n-1``."""
        if n > len(self._off):
            for name in ("_off", "_end"):
                new = np.zeros(n, np.int64)
                cur = getattr(self, name)
                new[: len(cur)] = cur
                setattr(self, name, new)

    def start(self, slot: int, samples: npt.NDArray[np.int16]) -> None:
        """Play ``samples`` (1-D int16) on player ``slot`` from the next :meth:`read`."""
        if slot in self._seg_of:
            self.stop(slot)
        self.ensure_slots(slot + 1)
        key = id(samples)
        seg = self._segments.get(key)
        if seg is None or seg[0] is not samples:
            start = self._alloc(samples.size)
            self.arena[start : start + samples.size] = samples
            seg = [samples, start, samples.size, 0]
            self._segments[key] = seg
        seg[3] += 1
        self._seg_of[slot] = key
        self._off[slot] = seg[1]
        self._end[slot] = seg[1] + seg[2]
        self._dirty = True

    def stop(self, slot: int) -> int:
        """Forget ``slot``'s prompt; returns how many samples of it were played."""
        key = self._seg_of.pop(slot, None)
        if key is None:
            return 0
        seg = self._segments[key]
        seg[3] -= 1
        self._dirty = True
        return int(min(self._off[slot], self._end[slot]) - seg[1])

    def read(self, out: np.ndarray, row0: int) -> npt.NDArray[np.intp]:
        """Write every active slot's next frame to ``out[row0 + slot]``; returns the slots now finished.

        A finished slot stays active (and would read silence) until :meth:`stop`.
        """
        if self._dirty:
            self._active = np.fromiter(self._seg_of, np.intp, len(self._seg_of))
            self._dirty = False
        s = self._active
        if not len(s):
            return s
        off = self._off[s]
        out[row0 + s] = self.arena[off[:, None] + _AR]
        off += FRAME
        self._off[s] = off
        return s[off >= self._end[s]]

    # -- arena -------------------------------------------------------------

    def _alloc(self, n: int) -> int:
        need = n + FRAME  # a frame of zeros after every segment
        if self.top + need > self.arena.size:
            self._compact(need)
        start = self.top
        self.top += need
        return start

    def _compact(self, need: int) -> None:
        """Copy the segments in use into a fresh arena, dropping the others; move active offsets."""
        live = {k: seg for k, seg in self._segments.items() if seg[3] > 0}
        used = sum(seg[2] + FRAME for seg in live.values())
        size = max(self.arena.size, 2 * (used + need))
        arena = np.zeros(size, np.int16)
        top = 0
        moved: dict[int, int] = {}
        for key, seg in live.items():
            arena[top : top + seg[2]] = self.arena[seg[1] : seg[1] + seg[2]]
            moved[key] = top - seg[1]
            seg[1] = top
            top += seg[2] + FRAME
        for slot, key in self._seg_of.items():
            self._off[slot] += moved[key]
            self._end[slot] += moved[key]
        self.arena, self.top, self._segments = arena, top, live
        self.compactions += 1
