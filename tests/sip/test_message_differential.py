"""Differential test: compiled sip._message/_headers/_uri/_grammar vs the pure-Python twins.

Both must give identical results (same exception text and status hint, or
the same serialisation and field values) on every RFC 4475/5118 message and on
generated and mutated input.  Fails (never skips) when the compiled modules
are missing, except under CTIENGINE_PUREPYTHON=1.
"""

from __future__ import annotations

import os
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sip.message as active
from sip.errors import RemoteProtocolError


def _load_pure_message():  # type: ignore[no-untyped-def]
    # pure_twins.py sits beside this file; load it by path (no package needed)
    import importlib.util

    spec = importlib.util.spec_from_file_location("sip_pure_twins", pathlib.Path(__file__).with_name("pure_twins.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_pure_message()


pytestmark = pytest.mark.twin

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
CORPUS = sorted(p for d in ("rfc4475", "rfc5118") for p in (SHARED / d).iterdir() if p.suffix != ".tsv" and p.suffix != ".md")
PURE = _load_pure_message()
FORCED_PURE = os.environ.get("CTIENGINE_PUREPYTHON", "") not in ("", "0")


def test_compiled_modules_are_active() -> None:
    import sip.grammar
    import sip.headers
    import sip.uri

    compiled = [active.parse_message, sip.uri.parse_uri, sip.grammar.parse_params, sip.headers.canonical_name]
    kinds = {type(f).__name__ for f in compiled}
    if FORCED_PURE:
        assert kinds == {"function"}
    else:
        assert kinds == {"cython_function_or_method"}, "sip._message/_headers/_uri/_grammar not built (or stale): run make build"


def _outcome(module, data: bytes) -> tuple:  # type: ignore[no-untyped-def]
    try:
        msg = module.parse_message(data)
    except RemoteProtocolError as exc:
        resp = module.error_response(data, exc)
        return ("error", exc.message, exc.status_hint, None if resp is None else bytes(resp))
    fields = [bytes(msg), type(msg).__name__, msg.call_id, msg.cseq]
    fields += [(v.transport, v.host, v.port, sorted(v.params.items(), key=str)) for v in msg.via]
    fields += [msg.from_.tag, msg.to.tag, msg.from_.display_name, str(msg.to.uri), msg.max_forwards]
    fields += [str(c.uri) for c in msg.contact]
    return ("ok", *fields)


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_same_results_on_torture_corpus(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert _outcome(active, data) == _outcome(PURE, data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([p.read_bytes() for p in CORPUS]), st.integers(0, 10_000), st.binary(max_size=6))
def test_same_results_on_mutations(data: bytes, pos: int, junk: bytes) -> None:
    pos %= max(1, len(data))
    mutated = data[:pos] + junk + data[pos + len(junk) :]
    assert _outcome(active, mutated) == _outcome(PURE, mutated)
