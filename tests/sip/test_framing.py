"""Tests of sip.framing.StreamFramer (RFC 3261 §18.3, RFC 5626 keep-alives)."""

from __future__ import annotations

import pytest

from sip.errors import RemoteProtocolError
from sip.framing import KeepAlive, StreamFramer
from sip.message import parse_message

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins

MSG = (
    b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 5\r\n\r\nhello"
)


def test_byte_by_byte_and_back_to_back() -> None:
    framer = StreamFramer()
    stream = MSG + b"\r\n\r\n" + MSG + b"\r\n" + MSG
    got = []
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
        got.extend(framer.frames())
    assert got == [MSG, KeepAlive.PING, MSG, KeepAlive.PONG, MSG]
    assert parse_message(got[0]).body == b"hello"
    assert framer.buffered == 0


def test_lone_crlf_waits_in_server_role_and_is_pong_in_client_role() -> None:
    server = StreamFramer()
    server.feed(b"\r\n")
    assert server.next_frame() is None
    server.feed(b"\r\n")
    assert server.next_frame() is KeepAlive.PING
    client = StreamFramer(role="client")
    client.feed(b"\r\n")
    assert client.next_frame() is KeepAlive.PONG


@pytest.mark.parametrize(
    ("data", "hint", "fragment"),
    [
        (MSG.replace(b"Content-Length: 5\r\n", b""), 400, "missing Content-Length"),
        (MSG.replace(b"Content-Length: 5", b"Content-Length: 5\r\nl: 5"), 400, "more than once"),
        (MSG.replace(b"Content-Length: 5", b"Content-Length: -5"), 400, "non-negative"),
        (MSG.replace(b"Content-Length: 5", b"Content-Length: 99999999"), 413, "limit"),
    ],
)
def test_unframeable_streams_fail_permanently(data: bytes, hint: int, fragment: str) -> None:
    framer = StreamFramer()
    framer.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        framer.next_frame()
    assert info.value.status_hint == hint and fragment in info.value.message
    assert framer.failed_head is not None
    with pytest.raises(RemoteProtocolError):
        framer.next_frame()


def test_header_section_limit() -> None:
    framer = StreamFramer(max_header_size=100)
    framer.feed(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: " + b"a" * 200)
    with pytest.raises(RemoteProtocolError) as info:
        framer.next_frame()
    assert info.value.status_hint == 513


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([MSG, b"\r\n\r\n", MSG.replace(b"hello", b"12345")]), min_size=1, max_size=6),
    st.lists(st.integers(1, 64), min_size=1, max_size=40),
)
def test_property_any_chunking_gives_the_same_frames(items: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(items)
    framer = StreamFramer()
    got: list[bytes | KeepAlive] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        framer.feed(stream[pos : pos + size])
        pos += size
        i += 1
        got.extend(framer.frames())
    expected = [KeepAlive.PING if item == b"\r\n\r\n" else item for item in items]
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_property_garbage_only_raises_protocol_errors(data: bytes) -> None:
    framer = StreamFramer(max_header_size=200, max_body_size=100)
    framer.feed(data)
    try:
        for item in framer.frames():
            if isinstance(item, bytes):
                try:
                    parse_message(item)
                except RemoteProtocolError:
                    pass
    except RemoteProtocolError:
        pass
