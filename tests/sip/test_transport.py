"""The asyncio transport on real 127.0.0.1 sockets."""
from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from sip.events import AckReceived, DialogEstablished, DialogTerminated, RequestReceived, ResponseReceived
from sip.message import parse_message
from sip.useragent import SipEndpoint

OPTIONS = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/%s 127.0.0.1:9;branch=z9hG4bK%s;rport\r\n"
           b"From: <sip:t@x>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine on the stdlib loop and on uvloop (their transports differ)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro):
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(coro)
    return runner


async def _wait(ep: SipEndpoint, kind: type, timeout: float = 3.0):
    while True:
        ev = await ep.next_event(timeout)
        if isinstance(ev, kind):
            return ev


def test_udp_call_between_two_endpoints(run):
    async def main():
        uas = SipEndpoint("127.0.0.1", 0)
        uac = SipEndpoint("127.0.0.1", 0)
        host, port = await uas.start()
        await uac.start()
        try:
            txn = uac.invite(f"sip:bob@{host}:{port}")
            req = await _wait(uas, RequestReceived)
            assert req.transport == "UDP" and req.source == uac.address
            uas.respond(req.transaction, 200)
            est = await _wait(uac, DialogEstablished)
            await _wait(uas, AckReceived)
            uac.bye(est.dialog)
            term = await _wait(uas, DialogTerminated)
            assert term.reason == "bye_received" and txn.method == "INVITE"
            resp = await _wait(uac, ResponseReceived)
            if resp.response.cseq[1] == "INVITE":  # the 200 to INVITE came after DialogEstablished
                resp = await _wait(uac, ResponseReceived)
            assert resp.response.cseq == (2, "BYE") and resp.response.status_code == 200
        finally:
            await uac.stop()
            await uas.stop()
    run(main())


def test_udp_garbage_never_kills_the_endpoint_and_bad_request_gets_400(run):
    async def main():
        ep = SipEndpoint("127.0.0.1", 0, tcp=False)
        addr = await ep.start()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            for junk in (b"\xff\xfe\x00", b"hello", b"SIP/2.0 200 OK\r\n\r\n", b"INVITE sip:x SIP/9.9\r\n\r\n"):
                s.sendto(junk, addr)
            bad = OPTIONS.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INFO") % (b"UDP", b"b1", b"c1")
            s.sendto(bad, addr)
            s.sendto(OPTIONS % (b"UDP", b"b2", b"c2"), addr)
            got = []
            while len(got) < 2:
                data = await asyncio.wait_for(loop.sock_recv(s, 4096), 3)
                got.append(parse_message(data))
            codes = sorted(r.status_code for r in got)
            assert codes == [200, 400]
            r400 = [r for r in got if r.status_code == 400][0]
            assert "CSeq" in r400.reason
        finally:
            s.close()
            await ep.stop()
    run(main())


def test_tcp_request_answered_on_connection_and_garbage_peer_closed_alone(run):
    async def main():
        ep = SipEndpoint("127.0.0.1", 0)
        addr = await ep.start()
        try:
            good_r, good_w = await asyncio.open_connection(*addr)
            bad_r, bad_w = await asyncio.open_connection(*addr)
            bad_w.write(b"GARBAGE GARBAGE\r\nNo-Length: here\r\n\r\n")
            await bad_w.drain()
            # The garbage peer gets its 400 (or nothing) and EOF.
            data = await asyncio.wait_for(bad_r.read(), 3)
            assert data == b"" or data.startswith(b"SIP/2.0 400")
            good_w.write(b"\r\n\r\n")  # RFC 5626 keep-alive ping → pong
            good_w.write(OPTIONS % (b"TCP", b"t1", b"c3"))
            await good_w.drain()
            pong = await asyncio.wait_for(good_r.readexactly(2), 3)
            assert pong == b"\r\n"
            head = await asyncio.wait_for(good_r.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"SIP/2.0 200 OK")
            good_w.close()
            bad_w.close()
        finally:
            await ep.stop()
    run(main())


def test_large_request_uses_tcp_and_connection_is_reused_then_idle_closed(run):
    async def main():
        a = SipEndpoint("127.0.0.1", 0)
        b = SipEndpoint("127.0.0.1", 0)
        baddr = await b.start()
        await a.start()
        a.transport.tcp_idle_timeout_s = 0.4
        try:
            uri = f"sip:bob@{baddr[0]}:{baddr[1]}"
            for i in range(2):
                txn = a.request("MESSAGE", uri, body=b"x" * 1500, content_type="text/plain")
                assert txn.transport == "TCP"
                req = await _wait(b, RequestReceived)
                assert req.transport == "TCP" and len(req.request.body) == 1500
                b.respond(req.transaction, 200)
                resp = await _wait(a, ResponseReceived)
                assert resp.response.status_code == 200
            assert len(a.transport.tcp_connections) == 1  # reused
            await asyncio.sleep(0.5)
            a.transport._sweep_idle()
            for _ in range(100):  # connection_lost arrives a loop turn or more later
                if not a.transport.tcp_connections:
                    break
                await asyncio.sleep(0.01)
            assert a.transport.tcp_connections == []
        finally:
            await a.stop()
            await b.stop()
    run(main())


def test_retransmission_timer_runs_on_the_loop(run):
    async def main():
        ep = SipEndpoint("127.0.0.1", 0, tcp=False)
        await ep.start()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            port = s.getsockname()[1]
            ep.request("OPTIONS", f"sip:x@127.0.0.1:{port}")
            t0 = loop.time()
            first = await asyncio.wait_for(loop.sock_recv(s, 4096), 2)
            second = await asyncio.wait_for(loop.sock_recv(s, 4096), 2)
            assert first == second and 0.4 < loop.time() - t0 < 1.0  # Timer E = T1
        finally:
            s.close()
            await ep.stop()
    run(main())
