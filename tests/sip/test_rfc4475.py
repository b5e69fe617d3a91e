"""RFC 4475 torture messages, read in place from ../shared/testdata/rfc4475/.

Every MANIFEST row is checked against an explicit expectation below: valid
messages parse, round-trip to an equivalent message (both through the raw
fast path and through a full rebuild) and pass or fail the application-level
checks as the RFC says; invalid ones raise RemoteProtocolError naming the
fault with the right status hint, and error_response() answers or drops as
RFC 4475 requires.
"""

from __future__ import annotations

import csv
import pathlib

import pytest

from sip.errors import RemoteProtocolError
from sip.message import Request, Response, check_request, error_response, parse_message
from sip.uri import AbsoluteUri, SipUri

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins

DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc4475"

# file -> (kind, status_hint, fragment of the error message, response status or None for drop)
#   kind "ok": parses, check_request passes;  "app": parses, check_request raises (hint);
#   "bad": parse_message raises (hint, fragment) and error_response gives status/None.
EXPECT: dict[str, tuple[str, int | None, str, int | None]] = {
    "wsinv.dat": ("ok", None, "", None),
    "intmeth.dat": ("ok", None, "", None),
    "esc01.dat": ("ok", None, "", None),
    "escnull.dat": ("ok", None, "", None),
    "esc02.dat": ("ok", None, "", None),
    "lwsdisp.dat": ("ok", None, "", None),
    "longreq.dat": ("ok", None, "", None),
    "dblreq.dat": ("ok", None, "", None),
    "semiuri.dat": ("ok", None, "", None),
    "transports.dat": ("ok", None, "", None),
    "mpart01.dat": ("app", 415, "multipart", None),  # parser accepts; a UA without S/MIME says 415
    "unreason.dat": ("ok", None, "", None),
    "noreason.dat": ("ok", None, "", None),
    "badinv01.dat": ("bad", 400, "empty element", 400),
    "clerr.dat": ("bad", 400, "Content-Length 9999 exceeds", 400),
    "ncl.dat": ("bad", 400, "Content-Length '-999'", 400),
    "scalar02.dat": ("bad", 400, "CSeq number", 400),
    "scalarlg.dat": ("bad", 400, "CSeq number", None),  # a response: discarded
    "quotbal.dat": ("bad", 400, "unterminated quoted string", 400),
    "ltgtruri.dat": ("bad", 400, "enclosed in <>", 400),
    "lwsruri.dat": ("bad", 400, "Request-URI contains whitespace", 400),
    "lwsstart.dat": ("bad", 400, "several spaces", 400),
    "trws.dat": ("bad", 400, "trailing whitespace", 400),
    "escruri.dat": ("bad", 400, "escaped headers", 400),
    "baddate.dat": ("bad", 400, "Date header", 400),
    "regbadct.dat": ("bad", 400, "must be enclosed in <>", 400),
    "badaspec.dat": ("bad", 400, "whitespace or '<' inside", 400),
    "baddn.dat": ("bad", 400, "unquoted display name", 400),
    "badvers.dat": ("bad", 505, "SIP version SIP/7.0", 505),
    "mismatch01.dat": ("bad", 400, "CSeq method INVITE does not match request method OPTIONS", 400),
    "mismatch02.dat": ("bad", 400, "does not match request method NEWMETHOD", 400),
    "bigcode.dat": ("bad", 400, "status code", None),  # a response: dropped
    "badbranch.dat": ("ok", None, "", None),
    "insuf.dat": ("bad", 400, "missing", 400),
    "unkscm.dat": ("app", 416, "nobodyknowsthisscheme", None),
    "novelsc.dat": ("app", 416, "soap.beep", None),
    "unksm2.dat": ("ok", None, "", None),
    "bext01.dat": ("app", 420, "nothingSupportsThis", None),
    "invut.dat": ("app", 415, "application/unknownformat", None),
    "regaut01.dat": ("ok", None, "", None),
    "multi01.dat": ("bad", 400, "appears more than once", 400),
    "mcl01.dat": ("bad", 400, "Content-Length header appears more than once", 400),
    "bcast.dat": ("ok", None, "", None),
    "zeromf.dat": ("ok", None, "", None),
    "cparam01.dat": ("ok", None, "", None),
    "cparam02.dat": ("ok", None, "", None),
    "regescrt.dat": ("ok", None, "", None),
    "sdp01.dat": ("ok", None, "", None),
    "inv2543.dat": ("ok", None, "", None),
    "test.dat": ("bad", 400, "no SIP-Version", None),  # no Via: nothing to answer
}


def _manifest() -> list[dict[str, str]]:
    with open(DIR / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _manifest()


def test_manifest_is_fully_covered() -> None:
    assert len(ROWS) == 50
    assert {row["file"] for row in ROWS} == set(EXPECT)
    for row in ROWS:
        kind = EXPECT[row["file"]][0]
        assert (row["category"] == "valid") == (kind != "bad") or row["file"] == "mpart01.dat", row


def _equivalent(a: Request | Response, b: Request | Response) -> None:
    assert type(a) is type(b)
    if isinstance(a, Request):
        assert isinstance(b, Request)
        assert (a.method, a.uri_text) == (b.method, b.uri_text)
    else:
        assert isinstance(b, Response)
        assert (a.status_code, a.reason) == (b.status_code, b.reason)
    assert [(n.lower(), v) for n, v in a.headers if n.lower() != "content-length"] == [
        (n.lower(), v) for n, v in b.headers if n.lower() != "content-length"
    ]
    assert a.body == b.body


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_torture_message(row: dict[str, str]) -> None:
    data = (DIR / row["file"]).read_bytes()
    kind, hint, fragment, status = EXPECT[row["file"]]
    if kind == "bad":
        with pytest.raises(RemoteProtocolError) as info:
            parse_message(data)
        assert info.value.status_hint == hint
        assert fragment in info.value.message
        resp = error_response(data, info.value)
        if status is None:
            assert resp is None
        else:
            assert resp is not None and resp.status_code == status
            assert info.value.message[:30] in resp.reason
            # the fields present are copied as received; a To tag is added
            wire = bytes(resp)
            assert wire.startswith(f"SIP/2.0 {status} ".encode())
            assert wire.count(b"\r\nVia: ") >= 1
            if resp.headers.get("To") is not None:
                assert ";tag=" in resp.headers["To"]
        return
    msg = parse_message(data)
    # fast path: bytes reused; full rebuild: forced by touching the headers
    _equivalent(msg, parse_message(bytes(msg)))
    rebuilt = parse_message(data)
    rebuilt.headers.add("X-Touched", "1")
    rebuilt.headers.remove("X-Touched")
    _equivalent(msg, parse_message(bytes(rebuilt)))
    if isinstance(msg, Request):
        if kind == "app":
            with pytest.raises(RemoteProtocolError) as info:
                check_request(msg)
            assert info.value.status_hint == hint and fragment in info.value.message
        else:
            check_request(msg, content_types=None)


def _load(name: str) -> Request | Response:
    return parse_message((DIR / name).read_bytes())


def test_wsinv_details() -> None:
    msg = _load("wsinv.dat")
    assert len(msg.via) == 3 and len(msg.body) == 150
    assert msg.to.display_name is None or isinstance(msg.to.display_name, str)
    assert msg.headers.get("Subject") is not None  # compact 's' normalised


def test_esc01_escaped_and_unescaped_uris_compare_equal() -> None:
    msg = _load("esc01.dat")
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert msg.to.uri == SipUri.parse("sip:user@example.com")
    assert msg.from_.uri == SipUri.parse("sip:I%20have%20spaces@example.net")
    contact = msg.contact[0].uri
    assert contact == SipUri.parse("sip:caller@host5.example.net;lr;name=value%25%34%31")
    assert contact != SipUri.parse("sip:caller@host5.example.net;lr;name=other")
    assert msg.uri.user == "sips%3Auser%40example.com"  # escapes kept where the grammar has them


def test_escnull_keeps_nul_in_user() -> None:
    msg = _load("escnull.dat")
    users = [c.uri.aor for c in msg.contact]
    assert len(set(users)) == 2 and all("\x00" in u for u in users)


def test_semiuri_user_part() -> None:
    msg = _load("semiuri.dat")
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert msg.uri.user == "user;par=u%40example.net" and msg.uri.host == "example.com"


def test_dblreq_ignores_trailing_octets() -> None:
    msg = _load("dblreq.dat")
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


def test_mpart01_binary_body_framed_by_content_length() -> None:
    msg = _load("mpart01.dat")
    assert len(msg.body) == 553 and b"\x00" in msg.body


def test_noreason_and_unreason() -> None:
    assert _load("noreason.dat").reason == ""  # type: ignore[union-attr]
    assert _load("unreason.dat").status_code == 200  # type: ignore[union-attr]


def test_unksm2_non_sip_schemes_in_addresses() -> None:
    msg = _load("unksm2.dat")
    assert isinstance(msg.to.uri, AbsoluteUri)


def test_cparam_contact_params_vs_uri_params() -> None:
    c1 = _load("cparam01.dat").contact[0]
    assert c1.param("unknownparam", "x") is None and isinstance(c1.uri, SipUri)
    assert not c1.uri.has_param("unknownparam")
    c2 = _load("cparam02.dat").contact[0]
    assert isinstance(c2.uri, SipUri) and c2.uri.has_param("unknownparam")


def test_regescrt_keeps_escaped_header() -> None:
    uri = _load("regescrt.dat").contact[0].uri
    assert isinstance(uri, SipUri) and "Route" in uri.headers


def test_zeromf_and_inv2543() -> None:
    assert _load("zeromf.dat").max_forwards == 0
    old = _load("inv2543.dat")
    assert old.via[0].branch is None and old.max_forwards is None and old.from_.tag is None


def test_badbranch_is_not_an_rfc3261_branch() -> None:
    via = _load("badbranch.dat").via[0]
    assert via.branch == "z9hG4bK" and not via.is_rfc3261_branch


def test_regaut01_unknown_scheme_is_rechallenged() -> None:
    from sip.auth import AuthOutcome, DigestServer

    msg = _load("regaut01.dat")
    creds = msg.headers["Authorization"]
    result = DigestServer("example.com", b"k").verify("REGISTER", creds, 0.0, password="x")
    assert result.outcome is AuthOutcome.REJECTED and "not supported" in result.reason


# -- mutation fuzzing: nothing but RemoteProtocolError may come out ----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CORPUS = [(DIR / row["file"]).read_bytes() for row in ROWS]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup"]))
        if op == "flip":
            data[pos] = draw(st.sampled_from(b"\x00\r\n :;,<>\"\\@[]%=?ZZ9"))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b" ", b";", b",", b"\"", b"<", b"\r\n\r\n", b"\xff\xfe"]))
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos : pos + 40]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_torture_messages_raise_only_protocol_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except RemoteProtocolError as exc:
        error_response(data, exc)
        return
    bytes(msg)
    parse_message(bytes(msg))  # what we accept, we re-serialise acceptably
    if isinstance(msg, Request):
        try:
            check_request(msg)
        except RemoteProtocolError:
            pass
