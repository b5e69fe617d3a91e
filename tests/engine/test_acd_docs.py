"""The runnable examples of docs/acd.md run (every ```python block)."""
from __future__ import annotations

import pathlib
import re

import pytest

pytestmark = pytest.mark.twin

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "acd.md"


def test_doc_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/acd.md has no python example"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
