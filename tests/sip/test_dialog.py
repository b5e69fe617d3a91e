"""Dialog state table and in-dialog request construction (RFC 3261 §12)."""
from __future__ import annotations

import pytest

from sip.dialog import DIALOG, Dialog, DialogState, DialogTrigger, uri_address
from sip.errors import LocalProtocolError
from sip.message import parse_message


def make(route_set=None) -> Dialog:
    return Dialog("cid-1", "lt", "rt", "uac", local_party="<sip:alice@a.example>;tag=lt",
                  remote_party="Bob <sip:bob@b.example>;tag=rt", local_seq=1, remote_seq=0,
                  remote_target="sip:bob@192.0.2.7:5070", route_set=route_set or [],
                  peer=("192.0.2.7", 5070), transport="UDP", local_contact="<sip:alice@192.0.2.1:5060>")


ROWS = [(s, t, n) for s, row in DIALOG.items() for t, n in row.items()]


@pytest.mark.parametrize("state,trigger,new", ROWS, ids=[f"{s.name}-{t.name}" for s, t, _ in ROWS])
def test_every_row(state, trigger, new):
    d = make()
    d.state = state
    d.fire(trigger)
    assert d.state is new


MISSING = [(s, t) for s, row in DIALOG.items() for t in DialogTrigger if t not in row]


@pytest.mark.parametrize("state,trigger", MISSING, ids=[f"{s.name}-{t.name}" for s, t in MISSING])
def test_missing_rows_raise(state, trigger):
    d = make()
    d.state = state
    with pytest.raises(LocalProtocolError, match=f"state {state.name} cannot take {trigger.name}"):
        d.fire(trigger)


def test_build_request_uses_target_route_set_and_increments_cseq():
    d = make(["<sip:p1.example:5080;lr>", "<sip:p2.example;lr>"])
    req = d.build_request("INFO", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx", body=b"x",
                          content_type="application/dtmf-relay")
    msg = parse_message(bytes(req))
    assert msg.uri_text == "sip:bob@192.0.2.7:5070" and msg.cseq == (2, "INFO")
    assert [r.uri_text for r in msg.route] == ["sip:p1.example:5080;lr", "sip:p2.example;lr"]
    assert msg.from_tag == "lt" and msg.to_tag == "rt" and msg.call_id == "cid-1"
    assert d.destination() == (("p1.example", 5080), "UDP")
    ack = d.build_request("ACK", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKy", cseq=1)
    assert parse_message(bytes(ack)).cseq == (1, "ACK") and d.local_seq == 2


def test_destination_without_routes_is_the_peer_and_refresh_target():
    d = make()
    assert d.destination() == (("192.0.2.7", 5070), "UDP")
    d.refresh_target(parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.9:5999>\r\nContent-Length: 0\r\n\r\n").contact)
    assert d.remote_target == "sip:bob@192.0.2.9:5999"


def test_terminated_dialog_refuses_new_requests():
    d = make()
    d.fire(DialogTrigger.CLOSE)
    assert d.state is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError, match="terminated"):
        d.build_request("INFO", "SIP/2.0/UDP h;branch=z9hG4bKz")


def test_uri_address():
    assert uri_address("sip:alice@192.0.2.4") == (("192.0.2.4", 5060), "UDP")
    assert uri_address("sip:alice@192.0.2.4:5080;transport=tcp") == (("192.0.2.4", 5080), "TCP")
    assert uri_address("sips:alice@[2001:db8::1]") == (("2001:db8::1", 5061), "TLS")  # RFC 3261 §26.2.2
    assert uri_address("tel:+15551234") is None
    assert uri_address("not a uri") is None
