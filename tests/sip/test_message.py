"""Unit tests of sip.message: parsing, accessors, builders, serialisation."""

from __future__ import annotations

import pytest

from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.framing import StreamFramer
from sip.message import (
    Headers,
    NameAddr,
    Request,
    Response,
    Via,
    error_response,
    make_ack,
    make_cancel,
    make_request,
    make_response,
    parse_message,
)
from sip.uri import SipUri

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKabc;received=192.0.2.7\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_parse_request_accessors() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri) and msg.uri.user == "bob"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.cseq == (314159, "INVITE")
    assert msg.max_forwards == 70
    assert msg.content_length == 4
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\n"
    top, second = msg.via
    assert (top.transport, top.host, top.port) == ("UDP", "pc33.atlanta.example.com", 5062)
    assert top.branch == "z9hG4bK776asdhds" and top.rport is True and top.received is None
    assert (second.transport, second.host, second.port) == ("TCP", "[2001:db8::1]", 5070)
    assert second.received == "192.0.2.7" and second.rport is None
    assert msg.from_.tag == "1928301774" and msg.from_.display_name == "Alice"
    assert msg.to.tag is None and msg.to.display_name == "Bob"
    assert str(msg.contact[0].uri) == "sip:alice@pc33.atlanta.example.com"
    assert [str(r.uri) for r in msg.record_route] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]


def test_roundtrip_reuses_raw_bytes() -> None:
    msg = parse_message(INVITE)
    assert bytes(msg) == INVITE


def test_serialise_after_change_rebuilds_and_fixes_content_length() -> None:
    msg = parse_message(INVITE)
    msg.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew")
    msg.body = b"v=0\r\no=x\r\n"
    again = parse_message(bytes(msg))
    assert again.via[0].host == "proxy.example.com"
    assert len(again.via) == 3
    assert again.content_length == len(msg.body) and again.body == msg.body


def test_compact_forms_and_folding() -> None:
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h.example.com\r\n ;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: sip:x@example.com\r\n"
        b"i: abc\r\nCSeq:\r\n\t 1 OPTIONS\r\nl: 0\r\nm: <sip:a@h.example.com>\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.headers["Via"] == "SIP/2.0/UDP h.example.com ;branch=z9hG4bK1"
    assert msg.via[0].branch == "z9hG4bK1"
    assert msg.cseq == (1, "OPTIONS")
    assert [name for name, _ in msg.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Content-Length", "Contact"]
    assert msg.max_forwards is None


def test_headers_multimap() -> None:
    h = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")])
    h.add("WWW-Authenticate", 'Digest realm="a", nonce="b"')
    h.add("route", "<sip:p1;lr>,<sip:p2;lr>")
    assert "VIA" in h and "via" in h and "v" in h
    assert len(h.get_all("Via")) == 2
    assert h.get_all("www-authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert h.pop_first("Route") == "<sip:p1;lr>"
    assert h.get_all("Route") == ["<sip:p2;lr>"]
    h["Route"] = "<sip:p3;lr>"
    assert h.get_lines("route") == ["<sip:p3;lr>"]
    assert h.remove("route") == 1 and "Route" not in h
    with pytest.raises(LocalProtocolError):
        h.add("X-Bad", "a\r\nInjected: yes")
    with pytest.raises(LocalProtocolError):
        h.add("Bad Name", "x")


def test_make_response_copies_dialog_fields() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="as83kd", body=b"v=0\n", content_type="application/sdp")
    data = bytes(resp)
    parsed = parse_message(data)
    assert isinstance(parsed, Response)
    assert parsed.status_code == 200 and parsed.reason == "OK"
    assert [v.branch for v in parsed.via] == [v.branch for v in req.via]
    assert parsed.to.tag == "as83kd" and parsed.from_.tag == "1928301774"
    assert parsed.call_id == req.call_id and parsed.cseq == req.cseq
    assert len(parsed.record_route) == 2
    trying = req.response(100)
    assert trying.to.tag is None and "Record-Route" not in trying.headers


def test_make_request_builds_parseable_message() -> None:
    req = make_request(
        "OPTIONS",
        "sip:bob@example.com",
        via=Via("UDP", "192.0.2.1", 5080, {"branch": "z9hG4bKx1", "rport": None}),
        from_=NameAddr("sip:ctiengine@example.com", "CTI", {"tag": "t1"}),
        to=NameAddr("sip:bob@example.com"),
        call_id="c1@192.0.2.1",
        cseq=1,
    )
    parsed = parse_message(bytes(req))
    assert parsed.via[0].port == 5080 and parsed.via[0].rport is True
    assert parsed.from_.display_name == "CTI" and parsed.max_forwards == 70
    assert parsed.content_length == 0


@pytest.mark.parametrize(
    ("data", "fragment", "hint"),
    [
        (INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), "version", 505),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "does not match", 400),
        (INVITE.replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""), "missing Call-ID", 400),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 40"), "exceeds", 400),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 700"), "Max-Forwards", 400),
        (INVITE.replace(b";branch=z9hG4bK776asdhds", b";branch="), "branch", 400),
        (b"garbage\r\n\r\n", "SIP-Version", 400),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: a\rMax-Forwards: 70\r\n"), "bare CR", 400),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n"), "has no ':'", 400),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max Forwards: 70\r\n"), "not a token", 400),
    ],
)
def test_errors_are_specific(data: bytes, fragment: str, hint: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    assert fragment in info.value.message
    assert info.value.status_hint == hint


def test_error_response_names_fault() -> None:
    data = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    resp = error_response(data, info.value)
    assert resp is not None and resp.status_code == 400
    assert "does not match" in resp.reason
    parsed = parse_message(bytes(resp))
    assert parsed.to.tag and parsed.via[0].branch == "z9hG4bK776asdhds"
    # Same input, same tag (stateless retransmissions).
    assert error_response(data, info.value).to.tag == parsed.to.tag  # type: ignore[union-attr]


def test_error_response_never_answers_a_response() -> None:
    data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    assert error_response(data, info.value) is None


# ---------------------------------------------------------------------------
# Property tests (hypothesis, bounded)
# ---------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sip.grammar import quote  # noqa: E402

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)
_HOST = st.one_of(
    st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,3}", fullmatch=True),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.just("[2001:db8::1]"),
)
_USER = st.from_regex(r"[a-zA-Z0-9_.!~*'()&=+$,-]{1,12}", fullmatch=True)
_DISPLAY = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"), max_size=12
)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)


@st.composite
def sip_requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER"])) if draw(st.booleans()) else draw(_TOKEN)
    host = draw(_HOST)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    uri = f"sip:{draw(_USER)}@{host}" + ("" if port is None else f":{port}")
    via_params = {"branch": "z9hG4bK" + draw(_TOKEN)}
    if draw(st.booleans()):
        via_params["rport"] = None  # type: ignore[assignment]
    display = draw(st.one_of(st.none(), _DISPLAY))
    extra = draw(st.lists(st.tuples(st.from_regex(r"X-[A-Za-z0-9]{1,8}", fullmatch=True), _VALUE), max_size=4))
    req = make_request(
        method,
        uri,
        via=Via(draw(st.sampled_from(["UDP", "TCP", "TLS"])), draw(_HOST), draw(st.one_of(st.none(), st.integers(1, 65535))), via_params),
        from_=NameAddr(f"sip:{draw(_USER)}@{draw(_HOST)}", display, {"tag": draw(_TOKEN)}),
        to=NameAddr(uri),
        call_id=draw(_TOKEN) + "@" + draw(_HOST),
        cseq=draw(st.integers(0, 2**32 - 1)),
        max_forwards=draw(st.integers(0, 255)),
        headers=[(n, v) for n, v in extra if v],
        body=draw(st.binary(max_size=64)),
    )
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sip_requests())
def test_property_serialise_parse_is_stable(req: Request) -> None:
    wire = bytes(req)
    parsed = parse_message(wire)
    assert isinstance(parsed, Request)
    assert bytes(parsed) == wire  # raw reuse
    assert (parsed.method, parsed.uri_text, parsed.body) == (req.method, req.uri_text, req.body)
    def no_cl(h: Headers) -> list[tuple[str, str]]:
        return [(n, v) for n, v in h if n != "Content-Length"]

    assert no_cl(parsed.headers) == no_cl(req.headers)
    assert parsed.content_length == len(req.body)
    assert parsed.from_.display_name == req.from_.display_name
    assert parsed.from_.tag == req.from_.tag and parsed.cseq == req.cseq
    assert parsed.via[0] == req.via[0]
    # a full rebuild gives the same bytes
    parsed.headers.add("X-Touch", "1")
    parsed.headers.remove("X-Touch")
    assert bytes(parsed) == wire
    resp = make_response(parsed, 486, to_tag="t1")
    again = parse_message(bytes(resp))
    assert isinstance(again, Response) and again.to.tag == "t1" and again.cseq == req.cseq


def _only_protocol_errors(data: bytes) -> None:
    try:
        msg = parse_message(data, validate=False)
    except RemoteProtocolError as exc:
        error_response(data, exc)  # must not raise either
        return
    for accessor in ("via", "from_", "to", "contact", "route", "max_forwards", "content_length", "expires", "require"):
        try:
            getattr(msg, accessor)
        except RemoteProtocolError:
            pass
    try:
        msg.validate()
    except RemoteProtocolError:
        pass
    bytes(msg)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_property_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
    b"v: SIP/2.0/TCP [::1]:5;rport\r\n", b"From: <sip:a@b>;tag=1\r\n", b"t: \"x\\\"\" <sip:c@d>\r\n",
    b"Call-ID: x\r\n", b"CSeq: 1 INVITE\r\n", b"Content-Length: 3\r\n", b"l: 99\r\n", b"\r\n", b" folded\r\n",
    b"Contact: *\r\n", b"m: <sip:x@[::1]:5060;transport=tcp>;expires=10, sip:y@z\r\n", b"abc", b"\x00\xff",
    b"Max-Forwards: 70\r\n", b"Route: <sip:p;lr>,\r\n", b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n",
]), max_size=14))
def test_property_shuffled_header_soup(parts: list[bytes]) -> None:
    _only_protocol_errors(b"".join(parts))


def test_cached_parses_are_private_copies() -> None:
    first = parse_message(INVITE)
    first.via[0].params["branch"] = "mutated"
    first.from_.params["tag"] = "mutated"
    uri = first.contact[0].uri
    assert isinstance(uri, SipUri)
    uri.params["x"] = "y"
    second = parse_message(INVITE)
    assert second.via[0].branch == "z9hG4bK776asdhds"
    assert second.from_.tag == "1928301774"
    assert "x" not in second.contact[0].uri.params  # type: ignore[union-attr]


def test_start_line_changes_are_serialised() -> None:
    resp = parse_message(bytes(make_response(parse_message(INVITE), 180, to_tag="x")))  # type: ignore[arg-type]
    assert isinstance(resp, Response)
    resp.status_code, resp.reason = 183, "Session Progress"
    assert bytes(resp).startswith(b"SIP/2.0 183 Session Progress\r\n")
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    req.uri = "sip:carol@chicago.example.com"
    assert bytes(req).startswith(b"INVITE sip:carol@chicago.example.com SIP/2.0\r\n")
    req.method = "OPTIONS"
    assert bytes(req).startswith(b"OPTIONS sip:carol@")


def test_make_cancel_and_ack() -> None:
    invite = parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRoute: <sip:p1.example.com;lr>\r\n"))
    assert isinstance(invite, Request)
    cancel = parse_message(bytes(make_cancel(invite)))
    assert isinstance(cancel, Request) and cancel.method == "CANCEL" and cancel.uri_text == invite.uri_text
    assert cancel.cseq == (314159, "CANCEL") and len(cancel.via) == 1
    assert cancel.via[0].branch == invite.via[0].branch and cancel.to.tag is None
    assert [str(r.uri) for r in cancel.route] == ["sip:p1.example.com;lr"]
    busy = make_response(invite, 486, to_tag="b1")
    ack = parse_message(bytes(make_ack(invite, busy)))
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq == (314159, "ACK")
    assert ack.to.tag == "b1" and ack.via[0].branch == invite.via[0].branch and ack.body == b""
    with pytest.raises(LocalProtocolError):
        make_ack(invite, make_response(invite, 200, to_tag="x"))
    with pytest.raises(LocalProtocolError):
        make_cancel(ack)


def test_framer_failure_can_still_be_answered() -> None:
    framer = StreamFramer()
    framer.feed(INVITE.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl: 4\r\n"))
    with pytest.raises(RemoteProtocolError) as info:
        framer.next_frame()
    assert framer.failed_head is not None
    resp = error_response(framer.failed_head, info.value)
    assert resp is not None and resp.status_code == 400 and "more than once" in resp.reason
