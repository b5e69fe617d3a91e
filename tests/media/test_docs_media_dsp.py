"""Runs the examples of docs/media-dsp.md that follow an ``<!-- example: run -->`` marker."""
from __future__ import annotations

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "media-dsp.md"
BLOCKS = re.findall(r"<!-- example: run -->\s*```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_doc_has_runnable_examples():
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_doc_example_runs(code):
    exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_example__"})
