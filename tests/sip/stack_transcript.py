"""A deterministic transcript of two SIP cores talking, for the compiled-vs-twin differential test.

Run as a script (``python tests/sip/stack_transcript.py``) it prints one JSON
object: which modules were active (compiled or pure) and everything the two
stacks sent and reported while they ran seeded call flows over a lossy fake
link with a fake clock: calls answered with SDP, re-INVITE, OPTIONS, CANCEL,
rejected calls, calls whose ACK is lost until the 2xx gives up, stray
requests, and the RFC 4475/5118 torture messages.  The same code under
``CTIENGINE_PUREPYTHON=1`` must print the same transcript
(``test_sip_core_differential.py``).
"""
from __future__ import annotations

import json
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import sip.dialog  # noqa: E402
import sip.message  # noqa: E402
import sip.sdp  # noqa: E402
import sip.stack  # noqa: E402
import sip.timers  # noqa: E402
import sip.transaction  # noqa: E402
from sip.errors import SipError  # noqa: E402
from sip.events import (  # noqa: E402
    AckReceived, CancelReceived, DialogTerminated, RequestReceived, ResponseReceived, TransactionTimedOut,
)
from sip.sdp import SdpSession  # noqa: E402
from sip.stack import SipStack  # noqa: E402
from sipcore_pair import A_ADDR, B_ADDR, Link  # noqa: E402

CORPUS = ROOT.parent / "shared" / "testdata"
MODULES = (sip.stack.SipStack, sip.transaction.ServerTransaction, sip.dialog.Dialog, sip.timers.TimerHeap,
           sip.sdp.SdpSession, sip.message.Request)


def describe(ev: object) -> list:
    """The comparable part of an event (no object identities)."""
    name = type(ev).__name__
    if isinstance(ev, RequestReceived):
        return [name, ev.request.method, ev.request.call_id, ev.transport, ev.dialog is not None]
    if isinstance(ev, ResponseReceived):
        return [name, ev.response.status_code, ev.response.reason, ev.response.call_id]
    if isinstance(ev, DialogTerminated):
        return [name, ev.dialog.call_id, ev.reason]
    if isinstance(ev, TransactionTimedOut):
        return [name, ev.call_id, ev.method, ev.reason]
    if isinstance(ev, (AckReceived, CancelReceived)):
        return [name]
    return [name, getattr(getattr(ev, "dialog", None), "call_id", None)]


def run(calls: int = 40) -> dict:
    alice = SipStack(A_ADDR, user="alice", rng=random.Random(1))
    bob = SipStack(B_ADDR, user="bob", rng=random.Random(2))
    link = Link(alice, bob)
    counter = {"n": 0}

    def lossy(data: bytes, src: tuple, dst: tuple) -> bool:
        counter["n"] += 1
        return counter["n"] % 7 == 0  # deterministic loss: exercises every retransmission timer

    link.drop = lossy
    transcript: list = []
    session = SdpSession("127.0.0.2", 7, username="bob")
    offerer = SdpSession("127.0.0.1", 3, username="alice")

    def drain(now: float) -> None:
        for who, stack in (("alice", alice), ("bob", bob)):
            while (ev := stack.next_event()) is not None:
                transcript.append([who, round(now, 6), *describe(ev)])
                if who != "bob":
                    continue
                if isinstance(ev, RequestReceived) and ev.request.method == "INVITE":
                    n = len(transcript)
                    if n % 5 == 0:
                        bob.respond(ev.transaction, 486, now=now)
                        continue
                    try:
                        body, media = session.answer_body(ev.request.body, 40000 + n % 100)
                    except SipError as exc:
                        transcript.append(["sdp-error", type(exc).__name__, exc.message])
                        bob.respond(ev.transaction, 488, now=now)
                        continue
                    transcript.append(["negotiated", media.codec, media.payload_type, media.remote_port,
                                       media.direction, media.telephone_event_payload_type])
                    bob.respond(ev.transaction, 180, now=now)
                    if n % 3 != 0:  # some calls stay ringing until alice cancels them
                        bob.respond(ev.transaction, 200, body=body, content_type="application/sdp", now=now)
                elif isinstance(ev, RequestReceived):
                    bob.respond(ev.transaction, 200, now=now)

    pending = []
    for i in range(calls):
        now = link.now + 0.05
        body = bytes(offerer.offer(30000 + i, direction="sendonly" if i % 4 == 0 else "sendrecv"))
        txn = alice.invite(f"sip:bob@{B_ADDR[0]}:{B_ADDR[1]}", now, body=body, content_type="application/sdp")
        pending.append(txn)
        link.advance(now)
        drain(link.now)
        link.pump()
        drain(link.now)
        if i % 6 == 2:
            alice.cancel(txn, link.now)
        if i % 8 == 1:
            alice.request("OPTIONS", f"sip:bob@{B_ADDR[0]}:{B_ADDR[1]}", link.now)
        link.pump()
        drain(link.now)
        for dialog in alice.dialogs:
            if i % 3 == 1:
                alice.bye(dialog, link.now)
            elif i % 5 == 3 and dialog.client_invite is None and dialog.server_invite is None:
                alice.request_in_dialog(dialog, "INFO", link.now, body=b"Signal=5\r\n",
                                        content_type="application/dtmf-relay")
        link.pump()
        drain(link.now)
    link.advance(link.now + 40.0)  # every timer (G, H, J, K, L, 2xx give-up) runs out
    drain(link.now)
    for dialog in alice.dialogs:
        alice.bye(dialog, link.now)
    link.advance(link.now + 40.0)
    drain(link.now)
    # Torture messages straight into bob (answers go to addresses off the link).
    for path in sorted(p for d in ("rfc4475", "rfc5118") for p in (CORPUS / d).iterdir()
                       if p.suffix not in (".tsv", ".md")):
        bob.receive_datagram(path.read_bytes(), ("127.0.0.9", 5099), link.now)
        drain(link.now)
        transcript.append([path.name, [data.hex() for data, _, _ in bob.datagrams_to_send(link.now)]])
    link.advance(link.now + 40.0)
    drain(link.now)
    return {
        "modules": sorted({cls.__module__ for cls in MODULES}),
        "datagrams": [[list(src), list(dst), data.hex()] for src, dst, data in link.log],
        "foreign": [[data.hex(), list(dst), tr] for data, dst, tr in link.foreign],
        "transcript": transcript,
        "transactions": [alice.transaction_counts, bob.transaction_counts],
        "dialogs": [len(alice.dialogs), len(bob.dialogs)],
    }


if __name__ == "__main__":
    json.dump(run(), sys.stdout)
