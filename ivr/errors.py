"""Errors of the IVR package.

Two families, after h11's split between the peer's fault and ours:

* :class:`FlowError` -- a flow file is wrong (syntax, unknown keys, dangling
  node references, missing prompt files, loops without input, ...).  It
  carries *every* problem found, each a :class:`Problem` printed as
  ``file:line: reason`` so an editor or a CI log can jump to it.
* :class:`IvrStateError` -- the engine fed the interpreter something that
  cannot happen (an event of an unknown type, a second ``CallStarted``).
  That is a bug in the caller of the interpreter: tests should see it.
"""
from __future__ import annotations

from dataclasses import dataclass


class IvrError(Exception):
    """Base class of every IVR error."""


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with a flow file, located by file and line."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class FlowError(IvrError, ValueError):
    """A flow file failed to load or validate; ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class IvrStateError(IvrError):
    """The interpreter was driven illegally (our bug, not the caller's)."""
