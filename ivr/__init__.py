"""IVR flows as TOML data: loader, validator, sans-IO interpreter, graph export.

Entry points: :func:`ivr.flow.load_flow` (validate and load a flow file),
:class:`ivr.interpreter.Interpreter` (run it for one call, events in and
actions out), :mod:`ivr.runner` (asyncio driver), :mod:`ivr.cli` (``draw`` and
``check``).  See ``docs/ivr.md``.
"""
from ivr.errors import FlowError, IvrError, IvrStateError, Problem
from ivr.flow import Flow, check_flow, load_flow
from ivr.interpreter import Interpreter

__all__ = ["Flow", "FlowError", "Interpreter", "IvrError", "IvrStateError", "Problem", "check_flow", "load_flow"]
