"""Interop with SIPp 3.6 on 127.0.0.1: the stack as UAS and as UAC."""
from __future__ import annotations

import asyncio

import pytest

from conftest_sip import HERE, SHARED_SIPP, free_udp_port, run_sipp, start_sipp, stop_process, wait_udp_bound
from sip.events import DialogEstablished, RequestReceived, ResponseReceived
from sip.uas import AnsweringUas
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop


def _check(rc, row, log, calls):
    assert rc == 0, log
    assert int(row["SuccessfulCall(C)"]) == calls and int(row["FailedCall(C)"]) == 0, log


def test_sipp_uac_calls_our_uas(tmp_path):
    async def main():
        uas = AnsweringUas("127.0.0.1", 0, ring=True)
        host, port = await uas.start()
        try:
            rc, row, log = await run_sipp(
                ["-sn", "uac", f"{host}:{port}", "-i", "127.0.0.1", "-p", str(free_udp_port()),
                 "-m", "30", "-r", "30", "-l", "30", "-recv_timeout", "5000"], tmp_path, 20)
        finally:
            await uas.stop()
        _check(rc, row, log, 30)
        assert int(row["Retransmissions(C)"]) == 0
        c = uas.counters
        assert (c.invites, c.answered, c.acks, c.ended) == (30, 30, 30, 30)
    asyncio.run(main())


def test_sipp_uac_under_loss_recovers_by_retransmission(tmp_path):
    async def main():
        uas = AnsweringUas("127.0.0.1", 0)
        host, port = await uas.start()
        try:
            rc, row, log = await run_sipp(
                ["-sn", "uac", f"{host}:{port}", "-i", "127.0.0.1", "-p", str(free_udp_port()),
                 "-m", "20", "-r", "20", "-l", "20", "-lost", "10", "-recv_timeout", "15000"], tmp_path, 40)
        finally:
            await uas.stop()
        _check(rc, row, log, 20)
        assert int(row["Retransmissions(C)"]) > 0  # losses happened and were repaired
        assert uas.counters.invites == 20
    asyncio.run(main())


def test_sipp_cancel_gets_200_and_487(tmp_path):
    async def main():
        def on_event(ev):
            if isinstance(ev, RequestReceived) and ev.request.method == "INVITE":
                ep.respond(ev.transaction, 180)  # ring forever: the caller cancels
        ep = SipEndpoint("127.0.0.1", 0, on_event=on_event)
        host, port = await ep.start()
        try:
            rc, row, log = await run_sipp(
                ["-sf", str(HERE / "sipp" / "uac_cancel.xml"), f"{host}:{port}", "-i", "127.0.0.1",
                 "-p", str(free_udp_port()), "-m", "5", "-r", "10", "-recv_timeout", "5000"], tmp_path, 20)
        finally:
            await ep.stop()
        _check(rc, row, log, 5)
    asyncio.run(main())


def test_our_uac_calls_sipp_uas(tmp_path):
    async def main():
        sport = free_udp_port()
        proc = await start_sipp(["-sn", "uas", "-i", "127.0.0.1", "-p", str(sport), "-m", "3"], tmp_path)
        ep = SipEndpoint("127.0.0.1", 0)
        await ep.start()
        try:
            await wait_udp_bound(sport, proc)
            for _ in range(3):
                ep.invite(f"sip:service@127.0.0.1:{sport}", body=b"v=0\r\n", content_type="application/sdp")
                while True:
                    ev = await ep.next_event(5)
                    if isinstance(ev, DialogEstablished):
                        break
                ep.bye(ev.dialog)
                while True:
                    ev = await ep.next_event(5)
                    if isinstance(ev, ResponseReceived) and ev.response.cseq[1] == "BYE":
                        assert ev.response.status_code == 200
                        break
            rc = await asyncio.wait_for(proc.wait(), 10)
            assert rc == 0, (tmp_path / "sipp-uas.log").read_text()[-2000:]
        finally:
            await ep.stop()
            await stop_process(proc)
    asyncio.run(main())


def test_sipp_registers_with_digest_then_calls(tmp_path):
    """SIPp's [authentication] (MD5) against our registrar, then INVITE/BYE to the same UAS."""
    async def main():
        from sip.events import RegistrationChanged
        from sip.registrar import DigestAuthenticator, Registrar
        changes = []
        # SIPp 3.6 answers only the first challenge and only MD5 (RFC 8760 order would put SHA-256 first).
        auth = DigestAuthenticator("127.0.0.1", lambda user, realm: "secret" if user == "carol" else None,
                                   algorithms=("MD5",))
        uas = AnsweringUas("127.0.0.1", 0, registrar=Registrar(auth))
        original = uas.on_event

        def on_event(ev):
            if isinstance(ev, RegistrationChanged):
                changes.append(ev)
            original(ev)
        uas.endpoint._on_event = on_event
        host, port = await uas.start()
        sport = free_udp_port()
        try:
            rc, row, log = await run_sipp(
                ["-sf", str(SHARED_SIPP / "uac_register_invite_auth.xml"), f"{host}:{port}", "-s", "carol",
                 "-au", "carol", "-ap", "secret", "-key", "callee", "bob", "-i", "127.0.0.1", "-p", str(sport),
                 "-mp", str(free_udp_port()), "-m", "1", "-recv_timeout", "8000"], tmp_path, 30)
        finally:
            await uas.stop()
        _check(rc, row, log, 1)
        assert [(c.aor, c.reason) for c in changes][:1] == [("sip:carol@127.0.0.1", "registered")]
        b = changes[0].contacts[0]
        assert b.contact == f"sip:carol@127.0.0.1:{sport}" and b.source == ("127.0.0.1", sport)
        assert uas.counters.answered == 1 and uas.counters.ended == 1
    asyncio.run(main())


def test_sipp_wrong_password_is_refused(tmp_path):
    async def main():
        from sip.registrar import DigestAuthenticator, Registrar
        auth = DigestAuthenticator("127.0.0.1", lambda user, realm: "secret", algorithms=("MD5",))
        uas = AnsweringUas("127.0.0.1", 0, registrar=Registrar(auth))
        host, port = await uas.start()
        try:
            rc, row, log = await run_sipp(
                ["-sf", str(SHARED_SIPP / "uac_register_invite_auth.xml"), f"{host}:{port}", "-s", "carol",
                 "-au", "carol", "-ap", "WRONG", "-key", "callee", "bob", "-i", "127.0.0.1",
                 "-p", str(free_udp_port()), "-mp", str(free_udp_port()), "-m", "1", "-recv_timeout", "4000"],
                tmp_path, 20)
        finally:
            await uas.stop()
        assert rc == 1 and int(row["FailedCall(C)"]) == 1, log
        assert uas.counters.invites == 0
    asyncio.run(main())


def test_sipp_uac_over_tcp_on_uvloop(tmp_path):
    """SIPp -t t1: one TCP connection, Content-Length framing, answers on the connection."""
    import uvloop

    async def main():
        uas = AnsweringUas("127.0.0.1", 0)
        host, port = await uas.start()
        try:
            rc, row, log = await run_sipp(
                ["-sn", "uac", f"{host}:{port}", "-t", "t1", "-i", "127.0.0.1", "-p", str(free_udp_port()),
                 "-m", "20", "-r", "20", "-l", "20", "-recv_timeout", "5000"], tmp_path, 20)
        finally:
            await uas.stop()
        _check(rc, row, log, 20)
        assert uas.counters.acks == 20 and uas.counters.ended == 20
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
