"""The sans-IO core end to end: two stacks on a fake link with a fake clock."""
from __future__ import annotations

import pytest

from sip.dialog import DialogState
from sip.errors import LocalProtocolError
from sip.events import (
    AckReceived, CancelReceived, DialogEstablished, DialogTerminated, RequestReceived, ResponseReceived,
    TransactionTimedOut,
)
from sip.message import parse_message
from sip.stack import SipStack, response_address
from sip.message import Via

from sipcore_pair import A_ADDR, B_ADDR, events, pair  # noqa: F401 (fixture)

URI_B = "sip:bob@127.0.0.2:5002"
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def call(a, b, link, answer=200):
    """A invites B; B rings then answers.  Returns (client txn, A events, B events)."""
    txn = a.invite(URI_B, link.now, body=SDP, content_type="application/sdp")
    link.pump()
    evb = events(b)
    req = [e for e in evb if isinstance(e, RequestReceived)][0]
    b.respond(req.transaction, 180, now=link.now)
    link.pump()
    if answer:
        b.respond(req.transaction, answer, body=SDP if answer == 200 else b"",
                  content_type="application/sdp" if answer == 200 else None, now=link.now)
        link.pump()
    return txn, events(a), evb + events(b), req


def test_invite_ringing_answer_ack_bye(pair):
    a, b, link = pair
    txn, eva, evb, req = call(a, b, link)
    assert req.request.method == "INVITE" and req.source == A_ADDR and req.dialog is None
    codes = [e.response.status_code for e in eva if isinstance(e, ResponseReceived)]
    assert codes == [180, 200]
    est_a = [e for e in eva if isinstance(e, DialogEstablished)]
    assert len(est_a) == 1
    da = est_a[0].dialog
    assert da.state is DialogState.CONFIRMED and da.role == "uac"
    assert any(isinstance(e, AckReceived) for e in evb)
    db = [e for e in evb if isinstance(e, DialogEstablished)][0].dialog
    assert db.id == (da.call_id, da.remote_tag, da.local_tag)
    assert len(link.sent(A_ADDR, b"ACK ")) == 1 and len(link.sent(B_ADDR, b"SIP/2.0 200")) == 1
    # No 100 Trying: B answered within 200 ms.
    assert link.sent(B_ADDR, b"SIP/2.0 100") == []
    bye = a.bye(da, link.now)
    link.pump()
    assert da.terminated and [e.reason for e in events(a) if isinstance(e, DialogTerminated)] == ["bye_sent"]
    assert [e.reason for e in events(b) if isinstance(e, DialogTerminated)] == ["bye_received"]
    assert bye.state.name == "COMPLETED"
    link.advance(40.0)
    assert a.transaction_counts == (0, 0) and b.transaction_counts == (0, 0)
    assert a.dialogs == [] and b.dialogs == [] and a.get_timer() is None and b.get_timer() is None
    assert a._merge == {} and b._merge == {}  # no per-call state left behind
    assert events(a) == [] and events(b) == []


def test_trying_sent_when_tu_is_slow(pair):
    a, b, link = pair
    a.invite(URI_B, 0.0)
    link.pump()
    link.advance(0.3)
    assert len(link.sent(B_ADDR, b"SIP/2.0 100 Trying")) == 1
    # INVITE retransmission (Timer A at 0.5) is absorbed and gets the 100 again.
    link.advance(0.6)
    assert len([e for e in events(b) if isinstance(e, RequestReceived)]) == 1
    assert len(link.sent(A_ADDR, b"INVITE ")) == 1  # 100 stopped Timer A


def test_retransmissions_absorbed_under_loss(pair):
    a, b, link = pair
    lost = {"invite": 2}

    def drop(data, src, dst):
        if data.startswith(b"INVITE") and lost["invite"]:
            lost["invite"] -= 1
            return True
        return False

    link.drop = drop
    a.invite(URI_B, 0.0)
    link.pump()
    link.advance(2.0)  # Timer A at 0.5 (lost) and 1.5 (arrives)
    reqs = [e for e in events(b) if isinstance(e, RequestReceived)]
    assert len(reqs) == 1 and len(link.sent(A_ADDR, b"INVITE ")) == 3


def test_2xx_retransmitted_until_ack_and_each_2xx_re_acked(pair):
    a, b, link = pair
    acks = {"n": 0}

    def drop(data, src, dst):
        if data.startswith(b"ACK"):
            acks["n"] += 1
            return acks["n"] <= 2  # lose the first two ACKs
        return False

    link.drop = drop
    txn, eva, evb, req = call(a, b, link)
    assert not any(isinstance(e, AckReceived) for e in evb)
    link.advance(0.6)   # 2xx again at 0.5 → second ACK (lost)
    link.advance(1.6)   # 2xx again at 1.5 → third ACK arrives
    evb = events(b)
    assert [type(e) for e in evb] == [AckReceived]
    oks = link.sent(B_ADDR, b"SIP/2.0 200")
    assert len(oks) == 3 and len(link.sent(A_ADDR, b"ACK ")) == 3
    assert [e for e in events(a) if isinstance(e, ResponseReceived)] == []  # retransmissions not re-reported
    link.advance(10.0)
    assert len(link.sent(B_ADDR, b"SIP/2.0 200")) == 3


def test_ack_never_arrives_gives_up_with_bye(pair):
    a, b, link = pair
    link.drop = lambda data, src, dst: data.startswith(b"ACK")
    call(a, b, link)
    link.advance(31.9)
    assert not any(isinstance(e, DialogTerminated) for e in events(b))
    link.advance(32.1)
    term = [e for e in events(b) if isinstance(e, DialogTerminated)]
    assert [t.reason for t in term] == ["ack_timeout"]
    assert len(link.sent(B_ADDR, b"BYE ")) == 1
    # 2xx retransmissions: 0.5, 1.5, 3.5, 7.5, 11.5, ... capped at T2 = 4 s
    assert len(link.sent(B_ADDR, b"SIP/2.0 200")) == 1 + 10  # at 0.5, 1.5, 3.5, 7.5, then every 4 s to 31.5


def test_reject_acked_by_transaction(pair):
    a, b, link = pair
    txn, eva, evb, req = call(a, b, link, answer=486)
    assert [e.response.status_code for e in eva if isinstance(e, ResponseReceived)] == [180, 486]
    assert len(link.sent(A_ADDR, b"ACK ")) == 1
    ack = parse_message(link.sent(A_ADDR, b"ACK ")[0])
    assert ack.top_via.branch == txn.key[0] and ack.cseq == (1, "ACK")
    assert a.dialogs == [] and b.dialogs == []
    link.advance(40.0)
    assert a.transaction_counts == (0, 0) and b.transaction_counts == (0, 0)


def test_cancel_gives_200_and_487(pair):
    a, b, link = pair
    txn = a.invite(URI_B, 0.0)
    link.pump()
    req = [e for e in events(b) if isinstance(e, RequestReceived)][0]
    b.respond(req.transaction, 180, now=0.0)
    link.pump()
    ctxn = a.cancel(txn, 0.1)
    link.pump()
    evb = events(b)
    assert [type(e) for e in evb] == [CancelReceived]
    codes = [e.response.status_code for e in events(a) if isinstance(e, ResponseReceived)]
    assert sorted(codes) == [180, 200, 487]
    assert len(link.sent(A_ADDR, b"ACK ")) == 1
    with pytest.raises(LocalProtocolError):
        b.respond(req.transaction, 200, now=0.2)  # too late: the INVITE got its 487
    assert a.cancel(txn, 0.3) is None
    assert ctxn.method == "CANCEL"


def test_cancel_of_unknown_is_481(pair):
    a, b, link = pair
    raw = (b"CANCEL sip:bob@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bKnone\r\n"
           b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n"
           b"Content-Length: 0\r\n\r\n")
    b.receive_datagram(raw, A_ADDR, 0.0)
    out = b.datagrams_to_send(0.0)
    assert out[0][0].startswith(b"SIP/2.0 481") and out[0][1] == A_ADDR


def _raw_request(method=b"OPTIONS", branch=b"z9hG4bKabc", via_host=b"127.0.0.1:5001", extra=b"",
                 to_tag=b"", cseq=b"1", from_tag=b"ft"):
    return (method + b" sip:bob@127.0.0.2:5002 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP " + via_host + b";branch=" + branch + b"\r\n"
            b"From: <sip:alice@x>;tag=" + from_tag + b"\r\nTo: <sip:bob@y>" + to_tag + b"\r\n"
            b"Call-ID: raw-1\r\nCSeq: " + cseq + b" " + method + b"\r\nMax-Forwards: 70\r\n" + extra +
            b"Content-Length: 0\r\n\r\n")


def test_response_goes_to_source_with_received_and_rport():
    b = SipStack(B_ADDR)
    raw = _raw_request(via_host=b"10.9.9.9:5060;rport", branch=b"z9hG4bKnat")
    b.receive_datagram(raw, ("127.0.0.1", 40404), 0.0)
    data, addr, transport = b.datagrams_to_send(0.0)[0]
    assert addr == ("127.0.0.1", 40404) and transport == "UDP"
    resp = parse_message(data)
    assert resp.status_code == 200
    assert resp.top_via.received == "127.0.0.1" and resp.top_via.rport == 40404


def test_response_address_rules():
    via = Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1")
    assert response_address(via, ("192.0.2.1", 1234), "UDP") == ("192.0.2.1", 5070)  # received, Via port
    assert response_address(Via.parse("SIP/2.0/UDP h;branch=z9hG4bK1"), ("192.0.2.1", 1234), "UDP") == \
        ("192.0.2.1", 5060)
    assert response_address(Via.parse("SIP/2.0/UDP h:9;rport;branch=z9hG4bK1"), ("192.0.2.1", 1234), "UDP") \
        == ("192.0.2.1", 1234)
    assert response_address(via, ("192.0.2.1", 1234), "TCP") == ("192.0.2.1", 1234)


def test_merged_request_482_and_max_forwards_483():
    b = SipStack(B_ADDR)
    b.receive_datagram(_raw_request(b"MESSAGE", b"z9hG4bKone"), A_ADDR, 0.0)
    b.receive_datagram(_raw_request(b"MESSAGE", b"z9hG4bKtwo"), A_ADDR, 0.0)  # same From tag/Call-ID/CSeq
    out = b.datagrams_to_send(0.0)
    assert [d[:11] for d, _, _ in out] == [b"SIP/2.0 482"]
    assert len([e for e in events(b) if isinstance(e, RequestReceived)]) == 1
    raw = _raw_request(b"INVITE", b"z9hG4bKmf", cseq=b"7").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    b.receive_datagram(raw, A_ADDR, 0.0)
    assert b.datagrams_to_send(0.0)[0][0].startswith(b"SIP/2.0 483")


def test_unknown_dialog_481_and_bad_input_400_or_drop():
    b = SipStack(B_ADDR)
    b.receive_datagram(_raw_request(b"BYE", to_tag=b";tag=nope"), A_ADDR, 0.0)
    assert b.datagrams_to_send(0.0)[0][0].startswith(b"SIP/2.0 481")
    bad = _raw_request(b"INFO", b"z9hG4bKbad").replace(b"CSeq: 1 INFO", b"CSeq: x INFO")
    b.receive_datagram(bad, A_ADDR, 0.0)
    data, addr, _ = b.datagrams_to_send(0.0)[0]
    assert data.startswith(b"SIP/2.0 400 Bad Request: ") and addr == A_ADDR
    for junk in (b"", b"\x00\xff garbage", b"SIP/2.0 200 OK\r\n\r\n", b"INVITE\r\n\r\n"):
        b.receive_datagram(junk, A_ADDR, 0.0)
    assert b.datagrams_to_send(0.0) == [] and events(b) == []


def test_options_answered_and_in_dialog_requests(pair):
    a, b, link = pair
    txn = a.request("OPTIONS", URI_B, 0.0)
    assert txn.method == "OPTIONS" and txn.transport == "UDP"
    link.pump()
    resp = [e for e in events(a) if isinstance(e, ResponseReceived)][0].response
    assert resp.status_code == 200 and "INVITE" in resp.allow
    _, eva, evb, _ = call(a, b, link)
    da = [e for e in eva if isinstance(e, DialogEstablished)][0].dialog
    db = [e for e in evb if isinstance(e, DialogEstablished)][0].dialog
    for method in ("INFO", "REFER", "NOTIFY"):
        a.request_in_dialog(da, method, link.now, headers=[("Refer-To", "<sip:carol@127.0.0.3>")]
                            if method == "REFER" else ())
        link.pump()
        got = [e for e in events(b) if isinstance(e, RequestReceived)]
        assert [e.request.method for e in got] == [method] and got[0].dialog is db
        b.respond(got[0].transaction, 202 if method == "REFER" else 200, now=link.now)
        link.pump()
        assert [e.response.status_code for e in events(a)] == [202 if method == "REFER" else 200]
    # OPTIONS keep-alive in the dialog is answered by the stack.
    b.request_in_dialog(db, "OPTIONS", link.now)
    link.pump()
    assert [e.response.status_code for e in events(b)] == [200]
    # CSeq in the dialog increases; a lower one is refused with 500.
    assert da.local_seq == 4 and db.remote_seq == 4


def test_lower_cseq_in_dialog_is_500(pair):
    a, b, link = pair
    _, eva, evb, _ = call(a, b, link)
    da = [e for e in eva if isinstance(e, DialogEstablished)][0].dialog
    a.request_in_dialog(da, "INFO", link.now)
    link.pump()
    events(b)
    da.local_seq = 0
    a.request_in_dialog(da, "INFO", link.now)
    link.pump()
    assert [e.response.status_code for e in events(a)] == [500]


def test_reinvite_target_refresh_and_glare(pair):
    a, b, link = pair
    _, eva, evb, _ = call(a, b, link)
    da = [e for e in eva if isinstance(e, DialogEstablished)][0].dialog
    db = [e for e in evb if isinstance(e, DialogEstablished)][0].dialog
    # Both sides re-INVITE at once: each gets 491.
    a.request_in_dialog(da, "INVITE", link.now, body=SDP, content_type="application/sdp")
    b.request_in_dialog(db, "INVITE", link.now, body=SDP, content_type="application/sdp")
    with pytest.raises(LocalProtocolError, match="already has an INVITE"):
        a.request_in_dialog(da, "INVITE", link.now)
    link.pump()
    assert [e.response.status_code for e in events(a) if isinstance(e, ResponseReceived)] == [491]
    assert [e.response.status_code for e in events(b) if isinstance(e, ResponseReceived)] == [491]
    # B (not the Call-ID owner) retries within 0-2 s; A after 2.1-4 s.
    link.advance(link.now + 2.05)
    got = [e for e in events(a) if isinstance(e, RequestReceived)]
    assert [e.request.method for e in got] == ["INVITE"] and got[0].dialog is da
    a.respond(got[0].transaction, 200, body=SDP, content_type="application/sdp", now=link.now)
    link.pump()
    assert [e.response.status_code for e in events(b)][-1] == 200  # maybe after a 100 Trying
    assert [type(e).__name__ for e in events(a)] == ["AckReceived"]
    link.advance(link.now + 4.0)
    got = [e for e in events(b) if isinstance(e, RequestReceived)]
    assert [e.request.method for e in got] == ["INVITE"]
    b.respond(got[0].transaction, 200, now=link.now)
    link.pump()
    assert da.state is DialogState.CONFIRMED and db.state is DialogState.CONFIRMED


def test_record_route_builds_route_set_on_both_sides():
    b = SipStack(B_ADDR)
    proxy = ("127.0.0.9", 5070)
    raw = (b"INVITE sip:bob@127.0.0.2:5002 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bKp1\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bKa1\r\n"
           b"Record-Route: <sip:127.0.0.9:5070;lr>\r\n"
           b"From: <sip:alice@x>;tag=at\r\nTo: <sip:bob@y>\r\nCall-ID: rr-1\r\nCSeq: 1 INVITE\r\n"
           b"Contact: <sip:alice@127.0.0.1:5001>\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n")
    b.receive_datagram(raw, proxy, 0.0)
    req = events(b)[0]
    dialog = b.respond(req.transaction, 200, now=0.0)
    data, addr, _ = b.datagrams_to_send(0.0)[0]
    resp = parse_message(data)
    assert addr == proxy and [str(r) for r in resp.record_route] == ["<sip:127.0.0.9:5070;lr>"]
    assert len(resp.via) == 2
    assert dialog.route_set == ["<sip:127.0.0.9:5070;lr>"]
    b.bye(dialog, 0.1)
    data, addr, _ = b.datagrams_to_send(0.1)[0]
    bye = parse_message(data)
    assert addr == proxy and bye.uri_text == "sip:alice@127.0.0.1:5001"
    assert [str(r) for r in bye.route] == ["<sip:127.0.0.9:5070;lr>"]


def test_large_request_goes_over_tcp(pair):
    a, b, link = pair
    txn = a.request("MESSAGE", URI_B, 0.0, body=b"x" * 1400, content_type="text/plain")
    assert txn.transport == "TCP"
    data = a.datagrams_to_send(0.0)[0]
    assert data[2] == "TCP" and b"SIP/2.0/TCP" in data[0]
    small = a.request("MESSAGE", URI_B, 0.0, body=b"x" * 10, content_type="text/plain")
    assert small.transport == "UDP"


def test_client_timeout_event(pair):
    a, b, link = pair
    link.drop = lambda data, src, dst: True
    a.request("OPTIONS", URI_B, 0.0)
    link.pump()
    link.advance(32.5)
    ev = [e for e in events(a) if isinstance(e, TransactionTimedOut)]
    assert [(e.method, e.reason) for e in ev] == [("OPTIONS", "timer F")]


def test_uas_refreshes_target_on_reinvite(pair):
    a, b, link = pair
    _, eva, evb, _ = call(a, b, link)
    da = [e for e in eva if isinstance(e, DialogEstablished)][0].dialog
    db = [e for e in evb if isinstance(e, DialogEstablished)][0].dialog
    assert db.remote_target == "sip:alice@127.0.0.1:5001"
    a.contact = "<sip:alice@127.0.0.1:5001;moved>"
    da.local_contact = a.contact
    a.request_in_dialog(da, "INVITE", link.now, body=SDP, content_type="application/sdp")
    link.pump()
    got = [e for e in events(b) if isinstance(e, RequestReceived)]
    assert got[0].dialog is db and db.remote_target == "sip:alice@127.0.0.1:5001;moved"


def test_invite_407_answered_with_proxy_authorization_and_dialog_keeps_credentials(pair):
    from sip.auth import DigestClient, DigestServer
    a, b, link = pair
    server = DigestServer("trunk.example", b"k" * 32, algorithms=("MD5",))
    a.invite(URI_B, 0.0, body=SDP, content_type="application/sdp", auth=DigestClient("acct", "pw"))
    link.pump()
    first = [e for e in events(b) if isinstance(e, RequestReceived)][0]
    b.respond(first.transaction, 407, headers=server.challenge(0.0, proxy=True), now=0.0)
    link.pump()
    second = [e for e in events(b) if isinstance(e, RequestReceived)][0]
    creds = second.request.headers.get("Proxy-Authorization")
    assert server.verify("INVITE", creds, 0.0, password="pw").ok
    assert second.request.cseq == (2, "INVITE") and second.request.call_id == first.request.call_id
    assert len(link.sent(A_ADDR, b"ACK ")) == 1  # the 407 was ACKed by the transaction
    b.respond(second.transaction, 200, body=SDP, content_type="application/sdp", now=0.1)
    link.pump()
    eva = events(a)
    assert [e.response.status_code for e in eva if isinstance(e, ResponseReceived)] == [200]
    da = [e for e in eva if isinstance(e, DialogEstablished)][0].dialog
    assert da.auth is not None and da.local_seq == 2


def test_bye_in_early_dialog_gets_487_for_the_invite():
    b = SipStack(B_ADDR)
    inv = _raw_request(b"INVITE", b"z9hG4bKe1", extra=b"Contact: <sip:alice@127.0.0.1:5001>\r\n")
    b.receive_datagram(inv, A_ADDR, 0.0)
    req = events(b)[0]
    dialog = b.respond(req.transaction, 180, now=0.0)
    b.datagrams_to_send(0.0)
    bye = _raw_request(b"BYE", b"z9hG4bKe2", to_tag=b";tag=" + dialog.local_tag.encode(), cseq=b"2")
    b.receive_datagram(bye, A_ADDR, 0.1)
    out = [d[:11] for d, _, _ in b.datagrams_to_send(0.1)]
    assert out == [b"SIP/2.0 200", b"SIP/2.0 487"]
    assert [e.reason for e in events(b) if isinstance(e, DialogTerminated)] == ["bye_received"]


def test_keepalive_options_and_dead_peer_ends_the_dialog(pair):
    a, b, link = pair
    _, eva, evb, _ = call(a, b, link)
    da = [e for e in eva if isinstance(e, DialogEstablished)][0].dialog
    a.keepalive(da, 30.0, link.now)
    link.advance(link.now + 61.0)
    assert len(link.sent(A_ADDR, b"OPTIONS ")) == 2
    assert [e.response.status_code for e in events(a) if isinstance(e, ResponseReceived)] == [200, 200]
    link.drop = lambda data, src, dst: src == B_ADDR  # the peer vanishes
    link.advance(link.now + 30.0 + 33.0)
    term = [e for e in events(a) if isinstance(e, DialogTerminated)]
    assert [t.reason for t in term] == ["timeout"] and da.terminated
    assert da.keepalive_timer is None or not da.keepalive_timer.active


def test_many_calls_leave_no_state_behind():
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    from bench.sip_callflow import CallFlow
    flow = CallFlow()
    for _ in range(200):
        flow.call()
    s = flow.stack
    assert s.transaction_counts[1] > 0 and len(s.timers) > 0
    s.handle_timer(flow.now + 64 * 0.5 + 1)
    assert s.transaction_counts == (0, 0) and len(s.timers) == 0
    assert s._merge == {} and s.dialogs == [] and s.datagrams_to_send(0) == []


@pytest.mark.parametrize("change,status", [
    ((b"INVITE sip:bob@127.0.0.2:5002", b"INVITE http://bob.example/"), 416),
    ((b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRequire: foo, 100rel\r\n"), 420),
    ((b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nContent-Type: text/html\r\n"), 415),
])
def test_uas_request_checks(change, status):
    b = SipStack(B_ADDR)
    raw = _raw_request(b"INVITE", b"z9hG4bKchk").replace(*change)
    if status == 415:
        raw = raw.replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 4\r\n\r\n<p/>")
    b.receive_datagram(raw, A_ADDR, 0.0)
    out = b.datagrams_to_send(0.0)
    assert out[0][0].startswith(b"SIP/2.0 %d" % status) and events(b) == []
    if status == 420:
        assert parse_message(out[0][0]).headers.get("Unsupported") == "foo, 100rel"
