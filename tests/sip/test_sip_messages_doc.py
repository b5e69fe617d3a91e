"""Runs every ```python block of docs/sip-messages.md, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

import pytest

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sip-messages.md"


def test_doc_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"{DOC.name}#block{number}", "exec"), namespace)
