"""OPTIONS qualify against a real peer: SIPp answers the pings, then vanishes.

A UDP socket registers ``alice`` with the endpoint's registrar (a real
REGISTER/200 exchange) from port P and closes; SIPp then listens on P and
answers OPTIONS (``sipp/uas_options.xml``), so the binding's source address
is SIPp's.  The qualifier must see the contact reachable; after SIPp is
stopped the pings go unanswered and the contact must turn unreachable, with
``reachable()`` false for the call path.
"""
from __future__ import annotations

import asyncio
import socket

import pytest

from conftest_sip import HERE, free_udp_port, start_sipp, stop_process, wait_udp_bound
from sip.registrar import Registrar
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

AOR = "sip:alice@127.0.0.1"


def _register(server: tuple[str, int], port: int) -> bytes:
    """One REGISTER from 127.0.0.1:port; returns the response bytes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(5)
        sock.sendto((
            f"REGISTER sip:127.0.0.1:{server[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-qualify-1;rport\r\n"
            f"From: <{AOR}>;tag=q1\r\nTo: <{AOR}>\r\nCall-ID: qualify-reg-1@127.0.0.1\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{port}>\r\nExpires: 600\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), server)
        return sock.recvfrom(4096)[0]


async def _until(pred, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def test_qualify_sees_sipp_answer_then_vanish(tmp_path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path) -> None:
    ep = SipEndpoint("127.0.0.1", 0, on_event=lambda ev: None, tcp=False, registrar=Registrar())
    server = await ep.start()
    port = free_udp_port()
    reply = await asyncio.get_running_loop().run_in_executor(None, _register, server, port)
    assert reply.startswith(b"SIP/2.0 200 "), reply[:200]
    sipp = await start_sipp(["-sf", str(HERE / "sipp" / "uas_options.xml"), "-i", "127.0.0.1",
                             "-p", str(port), "-m", "1000"], tmp_path)
    changes: list[tuple] = []
    try:
        await wait_udp_bound(port, sipp)
        q = ep.qualify(interval_s=0.5, timeout_s=1.0, on_change=lambda *args: changes.append(args))
        assert await _until(lambda: q.state(AOR, f"sip:alice@127.0.0.1:{port}") is True, 10), \
            (tmp_path / "sipp-uas.log").read_text(errors="replace")[-2000:]
        assert q.reachable(AOR) and q.health()[0].last_rtt_s < 1.0
        await stop_process(sipp)  # the phone vanishes
        assert await _until(lambda: q.state(AOR, f"sip:alice@127.0.0.1:{port}") is False, 10)
        assert not q.reachable(AOR) and q.reachable_bindings(AOR) == []
        assert [c[2] for c in changes] == [True, False]
    finally:
        await stop_process(sipp)
        await ep.stop()
