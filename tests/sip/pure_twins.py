"""Load the pure-Python sip.grammar/uri/headers/message under private names (for differential tests and benchmarks).

The modules are executed from their source files under other names, so their
end-of-file switch to the compiled twins does not fire; while they load,
``sip.grammar``, ``sip.uri`` and ``sip.headers`` in ``sys.modules`` point at
the pure copies so that the pure message module imports pure helpers.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

SIP_DIR = pathlib.Path(__file__).resolve().parents[2] / "sip"


def _load(name: str, filename: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, SIP_DIR / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_pure_message() -> types.ModuleType:
    """The pure-Python ``sip.message`` (with pure grammar and uri underneath)."""
    saved = {name: sys.modules.get(name) for name in ("sip.grammar", "sip.uri", "sip.headers")}
    try:
        sys.modules["sip.grammar"] = _load("sip_pure_grammar", "grammar.py")
        sys.modules["sip.uri"] = _load("sip_pure_uri", "uri.py")
        sys.modules["sip.headers"] = _load("sip_pure_headers", "headers.py")
        return _load("sip_pure_message", "message.py")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
