"""Loading flow files: TOML text → validated :class:`Flow`, keeping line numbers.

``tomllib`` returns plain dicts without positions, so :class:`LineMap`
scans the text itself and remembers the line of every table header
(``[nodes.menu]``, ``[[nodes.route.rules]]``) and every ``key =`` line,
indexed by the key's full path (``("nodes", "menu", "timeout_s")``; arrays
of tables add the element index).  The validator asks it for the line of
the most specific path it can, so each problem reads ``file:line: reason``.

The scanner understands what a line-oriented reader must: comments,
quoted and dotted keys, inline tables on one line, and multi-line strings
(skipped).  Anything it misses only makes a reported line less precise,
never changes what the flow means: the meaning always comes from tomllib.
"""
from __future__ import annotations

import datetime as dt
import pathlib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ivr.calendar import HolidayCalendar
from ivr.errors import FlowError, Problem
from ivr.nodes import Node
from ivr.prompts import PromptCatalog

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY_PART = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_KEYLINE = re.compile(rf"^\s*({_DOTTED})\s*=\s*(.*)$")
_INLINE_KEY = re.compile(rf"(?:^|[{{,])\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY_PART)
_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")

Path = tuple[Any, ...]


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for m in _PART.finditer(dotted):
        text = m.group(0)
        if text[0] in "\"'":
            text = text[1:-1]
        parts.append(text)
    return tuple(parts)


class LineMap:
    """Line numbers of tables and keys of one TOML text (1-based)."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        self._array_counts: dict[Path, int] = {}
        table: Path = ()
        in_multiline: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw
            if in_multiline is not None:
                if in_multiline in line:
                    in_multiline = None
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            header = _HEADER.match(line)
            if header:
                path = _split_key(header.group(2))
                if header.group(1) == "[[":
                    base = self._resolve(path)
                    index = self._array_counts.get(base, 0)
                    self._array_counts[base] = index + 1
                    self._lines.setdefault(base, number)
                    table = (*base, index)
                else:
                    table = self._resolve(path)
                self._lines.setdefault(table, number)
                continue
            keyline = _KEYLINE.match(line)
            if keyline:
                key = (*table, *_split_key(keyline.group(1)))
                self._lines.setdefault(key, number)
                value = keyline.group(2)
                for quote in ('"""', "'''"):
                    if value.startswith(quote) and value.count(quote) == 1:
                        in_multiline = quote
                if value.startswith("{"):
                    for inner in _INLINE_KEY.finditer(value):
                        self._lines.setdefault((*key, *_split_key(inner.group(1))), number)

    def _resolve(self, path: Path) -> Path:
        # [nodes.route.rules.0] never appears, but a sub-table of the current
        # element of an array of tables does: [nodes.x.rules.cond] → index.
        out: list[Any] = []
        for part in path:
            out.append(part)
            count = self._array_counts.get(tuple(out))
            if count and len(out) < len(path):
                out.append(count - 1)
        return tuple(out)

    def line(self, *path: Any) -> int:
        """Line of the most specific known prefix of ``path`` (1 if none)."""
        p: Path = tuple(path)
        while p:
            if p in self._lines:
                return self._lines[p]
            p = p[:-1]
        return 1


@dataclass(slots=True)
class Flow:
    """A loaded, validated flow: what the interpreter runs and ``draw`` draws."""

    name: str
    file: str
    start: str
    nodes: dict[str, Node]
    languages: tuple[str, ...]
    language: str
    fallback_language: str
    catalog: PromptCatalog
    timezone: dt.tzinfo
    holidays: HolidayCalendar
    tenant: str = "default"
    base_dir: pathlib.Path = field(default_factory=pathlib.Path)
    warnings: list[Problem] = field(default_factory=list)


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """tomllib with the syntax error turned into a ``file:line`` problem."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_POS.search(message)
        line = int(m.group(1)) if m else 1
        reason = _TOML_POS.sub("", message).strip()
        raise FlowError([Problem(file, line, f"TOML syntax error: {reason}")]) from None


def load_flow_text(text: str, file: str = "<flow>", base_dir: pathlib.Path | None = None,
                   prompt_root: pathlib.Path | None = None) -> Flow:
    """Load a flow from text; raises :class:`FlowError` listing every problem."""
    from ivr.validate import build_flow

    doc = parse_toml(text, file)
    flow, problems, warnings = build_flow(doc, LineMap(text), file, base_dir or pathlib.Path("."),
                                          prompt_root)
    if problems or flow is None:
        raise FlowError(problems)
    flow.warnings = sorted(warnings)
    return flow


def load_flow(path: str | pathlib.Path, prompt_root: str | pathlib.Path | None = None) -> Flow:
    """Read and validate a flow file.

    Args:
        path: the ``.toml`` flow file.
        prompt_root: overrides the flow's ``prompt_dir`` (directory holding one
            sub-directory per language code).
    Raises:
        FlowError: every problem found, each ``file:line: reason``.
        OSError: the file cannot be read.
    """
    path = pathlib.Path(path)
    text = path.read_text(encoding="utf-8")
    return load_flow_text(text, str(path), path.parent,
                          pathlib.Path(prompt_root) if prompt_root is not None else None)


def check_flow(path: str | pathlib.Path, prompt_root: str | pathlib.Path | None = None
               ) -> tuple[list[Problem], list[Problem]]:
    """Validate without raising: ``(errors, warnings)``."""
    try:
        flow = load_flow(path, prompt_root)
    except FlowError as exc:
        return exc.problems, []
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(str(path), 1, f"cannot read flow file: {exc}")], []
    return [], flow.warnings
