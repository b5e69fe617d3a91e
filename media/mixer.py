"""The mixer: every output of every room in a few batched numpy products.

Theory of operation
-------------------
Each tick the engine holds one ``int16[n_inputs, 160]`` array ``inputs``:
row 0 is silence, then one row per speaking member (a leg's decoded frame
after its playout buffer, a player's next frame).  For each room,
:meth:`media.room.Room.matrix` gives ``hear[output, input]`` (0/1); the
output of a member is ``sum_j hear[o, j] * inputs[j]`` -- the sum of what it
hears, itself excluded by the rules -- saturated to int16.

:func:`compile_plan` turns all rooms into a :class:`MixPlan` once per
membership change (not per tick): rooms are grouped into buckets by their
padded shape (outputs and inputs rounded up to a power of two), and each
bucket stores ``in_idx[R, Pi]`` (rows of ``inputs``, padding → row 0),
``hear[R, Po, Pi]`` (float32; padding → 0) and ``out_idx[R, Po]`` (rows of
the output array; padding → a scratch row).  :func:`mix` then does per
bucket one gather, one batched ``matmul`` and one clip:

    x = inputs[in_idx]            # (R, Pi, 160)
    y = hear @ x                  # (R, Po, 160), exact in float32 (|sum| < 2**24)
    out[out_idx] = clip(y)        # saturation to int16

so the cost grows with the number of members, not with Python calls per
room.  1,000 three-party rooms take well under a millisecond on one core
(``bench/test_media_mixer.py``).

Output rows are numbered room by room in :attr:`MixPlan.output_keys`
(``(room_id, member_id, channel)``); the engine maps them to legs (a leg in
two rooms, e.g. an agent during a consult, gets the saturated sum of its
rows) and to recorder channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from media.errors import LocalMediaError
from media.room import Room

__all__ = ["MixPlan", "Mixer", "compile_plan", "mix", "mix_naive", "FRAME_SAMPLES"]

FRAME_SAMPLES = 160


def _pad(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


@dataclass(slots=True)
class _Bucket:
    in_idx: np.ndarray
    hear: np.ndarray
    out_idx: np.ndarray
    # work arrays reused every tick: fresh multi-megabyte arrays would be
    # mmap'ed and page-faulted in again on every call
    x16: np.ndarray = None  # type: ignore[assignment]
    x: np.ndarray = None  # type: ignore[assignment]
    y: np.ndarray = None  # type: ignore[assignment]

    def buffers(self, samples: int) -> None:
        r, po, pi = self.hear.shape
        if self.x is None or self.x.shape[2] != samples:
            self.x16 = np.empty((r, pi, samples), np.int16)
            self.x = np.empty((r, pi, samples), np.float32)
            self.y = np.empty((r, po, samples), np.float32)


@dataclass(slots=True)
class MixPlan:
    """All rooms compiled for :func:`mix`."""

    buckets: list[_Bucket] = field(default_factory=list)
    output_keys: list[tuple[str, str, int]] = field(default_factory=list)
    """``(room_id, member_id, channel)`` of each output row."""

    @property
    def n_outputs(self) -> int:
        """Number of real output rows (a scratch row follows them)."""
        return len(self.output_keys)


def compile_plan(rooms: Iterable[Room], input_row: Mapping[str, int]) -> MixPlan:
    """Compile rooms into a mixing plan.

    Args:
        rooms: the rooms to mix (any order; rooms without outputs are skipped).
        input_row: row of ``inputs`` for each speaking member id; a member
            missing here is mixed as silence (e.g. a leg with no audio yet).

    Returns:
        The :class:`MixPlan`; output rows are numbered in room order.
    """
    groups: dict[tuple[int, int], list[tuple[str, list, list, np.ndarray]]] = {}
    n_out = 0
    for room in rooms:
        outputs, inputs, hear = room.matrix()  # cached per room version
        if not outputs:
            continue
        groups.setdefault((_pad(len(outputs)), _pad(max(1, len(inputs)))), []).append(
            (room.room_id, outputs, inputs, hear))
        n_out += len(outputs)
    scratch = n_out
    keys: list[tuple[str, str, int]] = []
    buckets = []
    for (po, pi), items in groups.items():
        r_count = len(items)
        in_idx = np.zeros((r_count, pi), np.intp)
        h = np.zeros((r_count, po, pi), np.float32)
        out_idx = np.full((r_count, po), scratch, np.intp)
        for r, (room_id, outputs, inputs, hear) in enumerate(items):
            no, ni = hear.shape
            if ni:
                in_idx[r, :ni] = [input_row.get(m, 0) for m in inputs]
                h[r, :no, :ni] = hear
            out_idx[r, :no] = np.arange(len(keys), len(keys) + no)
            keys.extend([(room_id, m, c) for m, c in outputs])
        buckets.append(_Bucket(in_idx, h, out_idx))
    return MixPlan(buckets, keys)


def mix(plan: MixPlan, inputs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Compute every output row of the plan.

    Args:
        plan: from :func:`compile_plan`.
        inputs: ``int16[n_inputs, 160]``, row 0 silence.
        out: optional ``int16[>= n_outputs + 1, 160]`` to fill (the last row
            is scratch for padding).

    Returns:
        ``int16[n_outputs + 1, 160]``: row ``k`` is output ``plan.output_keys[k]``.

    Raises:
        LocalMediaError: ``inputs`` is not a 2-D int16 array.
    """
    if inputs.dtype != np.int16 or inputs.ndim != 2:
        raise LocalMediaError(f"mixer inputs must be int16[n, samples], got {inputs.dtype}{list(inputs.shape)}")
    if out is None:
        out = np.zeros((plan.n_outputs + 1, inputs.shape[1]), np.int16)
    for b in plan.buckets:
        b.buffers(inputs.shape[1])
        np.take(inputs, b.in_idx, axis=0, out=b.x16)
        b.x[...] = b.x16
        np.matmul(b.hear, b.x, out=b.y)
        np.clip(b.y, -32768.0, 32767.0, out=b.y)
        out[b.out_idx] = b.y  # float -> int16 cast is exact: y holds integers in range
    return out


def mix_naive(rooms: Iterable[Room], frames: Mapping[str, np.ndarray]) -> dict[tuple[str, str, int], np.ndarray]:
    """Reference mixer: a Python loop over rooms and listeners (tests, baseline).

    ``frames`` maps a speaking member id to its int16 frame; missing ones are silence.
    """
    result: dict[tuple[str, str, int], np.ndarray] = {}
    for room in rooms:
        outputs, inputs, hear = room.matrix()
        for o, (member, channel) in enumerate(outputs):
            acc = np.zeros(FRAME_SAMPLES, np.int32)
            for j, s in enumerate(inputs):
                if hear[o, j] and s in frames:
                    acc += frames[s]
            result[(room.room_id, member, channel)] = np.clip(acc, -32768, 32767).astype(np.int16)
    return result


class _Slots:
    """One bucket of the incremental mixer: rooms of one padded shape in fixed slots."""

    def __init__(self, po: int, pi: int, capacity: int = 16) -> None:
        self.po, self.pi = po, pi
        self.capacity = 0
        self.free: list[int] = []
        self.room_at: list[str | None] = []
        self.in_idx = np.zeros((0, pi), np.intp)
        self.hear = np.zeros((0, po, pi), np.float32)
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        old = self.capacity
        in_idx = np.zeros((capacity, self.pi), np.intp)
        hear = np.zeros((capacity, self.po, self.pi), np.float32)
        in_idx[:old] = self.in_idx
        hear[:old] = self.hear
        self.in_idx, self.hear = in_idx, hear
        self.room_at.extend([None] * (capacity - old))
        self.free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity
        self.x16 = np.empty((capacity, self.pi, FRAME_SAMPLES), np.int16)
        self.x = np.empty((capacity, self.pi, FRAME_SAMPLES), np.float32)
        self.y = np.empty((capacity, self.po, FRAME_SAMPLES), np.float32)


@dataclass(slots=True)
class _Entry:
    key: tuple[int, int]
    index: int
    version: int
    in_rows: tuple[int, ...]
    outputs: list[tuple[str, int]]


class Mixer:
    """The mixing plan kept up to date incrementally (what the engine uses).

    :meth:`sync` looks at every room's ``version`` and the input rows of its
    speakers and re-packs only the rooms that changed into fixed slots of
    per-shape buckets; a room keeps its slot, so its output rows keep their
    numbers until a bucket has to grow (then :attr:`layout` increases and
    every row may move).  :meth:`mix` writes each bucket's outputs into its
    own contiguous region of the output array (free and padding rows are
    silence), so no scatter is needed.  ``output_keys[row]`` names each row
    (``None`` for free or padding rows).
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, int], _Slots] = {}
        self._rooms: dict[str, _Entry] = {}
        self._offsets: dict[tuple[int, int], int] = {}
        self.layout = 0
        self.output_keys: list[tuple[str, str, int] | None] = []
        self.n_rows = 0
        self._last_rows: dict[str, int] = {}
        # what changed since output_keys was last named (rows of released slots, re-packed rooms)
        self._named_layout = -1
        self._cleared: list[tuple[tuple[int, int], int]] = []
        self._touched: set[str] = set()

    def sync(self, rooms: Iterable[Room], input_row: Mapping[str, int]) -> bool:
        """Bring the plan up to date; returns True when any output row changed meaning."""
        changed = False
        seen: set[str] = set()
        rows_same = input_row == self._last_rows  # one C-level compare instead of one per room
        self._last_rows = dict(input_row)
        for room in rooms:
            e = self._rooms.get(room.room_id)
            if rows_same and e is not None and e.version == room.version:
                seen.add(room.room_id)
                continue
            outputs, inputs, hear = room.matrix()
            if not outputs:
                if e is not None:
                    self._release(room.room_id)
                    changed = True
                continue
            seen.add(room.room_id)
            in_rows = tuple(input_row.get(m, 0) for m in inputs)
            if e is not None and e.version == room.version and e.in_rows == in_rows:
                continue
            key = (_pad(len(outputs)), _pad(max(1, len(inputs))))
            if e is None or e.key != key:
                if e is not None:
                    self._release(room.room_id)
                e = self._allocate(room.room_id, key)
            b = self._buckets[key]
            no, ni = hear.shape
            b.in_idx[e.index] = 0
            b.in_idx[e.index, :ni] = in_rows
            b.hear[e.index] = 0
            b.hear[e.index, :no, :ni] = hear
            e.version, e.in_rows, e.outputs = room.version, in_rows, outputs
            self._touched.add(room.room_id)
            changed = True
        for room_id in [r for r in self._rooms if r not in seen]:
            self._release(room_id)
            changed = True
        if changed:
            self._name_rows()
        return changed

    def _allocate(self, room_id: str, key: tuple[int, int]) -> _Entry:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Slots(*key)
            self._relayout()
        if not b.free:
            b.grow(b.capacity * 2)
            self._relayout()
        index = b.free.pop()
        b.room_at[index] = room_id
        e = self._rooms[room_id] = _Entry(key, index, -1, (), [])
        return e

    def _release(self, room_id: str) -> None:
        e = self._rooms.pop(room_id)
        self._cleared.append((e.key, e.index))
        b = self._buckets[e.key]
        b.hear[e.index] = 0
        b.in_idx[e.index] = 0
        b.room_at[e.index] = None
        b.free.append(e.index)

    def _relayout(self) -> None:
        off = 0
        for key, b in self._buckets.items():
            self._offsets[key] = off
            off += b.capacity * b.po
        self.n_rows = off
        self.layout += 1

    def _name_rows(self) -> None:
        # only the slots that changed are renamed, unless the layout moved every row
        full = self._named_layout != self.layout or len(self.output_keys) != self.n_rows
        if full:
            keys: list[tuple[str, str, int] | None] = [None] * self.n_rows
            names = self._rooms.keys()
        else:
            keys = self.output_keys
            for key, index in self._cleared:
                base = self._offsets[key] + index * key[0]
                keys[base : base + key[0]] = [None] * key[0]
            names = [r for r in self._touched if r in self._rooms]
        for room_id in names:
            e = self._rooms[room_id]
            base = self._offsets[e.key] + e.index * e.key[0]
            if not full:
                keys[base : base + e.key[0]] = [None] * e.key[0]
            for j, (member, channel) in enumerate(e.outputs):
                keys[base + j] = (room_id, member, channel)
        self.output_keys = keys
        self._named_layout = self.layout
        self._cleared.clear()
        self._touched.clear()

    def rows_of(self, room_id: str) -> list[tuple[str, int, int]]:
        """``(member_id, channel, row)`` of a room's outputs."""
        e = self._rooms[room_id]
        base = self._offsets[e.key] + e.index * e.key[0]
        return [(m, c, base + j) for j, (m, c) in enumerate(e.outputs)]

    def mix(self, inputs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Every output row into ``out`` (``int16[>= n_rows, 160]``); see :func:`mix`."""
        for key, b in self._buckets.items():
            off = self._offsets[key]
            np.take(inputs, b.in_idx, axis=0, out=b.x16)
            b.x[...] = b.x16
            np.matmul(b.hear, b.x, out=b.y)
            np.clip(b.y, -32768.0, 32767.0, out=b.y)
            out[off : off + b.capacity * b.po] = b.y.reshape(-1, inputs.shape[1])
        return out
