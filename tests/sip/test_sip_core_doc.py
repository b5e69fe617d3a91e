"""Run the runnable examples of docs/sip.md (blocks after ``<!-- runnable -->``)."""
from __future__ import annotations

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sip.md"
BLOCKS = re.findall(r"<!-- runnable -->\n```python\n(.*?)```", DOC.read_text(), re.S)


def test_doc_has_runnable_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_runnable_example(index):
    exec(compile(BLOCKS[index], f"docs/sip.md example {index + 1}", "exec"), {"__name__": "__doc_example__"})
