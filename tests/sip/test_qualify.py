"""sip.qualify: OPTIONS pings to registered contacts over a fake link with a fake clock."""
from __future__ import annotations

import random

import pytest

from sip.events import ResponseReceived
from sip.qualify import Qualifier
from sip.registrar import Registrar
from sip.stack import SipStack
from sipcore_pair import A_ADDR, B_ADDR, Link

AOR = "sip:alice@127.0.0.2"
CONTACT = f"sip:alice@{A_ADDR[0]}:{A_ADDR[1]}"


@pytest.fixture
def setup():
    phone = SipStack(A_ADDR, user="alice", rng=random.Random(1))
    server = SipStack(B_ADDR, user="srv", registrar=Registrar(), rng=random.Random(2))
    link = Link(phone, server)
    changes: list[tuple] = []
    server.registrar.location.update(AOR, CONTACT, 3600, "reg-1", 1, A_ADDR, "UDP", 0.0)
    q = Qualifier(server, server.registrar.location, interval_s=10, timeout_s=2,
                  on_change=lambda *args: changes.append(args))
    return phone, server, link, q, changes


def _run(link: Link, server: SipStack, q: Qualifier, until: float) -> list:
    """Advance the link, feeding the server's events to the qualifier; the rest is returned."""
    rest = []
    while link.now < until:
        link.advance(min(until, link.now + 0.25))
        while (ev := server.next_event()) is not None:
            if not q.handle_event(ev, link.now):
                rest.append(ev)
        while link.stacks[A_ADDR].next_event() is not None:
            pass
    return rest


def _pings(link: Link) -> set[bytes]:
    """Call-IDs of the OPTIONS sent (retransmissions share one)."""
    return {line for data in link.sent(B_ADDR, b"OPTIONS ") for line in data.split(b"\r\n")
            if line.startswith(b"Call-ID:")}


def test_answering_phone_is_reachable_then_unreachable_when_silent_then_back(setup) -> None:
    phone, server, link, q, changes = setup
    assert q.state(AOR, CONTACT) is None and q.reachable(AOR)  # unknown counts as callable
    q.start(link.now)
    assert _run(link, server, q, 1.0) == []  # the ping's 200 was consumed by the qualifier
    assert q.state(AOR, CONTACT) is True
    assert [c[:3] for c in changes] == [(AOR, CONTACT, True)]
    pings = link.sent(B_ADDR, b"OPTIONS ")
    assert len(pings) == 1 and f"OPTIONS {CONTACT} SIP/2.0".encode() in pings[0]
    assert b"To: <sip:alice@127.0.0.2>" in pings[0]
    assert q.health()[0].last_rtt_s is not None

    link.drop = lambda data, src, dst: dst == A_ADDR  # the phone is gone
    _run(link, server, q, 13.0)  # next round at 10 s, timeout 2 s later
    assert q.state(AOR, CONTACT) is False and not q.reachable(AOR)
    assert q.reachable_bindings(AOR) == []
    assert changes[-1][:3] == (AOR, CONTACT, False) and changes[-1][3] == pytest.approx(12.0, abs=0.3)

    link.drop = lambda data, src, dst: False  # back (next round at 20 s)
    _run(link, server, q, 21.0)
    assert q.state(AOR, CONTACT) is True and [c[2] for c in changes] == [True, False, True]


def test_max_failures_and_forgetting_removed_bindings(setup) -> None:
    phone, server, link, q, changes = setup
    q = Qualifier(server, server.registrar.location, interval_s=5, timeout_s=1, max_failures=2,
                  on_change=lambda *args: changes.append(args))
    link.drop = lambda data, src, dst: dst == A_ADDR
    q.start(0.0)
    _run(link, server, q, 2.0)
    assert q.state(AOR, CONTACT) is None and q.health()[0].failures == 1  # one miss is not enough
    _run(link, server, q, 7.0)
    assert q.state(AOR, CONTACT) is False and changes == [(AOR, CONTACT, False, pytest.approx(6.0, abs=0.3))]
    server.registrar.location.remove_all(AOR)
    _run(link, server, q, 11.0)
    assert q.health() == [] and q.state(AOR, CONTACT) is None
    q.stop()
    sent = _pings(link)
    _run(link, server, q, 40.0)  # late Timer F ends are consumed, no new pings (only retransmissions)
    assert _pings(link) == sent


def test_any_final_answer_counts_and_other_events_pass_through(setup) -> None:
    phone, server, link, q, changes = setup
    phone.auto_options = False  # the phone's application answers OPTIONS 405 itself
    q.start(0.0)
    link.advance(0.1)
    req = next(ev for ev in iter(phone.next_event, None))
    phone.respond(req.transaction, 405, now=link.now)
    link.pump()
    own = server.request("OPTIONS", CONTACT, link.now)  # not a ping: must reach the application
    link.pump()
    req2 = next(ev for ev in iter(phone.next_event, None))
    phone.respond(req2.transaction, 200, now=link.now)
    link.pump()
    passed = [ev for ev in iter(server.next_event, None) if not q.handle_event(ev, link.now)]
    assert q.state(AOR, CONTACT) is True
    assert len(passed) == 1 and isinstance(passed[0], ResponseReceived) and passed[0].transaction is own


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Qualifier(None, None, interval_s=0)
