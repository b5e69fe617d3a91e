"""A small answering UAS built on the full stack (interop tests, the call-rate ladder).

It answers every INVITE with 200 OK and an SDP answer (optionally 180
first), lets the stack handle ACK, BYE, OPTIONS and CANCEL, and counts what
happened.  Run it alone with::

    python -m sip.uas --host 127.0.0.1 --port 5090 [--ring] [--tcp]

It prints ``READY <port>`` once bound and stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from dataclasses import dataclass

from .events import AckReceived, CancelReceived, DialogTerminated, Event, RequestReceived
from .errors import NoCommonCodecError, SdpError
from .sdp import SdpSession
from .useragent import SipEndpoint

logger = logging.getLogger(__name__)


def sdp_answer(offer: bytes, host: str, port: int, session_id: int) -> bytes | None:
    """The RFC 3264 answer to ``offer`` (sip.sdp), or None when nothing is acceptable (488)."""
    try:
        return SdpSession(host, session_id).answer_body(offer, port)[0]
    except (SdpError, NoCommonCodecError):
        return None


@dataclass
class UasCounters:
    invites: int = 0
    answered: int = 0
    acks: int = 0
    cancelled: int = 0
    ended: int = 0
    other: int = 0


class AnsweringUas:
    """Answers INVITEs on a :class:`SipEndpoint` it owns."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ring: bool = False,
                 tcp: bool = True, rtp_port: int = 40000, registrar: object = None) -> None:
        self.ring = ring
        self.rtp_port = rtp_port
        self.counters = UasCounters()
        self.endpoint = SipEndpoint(host, port, on_event=self.on_event, tcp=tcp, registrar=registrar,
                                    user="uas")
        self._session = 0

    async def start(self) -> tuple[str, int]:
        return await self.endpoint.start()

    async def stop(self) -> None:
        await self.endpoint.stop()

    def on_event(self, ev: Event) -> None:
        c = self.counters
        if isinstance(ev, RequestReceived):
            req = ev.request
            if req.method == "INVITE":
                c.invites += 1
                if self.ring:
                    self.endpoint.respond(ev.transaction, 180)
                self._session += 1
                if not req.body:  # offer in the ACK (RFC 3264 §2): not supported here
                    self.endpoint.respond(ev.transaction, 488)
                    return
                body = sdp_answer(req.body, self.endpoint.address[0], self.rtp_port, self._session)
                if body is None:
                    self.endpoint.respond(ev.transaction, 488)
                    return
                self.endpoint.respond(ev.transaction, 200, body=body, content_type="application/sdp")
                c.answered += 1
            else:
                c.other += 1
                self.endpoint.respond(ev.transaction, 200)
        elif isinstance(ev, AckReceived):
            c.acks += 1
        elif isinstance(ev, CancelReceived):
            c.cancelled += 1
        elif isinstance(ev, DialogTerminated):
            c.ended += 1


async def _main(args: argparse.Namespace) -> None:
    uas = AnsweringUas(args.host, args.port, ring=args.ring, tcp=args.tcp)
    host, port = await uas.start()
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await uas.stop()
    print(f"COUNTERS {uas.counters}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ring", action="store_true", help="send 180 before 200")
    parser.add_argument("--tcp", action="store_true", help="also listen on TCP")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--gc-threshold", type=int, default=50_000,
                        help="generation-0 GC threshold (the default 700 rescans 32 s of "
                             "transaction state far too often under load)")
    args = parser.parse_args()
    gc.set_threshold(args.gc_threshold, 20, 20)
    logging.basicConfig(level=logging.WARNING)
    if not args.no_uvloop:
        from .transport import install_uvloop
        install_uvloop()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
