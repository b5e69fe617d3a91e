"""The batched mixer equals the per-room reference, saturates, and handles padding."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.errors import LocalMediaError
from media.mixer import compile_plan, mix, mix_naive
from media.room import HearSet, MemberKind, Room, apply_hear_set


def _inputs(ids: list[str], rng: np.random.Generator, amp: int = 32767):
    rows = {m: i + 1 for i, m in enumerate(ids)}
    inputs = np.zeros((len(ids) + 1, 160), np.int16)
    inputs[1:] = rng.integers(-amp, amp + 1, (len(ids), 160), dtype=np.int16)
    frames = {m: inputs[rows[m]] for m in ids}
    return rows, inputs, frames


def _compare(rooms: list[Room], rows, inputs, frames) -> None:
    plan = compile_plan(rooms, rows)
    out = mix(plan, inputs)
    ref = mix_naive(rooms, frames)
    assert len(ref) == plan.n_outputs
    for k, key in enumerate(plan.output_keys):
        np.testing.assert_array_equal(out[k], ref[key], err_msg=str(key))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_batched_equals_naive_random_rooms(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    rooms = []
    ids = []
    for r, n in enumerate(sizes):
        room = Room(f"r{r}")
        members = [f"r{r}m{i}" for i in range(n)]
        for m in members:
            room.join(m)
        ids += members
        # random hear rules
        for m in members:
            if rng.random() < 0.5:
                room.set_hearing(m, hears=set(rng.choice(members, rng.integers(0, n + 1), replace=False).tolist()))
            if rng.random() < 0.3:
                room.set_hearing(m, heard_by=set(rng.choice(members, rng.integers(0, n + 1), replace=False).tolist()))
        if n >= 2 and rng.random() < 0.5:
            room.join(f"r{r}rec", MemberKind.RECORDER, channels=[{members[0]}, {members[1]}])
        rooms.append(room)
    rows, inputs, frames = _inputs(ids, rng)
    _compare(rooms, rows, inputs, frames)


def test_saturation_to_int16() -> None:
    room = Room("r")
    for m in ("a", "b", "c"):
        room.join(m)
    inputs = np.array([[0] * 160, [30000] * 160, [30000] * 160, [-30000] * 160], np.int16)
    plan = compile_plan([room], {"a": 1, "b": 2, "c": 3})
    out = mix(plan, inputs)
    got = {plan.output_keys[k][1]: int(out[k, 0]) for k in range(3)}
    assert got == {"a": 0, "b": 0, "c": 32767}
    inputs[1:] = -30000
    out = mix(plan, inputs)
    assert int(out[0, 0]) == -32768


def test_members_without_input_are_silence_and_player_has_no_output() -> None:
    room = Room("r")
    room.join("caller")
    room.join("agent")
    room.join("moh", MemberKind.PLAYER)
    apply_hear_set(room, HearSet.HOLD, caller="caller", agent="agent", music="moh")
    rng = np.random.default_rng(1)
    rows, inputs, frames = _inputs(["caller", "moh"], rng)  # agent has no audio yet
    plan = compile_plan([room], rows)
    assert [k[1] for k in plan.output_keys] == ["caller", "agent"]
    out = mix(plan, inputs)
    np.testing.assert_array_equal(out[0], frames["moh"])
    assert not out[1].any()


def test_mix_rejects_wrong_dtype() -> None:
    plan = compile_plan([], {})
    with pytest.raises(LocalMediaError, match="int16"):
        mix(plan, np.zeros((2, 160), np.float32))
    assert mix(plan, np.zeros((1, 160), np.int16)).shape == (1, 160)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_incremental_mixer_equals_naive_through_changes(seed: int) -> None:
    """Mixer.sync after random joins, leaves, rule changes, new and removed rooms
    (buckets grow past 16 slots) always mixes like the naive reference."""
    from media.mixer import Mixer

    rng = np.random.default_rng(seed)
    ids = [f"m{i}" for i in range(120)]
    rows, inputs, frames = _inputs(ids, rng, amp=20000)
    rooms: dict[str, Room] = {}
    mixer = Mixer()
    for step in range(12):
        for _ in range(int(rng.integers(1, 12))):
            op = rng.integers(0, 5)
            if op == 0 or not rooms:
                rid = f"r{step}-{len(rooms)}-{rng.integers(1 << 30)}"
                room = rooms[rid] = Room(rid)
                for m in rng.choice(ids, int(rng.integers(1, 6)), replace=False):
                    room.join(str(m))
            else:
                room = rooms[str(rng.choice(sorted(rooms)))]
                members = list(room.members)
                if op == 1:
                    del rooms[room.room_id]
                elif op == 2 and members:
                    room.leave(str(rng.choice(members)))
                elif op == 3:
                    free = [m for m in ids if m not in room.members]
                    room.join(str(rng.choice(free)))
                elif members:
                    room.set_hearing(str(rng.choice(members)),
                                     hears=set(rng.choice(members, int(rng.integers(0, len(members) + 1)), replace=False).tolist()))
        # speakers' input rows move too (a leg stops receiving -> silence)
        row_now = {m: r for m, r in rows.items() if rng.random() > 0.05}
        mixer.sync(rooms.values(), row_now)
        out = mixer.mix(inputs, np.zeros((max(1, mixer.n_rows), 160), np.int16))
        ref = mix_naive(rooms.values(), {m: frames[m] for m in row_now})
        got = {k: out[i] for i, k in enumerate(mixer.output_keys) if k is not None}
        assert set(got) == set(ref)
        # output_keys is renamed incrementally: no stale row may name a key twice
        assert sum(k is not None for k in mixer.output_keys) == len(ref)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=str(k))
