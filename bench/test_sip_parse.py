"""Parser micro-benchmarks: parse+serialise of a typical INVITE and 200 OK.

Each case runs beside a thin regex baseline in the same run (the kind of
parsing a stateless responder does: start line, headers into a dict, body by
Content-Length, serialise by joining), so results are read as ratios.

``parse_serialise``/``transaction_fields`` use ``sip.message`` as imported
(the compiled ``sip._message`` after ``make build``); the ``pure_*`` cases run
the same source as pure Python in the same process.

Run: ``.venv/bin/python -m pytest -q bench/test_sip_parse.py --benchmark-json=bench/results/sip_parse.json``
"""

from __future__ import annotations

import re

import pytest

from bench.sip_samples import INVITE, OK_200
from tests.sip.pure_twins import load_pure_message
from sip.message import Request, clear_parse_caches, parse_message


PURE = load_pure_message()
COMPILED = parse_message.__class__.__name__ == "cython_function_or_method"


def pure_parse_serialise(data: bytes) -> bytes:
    """The same validating parse+serialise on the pure-Python twin."""
    return bytes(PURE.parse_message(data))


def pure_transaction_fields(data: bytes) -> tuple:
    msg = PURE.parse_message(data, validate=False)
    top = msg.via[0]
    return (top.branch, top.host, top.port, msg.cseq, msg.call_id, msg.from_.tag, msg.to.tag)

_HEADER_RE = re.compile(rb"^([^:\r\n]+):[ \t]*(.*?)[ \t]*$", re.M)


def baseline_parse_serialise(data: bytes) -> bytes:
    """Thin regex parser: no validation, no structure, no folding or compact forms."""
    head, _, rest = data.partition(b"\r\n\r\n")
    start, _, block = head.partition(b"\r\n")
    headers = {name.strip().lower(): value for name, value in _HEADER_RE.findall(block)}
    body = rest[: int(headers.get(b"content-length", b"0"))]
    lines = [start] + [name + b": " + value for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_serialise(data: bytes) -> bytes:
    return bytes(parse_message(data))


def parse_serialise_cold(data: bytes) -> bytes:
    """Validating parse with the Via/address/URI caches emptied first (a new call)."""
    clear_parse_caches()
    return bytes(parse_message(data))


def transaction_fields_cold(data: bytes) -> tuple:
    clear_parse_caches()
    return transaction_fields(data)


def parse_serialise_lazy(data: bytes) -> bytes:
    return bytes(parse_message(data, validate=False))


def transaction_fields(data: bytes) -> tuple:
    """What a transaction/dialog layer reads from each message."""
    msg = parse_message(data, validate=False)
    top = msg.via[0]
    return (top.branch, top.host, top.port, msg.cseq, msg.call_id, msg.from_.tag, msg.to.tag)


def build_response(data: bytes) -> bytes:
    req = parse_message(data)
    assert isinstance(req, Request)
    return bytes(req.response(200, to_tag="as5f3c2d1e"))


CASES = {"invite": INVITE, "ok200": OK_200}


def _variants(data: bytes, count: int = 5000) -> list[bytes]:
    """The same message as in a stream of new calls: unique Call-ID, tags, branch."""
    out = []
    for i in range(count):
        out.append(
            data.replace(b"1-12345@", b"%d-12345@" % i)
            .replace(b"z9hG4bK-12345-1-0", b"z9hG4bK-%d-1-0" % i)
            .replace(b"12345SIPpTag001", b"%dSIPpTag001" % i)
            .replace(b"as5f3c2d1e", b"as%dx" % i)
        )
    return out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    "impl",
    [baseline_parse_serialise, parse_serialise, transaction_fields, pure_parse_serialise, pure_transaction_fields],
    ids=lambda f: f.__name__,
)
def test_new_calls(benchmark: pytest.FixtureRequest, name: str, impl: object) -> None:
    """Each round parses the next of 5000 distinct messages (tags/branch/Call-ID differ)."""
    benchmark.group = f"sip-parse-{name}-new-calls"
    variants = _variants(CASES[name])
    state = {"i": 0}

    def run() -> object:
        i = state["i"] = (state["i"] + 1) % len(variants)
        return impl(variants[i])  # type: ignore[operator]

    assert benchmark(run)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    "impl",
    [
        baseline_parse_serialise,
        parse_serialise,
        parse_serialise_cold,
        parse_serialise_lazy,
        transaction_fields,
        transaction_fields_cold,
    ],
    ids=lambda f: f.__name__,
)
def test_parse_serialise(benchmark: pytest.FixtureRequest, name: str, impl: object) -> None:
    benchmark.group = f"sip-parse-{name}"
    result = benchmark(impl, CASES[name])  # type: ignore[operator]
    assert result


def test_make_response(benchmark: pytest.FixtureRequest) -> None:
    benchmark.group = "sip-parse-invite"
    assert benchmark(build_response, INVITE).startswith(b"SIP/2.0 200 OK")
