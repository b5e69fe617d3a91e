"""Differential tests: compiled sip._stack/_transaction/_dialog/_timers/_sdp vs their pure-Python twins.

* The SIP core: ``stack_transcript.py`` runs seeded call flows between two
  stacks over a lossy fake link (every retransmission timer, CANCEL, 486,
  re-INVITE glare-free INFO, OPTIONS, 2xx give-up, the RFC 4475/5118 corpus)
  once with the compiled modules and once under ``CTIENGINE_PUREPYTHON=1``;
  every datagram and every event must be identical.
* SDP: parse, serialise and answer agree (same text, same error message) on
  sample offers and on mutations of them.

Both fail (never skip) when the compiled modules are missing, except under
CTIENGINE_PUREPYTHON=1.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sip.sdp as active_sdp
from sip.errors import SdpError

pytestmark = pytest.mark.twin

HERE = pathlib.Path(__file__).resolve().parent
FORCED_PURE = os.environ.get("CTIENGINE_PUREPYTHON", "") not in ("", "0")
COMPILED = ["sip._dialog", "sip._message", "sip._sdp", "sip._stack", "sip._timers", "sip._transaction"]


def _transcript(pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CTIENGINE_PUREPYTHON"}
    if pure:
        env["CTIENGINE_PUREPYTHON"] = "1"
    out = subprocess.run([sys.executable, str(HERE / "stack_transcript.py")], env=env, capture_output=True,
                         timeout=120, check=True)
    return json.loads(out.stdout)


def test_core_transcript_compiled_equals_pure() -> None:
    compiled, pure = _transcript(False), _transcript(True)
    assert pure["modules"] == [m.replace("._", ".") for m in COMPILED]
    if not FORCED_PURE:
        assert compiled["modules"] == COMPILED, "compiled sip core not built (or stale): run make build"
    assert len(compiled["datagrams"]) > 300 and len(compiled["transcript"]) > 300
    for key in ("datagrams", "foreign", "transcript", "transactions", "dialogs"):
        assert compiled[key] == pure[key], key


def _pure_sdp():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("sip_pure_sdp", HERE.parents[1] / "sip" / "sdp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = _pure_sdp()


def test_compiled_sdp_is_active() -> None:
    kind = type(active_sdp.SessionDescription.parse.__func__).__name__
    assert kind == ("function" if FORCED_PURE else "cython_function_or_method"), \
        "sip._sdp not built (or stale): run make build"
    assert type(PURE.SessionDescription.parse.__func__).__name__ == "function"


OFFERS = [
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
    b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=call\r\ni=info\r\nc=IN IP4 0.0.0.0\r\nb=AS:64\r\nt=0 0\r\n"
    b"a=sendonly\r\nm=audio 5004 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    b"a=ptime:30\r\nm=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
    b"v=0\r\no=- 7 7 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\nc=IN IP6 ::1\r\n"
    b"m=audio 7000 RTP/SAVP 0\r\nc=IN IP6 ::1\r\nm=audio 7002 RTP/AVP 18 8\r\nc=IN IP6 2001:db8::5\r\n"
    b"a=recvonly\r\n",
    b"v=0\r\no=- 1 1 IN IP4 host.example\r\ns=-\r\nc=IN IP4 host.example\r\nt=0 0\r\n"
    b"m=audio 9 RTP/AVP 9 3\r\na=inactive\r\n",
]


def _outcome(module, data: bytes) -> tuple:  # type: ignore[no-untyped-def]
    try:
        sd = module.SessionDescription.parse(data)
    except SdpError as exc:
        return ("parse-error", exc.message, exc.status_hint)
    session = module.SdpSession("127.0.0.2", 42)
    try:
        body, media = session.answer_body(data, 40000, direction="sendonly")
        again, _ = session.answer_body(data, 40000)
    except SdpError as exc:
        return (str(sd), "answer-error", type(exc).__name__, exc.message)
    return (str(sd), body, again, media.codec, media.payload_type, media.remote_address, media.remote_port,
            media.direction, media.remote_hold, media.ptime_ms, media.telephone_event_payload_type,
            bytes(module.SdpSession("::1", 5).offer(4000, direction="inactive", hold_style="rfc2543")))


@pytest.mark.parametrize("offer", OFFERS)
def test_sdp_samples_agree(offer: bytes) -> None:
    assert _outcome(active_sdp, offer) == _outcome(PURE, offer)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(OFFERS), st.integers(0, 400), st.integers(0, 6),
       st.binary(min_size=0, max_size=6) | st.sampled_from([b"\r\n", b" ", b"=", b":", b"/", b"0", b"a=", b"\n"]))
def test_sdp_mutations_agree(offer: bytes, at: int, cut: int, insert: bytes) -> None:
    at %= len(offer) + 1
    data = offer[:at] + insert + offer[at + cut:]
    assert _outcome(active_sdp, data) == _outcome(PURE, data)
