"""Random and mutated input never raises out of SipStack.receive_datagram."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.stack import SipStack

from sipcore_pair import A_ADDR, B_ADDR

VALID = [
    (b"INVITE sip:bob@127.0.0.2:5002 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bKf1;rport\r\n"
     b"Record-Route: <sip:127.0.0.9;lr>\r\nFrom: \"A\" <sip:alice@x>;tag=ft\r\nTo: <sip:bob@y>\r\n"
     b"Call-ID: fz-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5001>\r\nMax-Forwards: 70\r\n"
     b"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"),
    (b"ACK sip:bob@127.0.0.2:5002 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bKf2\r\n"
     b"From: <sip:alice@x>;tag=ft\r\nTo: <sip:bob@y>;tag=tt\r\nCall-ID: fz-1\r\nCSeq: 1 ACK\r\n"
     b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
    (b"CANCEL sip:bob@127.0.0.2:5002 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bKf1;rport\r\n"
     b"From: <sip:alice@x>;tag=ft\r\nTo: <sip:bob@y>\r\nCall-ID: fz-1\r\nCSeq: 1 CANCEL\r\n"
     b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
    (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.2:5002;branch=z9hG4bKx\r\nFrom: <sip:b@x>;tag=1\r\n"
     b"To: <sip:a@y>;tag=2\r\nCall-ID: fz-2\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1>\r\n"
     b"Content-Length: 0\r\n\r\n"),
    (b"REGISTER sip:127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bKr\r\n"
     b"From: <sip:alice@x>;tag=ft\r\nTo: <sip:alice@x>\r\nCall-ID: fz-3\r\nCSeq: 1 REGISTER\r\n"
     b"Contact: *\r\nExpires: 0\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 12))]
        else:
            data[pos:pos] = draw(st.sampled_from([b";", b",", b"<", b">", b"\"", b"\r\n", b" ", b"0", b"tag=",
                                                  b"z9hG4bK", b"\x00", b":", b"@"]))
    return bytes(data)


def _feed(datagrams):
    from sip.registrar import Registrar
    stack = SipStack(B_ADDR, registrar=Registrar())
    now = 0.0
    for data in datagrams:
        stack.receive_datagram(data, A_ADDR, now)
        while (ev := stack.next_event()) is not None:
            if type(ev).__name__ == "RequestReceived":
                stack.respond(ev.transaction, 200, now=now)
        stack.datagrams_to_send(now)
        now += 0.3
        stack.handle_timer(now)
    stack.handle_timer(now + 100)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(mutated(), st.sampled_from(VALID)), min_size=1, max_size=8))
def test_mutated_sequences_never_raise(datagrams):
    _feed(datagrams)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_random_bytes_never_raise(datagrams):
    _feed(datagrams)
