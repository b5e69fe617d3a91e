"""Find the line of a key path in TOML text, for one-line error messages.

``tomllib`` returns plain dicts with no positions, so this module scans the
text once and records, for every key it can see, the line where it is
defined.  It understands what configurations use: ``[table]`` and
``[[array.of.tables]]`` headers (array elements are numbered in order, nested
arrays relative to their parent element), dotted and quoted keys, and
``key = value`` lines.  Keys inside inline tables and multi-line arrays are
not indexed: a lookup falls back to the nearest indexed ancestor, which is
the line the user has to look at anyway.

Paths are tuples of ``str`` (table keys) and ``int`` (array-of-tables
indices), the same tuples the config validator builds.
"""
from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(#.*)?$")
_KEYVAL = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""\s*([A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')\s*(?:\.|$)""")


def split_key(text: str) -> tuple[str, ...]:
    """Split a dotted TOML key into its parts, unquoting quoted parts."""
    parts = []
    for m in _PART.finditer(text):
        raw = m.group(1)
        if raw.startswith('"'):
            raw = bytes(raw[1:-1], "utf-8").decode("unicode_escape")
        elif raw.startswith("'"):
            raw = raw[1:-1]
        parts.append(raw)
    return tuple(parts)


class LineIndex:
    """Key path → 1-based line number, built from TOML source text."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        self._scan(text)

    def _record(self, path: Path, line: int) -> None:
        for i in range(1, len(path) + 1):
            self._lines.setdefault(path[:i], line)

    def _scan(self, text: str) -> None:
        prefix: Path = ()
        # (table path without indices) -> index of its latest element
        array_counts: dict[Path, int] = {}
        in_multiline = None  # closing delimiter of a multi-line string
        depth = 0  # bracket depth of a multi-line array / inline table
        for lineno, line in enumerate(text.splitlines(), 1):
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if depth > 0:
                depth += _bracket_delta(line)
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            m = _HEADER.match(line)
            if m and not _KEYVAL.match(line):
                keys = split_key(m.group(2))
                prefix = self._resolve(keys, array_counts, is_array=m.group(1) == "[[")
                self._record(prefix, lineno)
                continue
            m = _KEYVAL.match(line)
            if m:
                path = prefix + split_key(m.group(1))
                self._record(path, lineno)
                rest = line[m.end():]
                for delim in ('"""', "'''"):
                    if rest.count(delim) == 1:
                        in_multiline = delim
                depth = max(0, _bracket_delta(rest))

    def _resolve(self, keys: tuple[str, ...], counts: dict[Path, int], is_array: bool) -> Path:
        # Each prefix of the header that names an array of tables refers to
        # its latest element (TOML v1.0.0 "Array of Tables").
        resolved: list[str | int] = []
        for i, key in enumerate(keys):
            resolved.append(key)
            ckey = tuple(resolved)
            if i == len(keys) - 1 and is_array:
                counts[ckey] = counts.get(ckey, -1) + 1
                resolved.append(counts[ckey])
            elif ckey in counts and i < len(keys) - 1:
                resolved.append(counts[ckey])
        return tuple(resolved)

    def line_of(self, path: Path) -> int:
        """The line defining ``path`` or its nearest indexed ancestor (1 if none)."""
        p = tuple(path)
        while p:
            if p in self._lines:
                return self._lines[p]
            p = p[:-1]
        return 1


def _bracket_delta(text: str) -> int:
    # Count [ { against ] } outside strings and comments.
    delta = 0
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c in "[{":
            delta += 1
        elif c in "]}":
            delta -= 1
        i += 1
    return delta


def format_path(path: Path) -> str:
    """``('agents', '1001', 'skills')`` → ``agents.1001.skills``; ints → ``[i]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_\-]+", part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + text
    return out or "(top level)"
