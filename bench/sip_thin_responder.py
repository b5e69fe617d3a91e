"""Thin baseline SIP responder for the call-rate ladder (NOT a SIP stack).

uvloop UDP, regex-level header copying, no transactions, no dialogs, no
retransmissions: INVITE → 200 with a fixed SDP, BYE/other → 200, ACK ignored.
It shows what the interpreter and the loop cost on their own; the full stack
(``python -m sip.uas``) is measured against it in the same run.

    python -m bench.sip_thin_responder --port 5090
"""
from __future__ import annotations

import argparse
import asyncio
import re
import signal

_HDR = re.compile(rb"^(Via|v|From|f|To|t|Call-ID|i|CSeq):[^\r\n]*\r\n", re.M | re.I)
_SDP = (b"v=0\r\no=thin 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Thin(asyncio.DatagramProtocol):
    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        self.count = 0

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        if data.startswith(b"ACK") or data.startswith(b"SIP/"):
            return
        head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        lines = []
        for m in _HDR.finditer(head):
            line = m.group(0)
            if line[:1] in b"Tt" and line[1:2] in b":oO" and b"tag=" not in line:
                line = line[:-2] + b";tag=thin" + str(self.count).encode() + b"\r\n"
            lines.append(line)
        self.count += 1
        body = _SDP if data.startswith(b"INVITE") else b""
        extra = b"Contact: <sip:thin@127.0.0.1>\r\nContent-Type: application/sdp\r\n" if body else b""
        self.transport.sendto(b"SIP/2.0 200 OK\r\n" + b"".join(lines) + extra +
                              b"Content-Length: %d\r\n\r\n" % len(body) + body, addr)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Thin, local_addr=("127.0.0.1", port))
    print(f"READY {transport.get_extra_info('sockname')[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    transport.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    import uvloop
    uvloop.install()
    asyncio.run(main(a.port))
