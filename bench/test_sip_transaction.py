"""Transaction/call throughput of the sans-IO SIP core, beside same-run baselines.

* ``test_stack_call``: one SIPp-like call (INVITE → 200+SDP, ACK, BYE → 200)
  through the full SipStack: parse, transactions, dialog, 2xx-until-ACK timer.
* ``test_baseline_thin_call``: the same three datagrams through the thin
  regex responder's logic (bench/sip_thin_responder.py): the floor.
* ``test_transactions_only``: INVITE server transaction + non-INVITE server
  transaction lifecycle with pre-built bytes (no parsing): the state machines.
"""
from __future__ import annotations

from bench.sip_callflow import ACK, BYE, INVITE, SRC, CallFlow
from bench.sip_thin_responder import Thin
from sip.timers import TimerHeap
from sip.transaction import ServerTransaction


def test_stack_call(benchmark):
    flow = CallFlow()
    benchmark(flow.call)
    assert flow.stack.transaction_counts[1] > 0


class _Sink:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data, addr) -> None:
        self.sent += 1


def test_baseline_thin_call(benchmark):
    thin = Thin()
    sink = _Sink()
    thin.connection_made(sink)
    state = {"n": 0}

    def call():
        state["n"] += 1
        n = state["n"]
        thin.datagram_received(INVITE.format(n=n).encode(), SRC)
        thin.datagram_received(ACK.format(n=n, tag="x").encode(), SRC)
        thin.datagram_received(BYE.format(n=n, tag="x").encode(), SRC)

    benchmark(call)
    assert sink.sent == 2 * state["n"]


class _Owner:
    def __init__(self) -> None:
        self.timers = TimerHeap()
        self.ended = 0

    def transmit(self, data, addr, transport) -> None:
        pass

    def transaction_ended(self, txn, trigger) -> None:
        self.ended += 1


def test_transactions_only(benchmark):
    owner = _Owner()
    state = {"now": 0.0, "n": 0}

    def run():
        state["n"] += 1
        state["now"] += 0.001
        now = state["now"]
        n = state["n"]
        inv = ServerTransaction(owner, (n, "INVITE"), "INVITE", "c", SRC, "UDP", now)
        inv.send_response(200, b"200", now)
        bye = ServerTransaction(owner, (n, "BYE"), "BYE", "c", SRC, "UDP", now)
        bye.send_response(200, b"200", now)
        owner.timers.run_due(now)

    benchmark(run)
