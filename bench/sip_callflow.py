"""A SIPp-like UAC call (INVITE, ACK, BYE bytes) fed to a SipStack without sockets.

Shared by ``bench/test_sip_transaction.py`` and profiling
(``python -m bench.sip_callflow`` prints µs per call and the cProfile top).
"""
from __future__ import annotations

from sip.stack import SipStack
from sip.uas import sdp_answer

SRC = ("127.0.0.1", 5091)
INVITE = ("INVITE sip:service@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK-{n}-1-0\r\n"
          "From: sipp <sip:sipp@127.0.0.1:5091>;tag={n}SIPpTag00{n}\r\nTo: service <sip:service@127.0.0.1:5090>\r\n"
          "Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5091\r\n"
          "Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\n"
          "Content-Length: 129\r\n\r\n"
          "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
ACK = ("ACK sip:service@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK-{n}-1-5\r\n"
       "From: sipp <sip:sipp@127.0.0.1:5091>;tag={n}SIPpTag00{n}\r\n"
       "To: service <sip:service@127.0.0.1:5090>;tag={tag}\r\nCall-ID: {n}-1@127.0.0.1\r\nCSeq: 1 ACK\r\n"
       "Contact: sip:sipp@127.0.0.1:5091\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
       "Content-Length: 0\r\n\r\n")
BYE = ACK.replace("ACK sip", "BYE sip").replace("CSeq: 1 ACK", "CSeq: 2 BYE").replace("-1-5", "-1-7")


class CallFlow:
    """Runs calls through one stack, advancing a fake clock 1 ms per call."""

    def __init__(self) -> None:
        self.stack = SipStack(("127.0.0.1", 5090), user_agent="")
        self.now = 0.0
        self.n = 0

    def call(self) -> None:
        s = self.stack
        self.n += 1
        n = self.n
        self.now += 0.001
        now = self.now
        s.handle_timer(now)
        s.receive_datagram(INVITE.format(n=n).encode(), SRC, now)
        ev = s.next_event()
        dialog = s.respond(ev.transaction, 200, body=sdp_answer(ev.request.body, "127.0.0.1", 4000, n),
                           content_type="application/sdp", now=now)
        s.datagrams_to_send(now)
        s.receive_datagram(ACK.format(n=n, tag=dialog.local_tag).encode(), SRC, now)
        s.receive_datagram(BYE.format(n=n, tag=dialog.local_tag).encode(), SRC, now)
        while s.next_event() is not None:
            pass
        s.datagrams_to_send(now)


if __name__ == "__main__":
    import cProfile
    import pstats
    import time

    flow = CallFlow()
    t0 = time.perf_counter()
    for _ in range(3000):
        flow.call()
    print(f"{(time.perf_counter() - t0) / 3000 * 1e6:.1f} us per call (sans-IO, no sockets)")
    prof = cProfile.Profile()
    prof.runcall(lambda: [flow.call() for _ in range(2000)])
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)
