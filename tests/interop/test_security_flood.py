"""Abuse defences end to end: `ctiengine run` as a subprocess under a bounded UDP
flood on loopback while a live trunk call keeps its media and a phone keeps
registering.  Distinct 127.x source addresses stand for distinct attackers."""
from __future__ import annotations

import asyncio
import socket
import sqlite3
import time

import pytest

from conftest_inbound import (
    AGENT_PASSWORDS, DIALED, DOMAIN, EngineProcess, _final, offer_sdp, register, trunk_call,
)
from engine.client import ClientError
from engine.passwords import hash_password
from sip.auth import DigestClient
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

ROOT_PASSWORD = "root-pw"
ABUSE = f"""
[users.root]
password = "{hash_password(ROOT_PASSWORD, n=1024)}"
role = "admin"
tenant = "*"

[sip.abuse]
rate_per_s = 50
burst = 50
rate_violations_before_ban = 100
auth_failures_before_ban = 3
ban_s = 120
sweep_max_users = 8
"""


def run(coro, timeout: float = 40.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture
def engine(tmp_path):
    eng = EngineProcess(tmp_path)
    text = eng.config.read_text().replace('accept_networks = ["127.0.0.0/8"]', 'accept_networks = ["127.0.0.1/32"]')
    eng.config.write_text(text + ABUSE)
    eng.start()
    yield eng
    rc = eng.stop()
    assert rc in (0, None), eng.log_text()


def options(i: int, port: int, user: str = "100", agent: str = "") -> bytes:
    ua = f"User-Agent: {agent}\r\n" if agent else ""
    return (f"OPTIONS sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.66:5999;branch=z9hG4bKflood{i};rport\r\n"
            f"From: <sip:x@127.0.0.66>;tag={i}\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: flood-{i}\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{ua}Content-Length: 0\r\n\r\n").encode()


def invite(i: int, port: int) -> bytes:
    sdp = offer_sdp(4000)
    return (f"INVITE sip:+4930555100@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.69:5999;branch=z9hG4bKprobe{i};rport\r\n"
            f"From: <sip:fraud@127.0.0.69>;tag={i}\r\nTo: <sip:+4930555100@127.0.0.1>\r\n"
            f"Call-ID: probe-{i}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:fraud@127.0.0.69:5999>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n").encode() + sdp


def call_ids_answered(sock: socket.socket, wait_s: float = 0.4) -> dict[str, int]:
    """Final status per Call-ID of the responses waiting on ``sock`` after ``wait_s``."""
    time.sleep(wait_s)
    out: dict[str, int] = {}
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return out
        status = int(data.split(b" ", 2)[1])
        call_id = next(line.split(b":", 1)[1].strip().decode() for line in data.split(b"\r\n")
                       if line.lower().startswith(b"call-id:"))
        if status >= 200:
            out[call_id] = status


def answered(sock: socket.socket, wait_s: float = 0.5) -> int:
    """Datagrams waiting on ``sock`` after ``wait_s``."""
    time.sleep(wait_s)
    n = 0
    sock.setblocking(False)
    while True:
        try:
            sock.recv(65535)
            n += 1
        except BlockingIOError:
            return n


def udp_from(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


async def bad_register(engine_port: int, host: str, extension: str, attempts: int) -> list[int | None]:
    """REGISTER with a wrong password from ``host``; the final status per attempt (None: no answer)."""
    ep = SipEndpoint(host, 0, tcp=False, user=extension)
    await ep.start()
    out: list[int | None] = []
    try:
        uri, aor = f"sip:{DOMAIN}", f"<sip:{extension}@{DOMAIN}>"
        for i in range(attempts):
            call_id = f"bad-{i}-{time.monotonic_ns()}"
            hdrs = [("Contact", f"<sip:{extension}@{host}:{ep.address[1]}>")]
            ep.request("REGISTER", uri, from_=aor, to=aor, call_id=call_id, cseq=1, headers=hdrs,
                       dest=("127.0.0.1", engine_port))
            try:
                resp = await asyncio.wait_for(_final(ep), 2.0)
            except (TimeoutError, asyncio.TimeoutError):
                out.append(None)
                continue
            if resp.status_code == 401:
                name, value = DigestClient(extension, "guess").authorize(resp.headers, "REGISTER", uri)
                ep.request("REGISTER", uri, from_=aor, to=aor, call_id=call_id, cseq=2,
                           headers=hdrs + [(name, value)], dest=("127.0.0.1", engine_port))
                resp = await asyncio.wait_for(_final(ep), 2.0)
            out.append(resp.status_code)
    finally:
        await ep.stop()
    return out


def test_flood_scanner_and_guessing_are_banned_while_call_and_phone_keep_working(engine):
    async def scenario():
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        rtp = udp_from("127.0.0.1")
        try:
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"]) == 200
            # A live trunk call (caller waits in the queue, hearing music on hold).
            trunk, final = await trunk_call(engine.sip_port, DIALED, offer_sdp(rtp.getsockname()[1]))
            assert final.response.status_code == 200
            await asyncio.sleep(0.5)
            answered(rtp, 0.0)  # discard what arrived before the flood
            rtp.setblocking(False)

            # 1. A bounded flood: 3000 OPTIONS from 127.0.0.66 as fast as we can send them,
            #    while we timestamp the call's RTP.
            flood = udp_from("127.0.0.66")
            arrivals: list[float] = []
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(3000):
                flood.sendto(options(i, engine.sip_port), ("127.0.0.1", engine.sip_port))
                if i % 200 == 0:
                    await asyncio.sleep(0)
            while loop.time() - t0 < 2.0:
                try:
                    rtp.recv(2048)
                    arrivals.append(loop.time())
                except BlockingIOError:
                    await asyncio.sleep(0.002)
            replies = answered(flood, 0.3)
            assert 40 <= replies <= 60, replies  # only the burst (+ refill) was answered, then the ban
            # The call kept its media during the flood: ~50 packets/s without long gaps.
            assert len(arrivals) >= 60, len(arrivals)
            gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
            assert max(gaps) < 0.25, max(gaps)
            # Banned: a fresh OPTIONS from the flooder gets nothing.
            flood.sendto(options(9999, engine.sip_port), ("127.0.0.1", engine.sip_port))
            assert answered(flood) == 0
            flood.close()

            # 2. A scanner User-Agent: banned at the first datagram.
            scanner = udp_from("127.0.0.67")
            scanner.sendto(options(1, engine.sip_port, agent="friendly-scanner"), ("127.0.0.1", engine.sip_port))
            assert answered(scanner) == 0
            scanner.close()

            # 3. Password guessing: 3 failures (403) ban; the 4th attempt is not answered.
            statuses = await bad_register(engine.sip_port, "127.0.0.68", "2001", 4)
            assert statuses == [403, 403, 403, None], statuses

            # 4. INVITEs from a non-trunk source (toll-fraud probing): 403, banned after 3.
            prober = udp_from("127.0.0.69")
            got = []
            for i in range(4):
                prober.sendto(invite(i, engine.sip_port), ("127.0.0.1", engine.sip_port))
                got.append(call_ids_answered(prober))
            prober.close()
            # (the 403s are retransmitted until timer H: we never ACK)
            assert [g.get(f"probe-{i}") for i, g in enumerate(got)] == [403, 403, 403, None], got
            # 5. The legitimate phone still registers, the call is still up.
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"]) == 200
            status = await alice.request("engine.status")
            assert status["counts"]["calls"] == 1 and status["counts"]["sip_bans"] == 4
            # 6. The ops: a global admin lists and lifts bans; a tenant admin may not.
            root = await engine.client("root", ROOT_PASSWORD)
            admin = await engine.client()
            try:
                bans = await root.request("sip.bans")
                assert sorted(b["ip"] for b in bans["bans"]) == ["127.0.0.66", "127.0.0.67", "127.0.0.68",
                                                                   "127.0.0.69"]
                assert bans["counters"]["scanners"] == 1 and bans["counters"]["dropped_rate"] + bans["counters"]["dropped_banned"] >= 100
                with pytest.raises(ClientError) as exc:
                    await admin.request("sip.bans")
                assert exc.value.code == "forbidden"
                assert (await root.request("sip.unban", ip="127.0.0.66"))["unbanned"] is True
                with pytest.raises(ClientError) as exc:
                    await root.request("sip.unban", ip="127.0.0.66")
                assert exc.value.code == "not_found"
            finally:
                await root.close()
                await admin.close()
            flood = udp_from("127.0.0.66")
            flood.sendto(options(10000, engine.sip_port), ("127.0.0.1", engine.sip_port))
            assert answered(flood) == 1  # unbanned: answered again
            flood.close()
            trunk.bye(trunk.stack.dialogs[0])
            await asyncio.sleep(0.3)
            await trunk.stop()
        finally:
            rtp.close()
            await alice.close()

    run(scenario())
    log = engine.log_text()
    for ip, why in (("127.0.0.66", "rate limit"), ("127.0.0.67", "scanner User-Agent"),
                    ("127.0.0.68", "failed authentications"), ("127.0.0.69", "failed authentications")):
        assert f"banning SIP source {ip}" in log and why in log, (ip, log[-3000:])
    engine.stop()
    rows = sqlite3.connect(engine.tmp / "cc.db").execute(
        "SELECT peer, result FROM audit_log WHERE op = 'sip.ban' ORDER BY ts").fetchall()
    assert [r[0] for r in rows] == ["127.0.0.66", "127.0.0.67", "127.0.0.68", "127.0.0.69"], rows
    assert sqlite3.connect(engine.tmp / "cc.db").execute(
        "SELECT user, result FROM audit_log WHERE op = 'sip.unban'").fetchall() == [("root", "ok"), ("root", "error:not_found")]
