"""SIP over TLS between two endpoints of our own stack on 127.0.0.1 (real sockets,
a CA generated per module by the openssl CLI): digest REGISTER, a sips: INVITE
dialog kept on the TLS connection, certificate checks that refuse a rogue CA or
a wrong name, and mutual TLS."""
from __future__ import annotations

import asyncio
import pathlib

import pytest

from sip.auth import DigestClient
from sip.events import AckReceived, DialogTerminated, RequestReceived, ResponseReceived, TransactionTimedOut
from sip.registrar import DigestAuthenticator, Registrar
from sip.tls import TlsSettings, client_context, enable_tls, server_context
from sip.useragent import SipEndpoint

from tls_certs import Pki, make_pki

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(coro, timeout: float = 20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def server(pki: Pki, *, client_ca: str | None = None) -> tuple[SipEndpoint, Registrar, tuple[str, int]]:
    reg = Registrar(DigestAuthenticator("sip.test", lambda user, realm: {"alice": "s3cret"}.get(user)))
    ep = SipEndpoint("127.0.0.1", 0, tcp=False, registrar=reg, user="bob")
    await ep.start()
    addr = await enable_tls(ep, server=server_context(pki.server_cert, pki.server_key, client_ca))
    assert addr is not None
    return ep, reg, addr


async def client(ca: str, **kw) -> SipEndpoint:
    ep = SipEndpoint("127.0.0.1", 0, tcp=False, user="alice")
    await ep.start()
    names = kw.pop("server_names", {})
    await enable_tls(ep, client=TlsSettings(client_context(ca, **kw), names))
    return ep


async def final(ep: SipEndpoint, timeout: float = 5.0):
    while True:
        ev = await ep.next_event(timeout)
        if isinstance(ev, ResponseReceived) and ev.response.status_code >= 200:
            return ev
        if isinstance(ev, TransactionTimedOut):
            return ev


async def until(ep: SipEndpoint, cls: type, timeout: float = 5.0):
    while True:
        ev = await ep.next_event(timeout)
        if isinstance(ev, cls):
            return ev


def test_register_with_digest_over_tls(pki):
    async def scenario():
        b, reg, addr = await server(pki)
        a = await client(pki.ca, server_names={})
        try:
            a.request("REGISTER", "sips:sip.test", from_="<sips:alice@sip.test>", to="<sips:alice@sip.test>",
                      headers=[("Contact", f"<sips:alice@127.0.0.1:{a.address[1]}>")], dest=addr,
                      transport="TLS", auth=DigestClient("alice", "s3cret"))
            ev = await final(a)
            assert isinstance(ev, ResponseReceived) and ev.response.status_code == 200, ev
            (binding,) = reg.lookup("sips:alice@sip.test")
            assert binding.transport == "TLS"
            # The whole exchange (401, retry, 200) used one TLS connection.
            assert b.transport.tcp_connections and len(a.transport.tcp_connections) == 1
            assert ev.response.headers.get("Via").startswith("SIP/2.0/TLS ")
        finally:
            await a.stop()
            await b.stop()
    run(scenario())


def test_sips_invite_dialog_stays_on_tls_and_is_checked_by_name(pki):
    async def scenario():
        b, _, addr = await server(pki)
        a = await client(pki.ca, server_names={addr: "sip.test"})  # DNS subjectAltName checked
        try:
            a.invite(f"sips:bob@127.0.0.1:{addr[1]}", from_="<sips:alice@sip.test>", body=SDP,
                     content_type="application/sdp")
            ev = await b.next_event(5.0)
            assert isinstance(ev, RequestReceived) and ev.request.method == "INVITE" and ev.transport == "TLS"
            b.respond(ev.transaction, 200, body=SDP, content_type="application/sdp")
            resp = await final(a)
            assert resp.response.status_code == 200
            await until(b, AckReceived)
            (dialog_a,) = a.stack.dialogs
            assert dialog_a.transport == "TLS" and dialog_a.peer == addr
            a.bye(dialog_a)
            ended = await until(b, DialogTerminated)
            assert ended.reason == "bye_received"
        finally:
            await a.stop()
            await b.stop()
    run(scenario())


@pytest.mark.parametrize("case", ["rogue_ca", "wrong_name"])
def test_certificate_checks_refuse_and_nothing_is_sent_in_clear(pki, case):
    async def scenario():
        b, _, addr = await server(pki)
        if case == "rogue_ca":
            a = await client(pki.rogue_ca)
        else:
            a = await client(pki.ca, server_names={addr: "evil.test"})
        try:
            a.invite(f"sips:bob@127.0.0.1:{addr[1]}", from_="<sips:alice@sip.test>", body=SDP,
                     content_type="application/sdp")
            ev = await final(a)
            assert isinstance(ev, TransactionTimedOut) and ev.reason == "transport error", ev
            with pytest.raises((TimeoutError, asyncio.TimeoutError)):
                await b.next_event(0.3)
        finally:
            await a.stop()
            await b.stop()
    run(scenario())


def test_mutual_tls_requires_a_client_certificate(pki):
    async def scenario():
        b, _, addr = await server(pki, client_ca=pki.ca)
        anonymous = await client(pki.ca)
        known = await client(pki.ca, cert=pki.client_cert, key=pki.client_key)
        try:
            for ep in (anonymous, known):
                ep.request("OPTIONS", f"sips:bob@127.0.0.1:{addr[1]}", from_="<sips:alice@sip.test>")
            ok = await final(known)
            assert isinstance(ok, ResponseReceived) and ok.response.status_code == 200
            # TLS 1.3: the server refuses the anonymous client after the client's side of
            # the handshake completed, so its request dies with the connection; it never
            # gets an answer and the server keeps only the authenticated connection.
            with pytest.raises((TimeoutError, asyncio.TimeoutError)):
                await final(anonymous, 1.0)
            assert len(b.transport.tcp_connections) == 1
        finally:
            for ep in (anonymous, known, b):
                await ep.stop()
    run(scenario())


def test_no_plain_tcp_fallback_and_sips_contact_on_tls_dialogs(pki):
    """A TLS send without client settings, or to an address we hold a plain TCP
    connection to, never goes out in clear; dialogs over TLS carry a sips: Contact
    at the TLS listener (RFC 3261 §12.1.1, RFC 5630 §4.1), others keep sip:."""
    async def scenario():
        from sip.tls import certificate_names, peer_certificate

        b, _, addr = await server(pki, client_ca=pki.ca)
        plain = SipEndpoint("127.0.0.1", 0, tcp=True, user="carol")
        await plain.start()
        bare = SipEndpoint("127.0.0.1", 0, tcp=True, user="dave")  # no TLS settings at all
        await bare.start()
        a = await client(pki.ca, cert=pki.client_cert, key=pki.client_key, server_names={addr: "sip.test"})
        try:
            bare.request("OPTIONS", f"sips:carol@127.0.0.1:{plain.address[1]}", from_="<sips:dave@sip.test>")
            ev = await final(bare)
            assert isinstance(ev, TransactionTimedOut) and ev.reason == "transport error", ev
            with pytest.raises((TimeoutError, asyncio.TimeoutError)):
                await plain.next_event(0.3)  # nothing reached the plain TCP listener
            assert b.stack.tls_contact == f"<sips:bob@127.0.0.1:{addr[1]}>"
            a.invite(f"sips:bob@127.0.0.1:{addr[1]}", from_="<sips:alice@sip.test>", body=SDP,
                     content_type="application/sdp")
            inv = await until(b, RequestReceived)
            assert inv.request.headers.get("Contact").startswith("<sip:alice@")  # a has no TLS listener
            cert = peer_certificate(b.transport, inv.source)
            assert cert is not None and "phone.test" in certificate_names(cert)  # mutual TLS identity
            b.respond(inv.transaction, 200, body=SDP, content_type="application/sdp")
            resp = await final(a)
            assert resp.response.headers.get("Contact") == b.stack.tls_contact
            assert b.stack.contact_for("UDP").startswith("<sip:bob@")
        finally:
            for ep in (a, bare, plain, b):
                await ep.stop()
    run(scenario())
