"""The runnable examples of docs/media.md run (real sockets on loopback)."""
from __future__ import annotations

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "media.md"


def test_complete_example_runs() -> None:
    text = DOC.read_text()
    section = text.split("## A complete example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, f"{DOC}:complete-example", "exec"), {})
