"""Character-level fuzzing of the flow loader (issue 12): the example flows' TOML text with
random characters flipped, cut, duplicated or TOML punctuation spliced in only ever
raises :class:`ivr.errors.FlowError` with line-accurate problems, never a bare parser or
Python error.  Complements the line-level edits of test_ivr_properties.py.  Bounded:
200 examples, a few seconds."""
from __future__ import annotations

import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.errors import FlowError
from ivr.flow import load_flow_text

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "flows"
SOURCES = {p.name: p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.toml"))}
SPLICES = ["[", "]", "{", "}", "=", "\"", "'", "\n", "#", ",", ".", "[[", "\"\"\"", "\\", "\x00", "é", " = [",
           "nodes.", "type = ", "0x", "1e999", "-", ":"]


@st.composite
def mutated(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    text = SOURCES[name]
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, max(0, len(text) - 1)))
        op = draw(st.sampled_from(["flip", "cut", "dup", "splice"]))
        if op == "flip":
            text = text[:pos] + draw(st.characters(codec="utf-8")) + text[pos + 1:]
        elif op == "cut":
            text = text[:pos] + text[pos + draw(st.integers(1, 30)):]
        elif op == "dup":
            text = text[:pos] + text[pos:pos + draw(st.integers(1, 60))] + text[pos:]
        else:
            text = text[:pos] + draw(st.sampled_from(SPLICES)) + text[pos:]
    return name, text


def test_examples_exist() -> None:
    assert len(SOURCES) >= 2


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_flow_text_only_raises_flow_error(case: tuple[str, str]) -> None:
    name, text = case
    try:
        load_flow_text(text, name, EXAMPLES)
    except FlowError as exc:
        assert exc.problems and all(p.file == name and p.line >= 1 for p in exc.problems), exc.problems
