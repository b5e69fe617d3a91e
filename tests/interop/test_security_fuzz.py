"""A bounded fuzz campaign against a live endpoint of our stack over real UDP: the
RFC 4475 torture messages (../shared/testdata/rfc4475, read in place) and seeded
mutations of them (byte flips, cuts, duplicated spans, header splices).  The
endpoint (registrar with digest, abuse guard in front) must answer only with
well-formed responses or drop, log no internal error, and still answer a valid
OPTIONS and REGISTER afterwards."""
from __future__ import annotations

import asyncio
import logging
import pathlib
import random
import re
import socket

import pytest

from sip.guard import GuardConfig, SourceGuard
from sip.message import parse_message
from sip.registrar import DigestAuthenticator, Registrar
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testdata" / "rfc4475"
STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6]\d\d) [^\r\n]*\r\n")
ROUNDS = 1500  # datagrams; about 2-4 s on a loaded 2-core machine


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(5)
        if not buf:
            break
        pos = rng.randrange(len(buf))
        if op == 0:
            buf[pos] = rng.randrange(256)
        elif op == 1:
            del buf[pos:pos + rng.randint(1, 40)]
        elif op == 2:
            span = buf[pos:pos + rng.randint(1, 60)]
            buf[pos:pos] = span * rng.randint(1, 4)
        elif op == 3:
            buf[pos:pos] = rng.choice([b"\r\n", b"\r\n\r\n", b";", b":", b"<", b">", b"%00", b"\x00", b" ", b","])
        else:
            buf[pos:pos] = rng.choice([b"\r\nContent-Length: 99999", b"\r\nVia: SIP/2.0/UDP [::1", b"\r\nCSeq: -1 X",
                                       b"\r\nMax-Forwards: 0", b"\r\nContact: *", b"\r\nTo: <sips:%>;tag="])
    return bytes(buf[:65000])


def test_fuzz_campaign_against_a_live_endpoint(caplog):
    seeds = [p.read_bytes() for p in sorted(CORPUS.glob("*.dat"))]
    assert len(seeds) >= 40, "RFC 4475 corpus missing (../shared/testdata/rfc4475)"
    rng = random.Random(4475)

    async def scenario():
        reg = Registrar(DigestAuthenticator("example.com", lambda u, r: "pw"))
        # The guard is in front as in production, generous enough not to throttle the campaign.
        guard = SourceGuard(GuardConfig(rate_per_s=100000, burst=100000, sweep_max_users=0))
        ep = SipEndpoint("127.0.0.1", 0, tcp=False, registrar=reg, guard=guard, user="fuzz")
        host, port = await ep.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        replies: list[bytes] = []

        def drain() -> None:
            while True:
                try:
                    replies.append(sock.recv(65535))
                except BlockingIOError:
                    return

        try:
            for i in range(ROUNDS):
                data = rng.choice(seeds) if i < len(seeds) * 2 else mutate(rng, rng.choice(seeds))
                sock.sendto(data, (host, port))
                if i % 25 == 0:
                    await asyncio.sleep(0.002)  # let the loop work; bounded pace
                    drain()
            await asyncio.sleep(0.3)
            drain()
            # Every reply is a response: a status line, a header block, Content-Length 0.
            # (Answers to requests that lacked From/To/Call-ID copy what there was,
            # RFC 3261 §8.2.6.2, so they are not all complete messages.)
            statuses = []
            for data in replies:
                m = STATUS_LINE.match(data)
                assert m is not None and data.endswith(b"\r\n\r\n"), data[:80]
                statuses.append(int(m.group(1)))
            assert statuses, "the endpoint answered nothing"
            assert {s for s in statuses if s >= 400} <= {400, 401, 403, 404, 405, 413, 415, 416, 420, 423, 481, 482,
                                                           483, 484, 488, 489, 500, 501, 505}, sorted(set(statuses))
            assert statuses.count(400) >= 20
            # The loop survived: a valid OPTIONS and a REGISTER challenge are answered.
            replies.clear()
            probe = (f"OPTIONS sip:fuzz@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]}"
                     f";branch=z9hG4bKalive;rport\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:fuzz@x>\r\nCall-ID: alive\r\n"
                     f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
            sock.sendto(probe, (host, port))
            sock.sendto(probe.replace(b"OPTIONS", b"REGISTER").replace(b"alive", b"alive2")
                        .replace(b"sip:fuzz@127.0.0.1", b"sip:127.0.0.1"), (host, port))
            await asyncio.sleep(0.3)
            drain()
            assert sorted(parse_message(r).status_code for r in replies) == [200, 401]
            return len(statuses)
        finally:
            sock.close()
            await ep.stop()

    with caplog.at_level(logging.WARNING):
        answered = asyncio.run(asyncio.wait_for(scenario(), 40))
    internal = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert internal == [], [r.getMessage() for r in internal[:5]]
    assert answered > 100
