"""Hear-set rules as data: every ARCHITECTURE.md row gives the expected matrix."""
from __future__ import annotations

import pytest

from media.errors import LocalMediaError
from media.room import HearSet, MemberKind, Room, apply_hear_set


def _room(*legs: str, music: bool = False, recorder: bool = False) -> Room:
    r = Room("r1")
    for leg in legs:
        r.join(leg)
    if music:
        r.join("moh", MemberKind.PLAYER)
    if recorder:
        r.join("rec", MemberKind.RECORDER, channels=[{"caller"}, {"agent"}])
    return r


def _hears(r: Room) -> dict[str, set[str]]:
    return {k: set(v) for k, v in r.describe().items()}


def test_default_everyone_hears_everyone_else() -> None:
    r = _room("a", "b", "c")
    assert _hears(r) == {"a": {"b", "c"}, "b": {"a", "c"}, "c": {"a", "b"}}


@pytest.mark.parametrize(
    "row, legs, expected",
    [
        (HearSet.TWO_PARTY, ("caller", "agent"), {"caller": {"agent"}, "agent": {"caller"}}),
        (HearSet.HOLD, ("caller", "agent"), {"caller": {"moh"}, "agent": set()}),
        (HearSet.CONSULT, ("caller", "agent"), {"caller": {"moh"}, "agent": set()}),
        (HearSet.THREE_WAY, ("caller", "agent", "sup"),
         {"caller": {"agent", "sup"}, "agent": {"caller", "sup"}, "sup": {"caller", "agent"}}),
        (HearSet.BARGE, ("caller", "agent", "sup"),
         {"caller": {"agent", "sup"}, "agent": {"caller", "sup"}, "sup": {"caller", "agent"}}),
        (HearSet.LISTEN, ("caller", "agent", "sup"),
         {"caller": {"agent"}, "agent": {"caller"}, "sup": {"caller", "agent"}}),
        (HearSet.WHISPER, ("caller", "agent", "sup"),
         {"caller": {"agent"}, "agent": {"caller", "sup"}, "sup": {"caller", "agent"}}),
    ],
)
def test_rows(row: HearSet, legs: tuple[str, ...], expected: dict[str, set[str]]) -> None:
    r = _room(*legs, music=True, recorder=True)
    apply_hear_set(r, row, caller="caller", agent="agent", supervisor="sup" if "sup" in legs else None, music="moh")
    got = _hears(r)
    # rows without music leave the player as it was (everyone may hear it);
    # the engine only adds a player to a room for hold/consult
    if row not in (HearSet.HOLD, HearSet.CONSULT):
        for k in expected:
            got[k].discard("moh")
    assert {k: got[k] for k in expected} == expected
    # the recorder keeps caller left, agent right in every row
    assert got["rec[0]"] == {"caller"} and got["rec[1]"] == {"agent"}


def test_matrix_shape_and_values() -> None:
    r = _room("caller", "agent", "sup", recorder=True)
    apply_hear_set(r, HearSet.WHISPER, caller="caller", agent="agent", supervisor="sup")
    outputs, inputs, hear = r.matrix()
    assert inputs == ["caller", "agent", "sup"]
    assert outputs == [("caller", 0), ("agent", 0), ("sup", 0), ("rec", 0), ("rec", 1)]
    assert hear.tolist() == [
        [0, 1, 0],
        [1, 0, 1],
        [1, 1, 0],
        [1, 0, 0],
        [0, 1, 0],
    ]


def test_errors_and_versions() -> None:
    r = _room("caller", "agent")
    v = r.version
    with pytest.raises(LocalMediaError, match="member caller already joined"):
        r.join("caller")
    with pytest.raises(LocalMediaError, match="no member ghost"):
        r.leave("ghost")
    with pytest.raises(LocalMediaError, match="only a recorder has channels"):
        r.join("rec", MemberKind.RECORDER)
    with pytest.raises(LocalMediaError, match="hear set hold needs a music member"):
        apply_hear_set(r, HearSet.HOLD, caller="caller", agent="agent")
    with pytest.raises(LocalMediaError, match="is not a recorder"):
        r.set_hearing("caller", channels=[{"agent"}])
    assert r.version == v
    r.set_hearing("caller", hears={"agent"})
    assert r.version == v + 1
    r.leave("agent")
    assert r.describe() == {"caller": []}
