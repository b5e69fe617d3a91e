"""A TLS trunk end to end through a running engine (issue 12, per-trunk TLS + SDES-SRTP).

The carrier is one of our own endpoints with a TLS listener (mutual TLS both
ways, certificates from a test CA made by the openssl CLI); the agent's phone
registers over the engine's TLS listener.  A call from the carrier runs
SRTP (``RTP/SAVP``, trunk ``srtp = "required"``) into the engine and SRTP
(opportunistic ``RTP/AVP`` + ``a=crypto``, ``[sip] phone_srtp = "optional"``)
out to the phone; each end's tone is found by Goertzel in what the other end
decrypted.  Then: an INVITE from the carrier's address over UDP gets 403,
a plain offer over TLS gets 488, a client certificate without the trunk's
name gets 403, and a call out through the trunk leaves as
``sips:`` over TLS with an SRTP offer."""
from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import sys
import time

import numpy as np
import pytest

from conftest_callctl import InProcessEngine, goertzel_power
from conftest_inbound import AGENT_PASSWORDS, DIALED, DOMAIN, free_port
from engine.legs import LegOutcome
from media.engine import MediaConfig, MediaEngine
from media.player import ArraySource
from sip.auth import DigestClient
from sip.events import RequestReceived, ResponseReceived, TransactionTimedOut
from sip.sdes import accept_answer, secure_answer, secure_offer
from sip.sdp import SdpSession, SessionDescription
from sip.tls import TlsSettings, client_context, enable_tls, server_context
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

if "tls_certs" not in sys.modules:  # the PKI helper beside the SIP TLS tests
    _spec = importlib.util.spec_from_file_location(
        "tls_certs", pathlib.Path(__file__).resolve().parents[1] / "sip" / "tls_certs.py")
    sys.modules["tls_certs"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["tls_certs"])  # type: ignore[union-attr]
tls_certs = sys.modules["tls_certs"]

CARRIER_HZ, AGENT_HZ = 697.0, 1209.0


class Sink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write_frame(self, frame: np.ndarray) -> None:
        self.frames.append(frame[0].copy())

    def close(self) -> None:
        pass

    def heard_frames(self) -> int:
        return sum(1 for f in self.frames if f.any())

    def heard(self) -> np.ndarray:
        """The frames that carried sound (the far end's audio starts after some silence)."""
        frames = [f for f in self.frames if f.any()]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)


def tone(hz: float, seconds: float) -> np.ndarray:
    n = np.arange(int(8000 * seconds))
    return np.round(8000 * np.sin(2 * np.pi * hz * n / 8000.0)).astype(np.int16)


async def until(ep: SipEndpoint, cls: type, timeout: float = 5.0, final: str = ""):
    """The next ``cls`` event; with ``final``, the next final response to a ``final`` request."""
    while True:
        ev = await ep.next_event(timeout)
        if isinstance(ev, cls):
            if final and (ev.response.status_code < 200 or ev.response.cseq[1] != final):
                continue
            return ev


def play_and_record(media: MediaEngine, leg: str, hz: float) -> Sink:
    sink = Sink()
    media.create_room("r")
    media.join("r", leg)
    media.record("r", "rec", sink, [[leg]])
    media.play(ArraySource(tone(hz, 10.0)), leg_id=leg)
    return sink


def with_tls_listener(eng: InProcessEngine, pki, tls_port: int) -> str:
    """The engine's config text plus a TLS listener on ``tls_port`` (server certificate of ``pki``)."""
    text = eng.text.replace(
        f'{{ transport = "tcp", host = "127.0.0.1", port = {eng.sip_port} }},',
        f'{{ transport = "tcp", host = "127.0.0.1", port = {eng.sip_port} }},\n'
        f'  {{ transport = "tls", host = "127.0.0.1", port = {tls_port}, tls_cert = "{pki.server_cert}", '
        f'tls_key = "{pki.server_key}", tls_client_ca = "{pki.ca}" }},', 1)
    assert "tls_client_ca" in text
    return text


def test_tls_trunk_call_with_srtp_to_an_agent_on_tls(tmp_path):
    d = tmp_path / "pki"
    pki = tls_certs.make_pki(d)
    tls_certs._leaf(d, "carrier", "ca", "DNS:carrier.test,IP:127.0.0.1", "serverAuth,clientAuth")
    carrier_cert, carrier_key = str(d / "carrier.pem"), str(d / "carrier.key")
    tls_port = free_port()

    async def scenario():
        carrier = SipEndpoint("127.0.0.1", 0, tcp=False, user="carrier")
        phone = SipEndpoint("127.0.0.1", 0, tcp=False, user="2001")
        media_c = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=1))
        media_p = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=1))
        eng = None
        try:
            await carrier.start()
            await phone.start()
            carrier_tls = await enable_tls(
                carrier, server=server_context(carrier_cert, carrier_key, client_ca=pki.ca),
                client=TlsSettings(client_context(pki.ca, cert=carrier_cert, key=carrier_key),
                                   {("127.0.0.1", tls_port): "sip.test"}))
            await enable_tls(phone, client=TlsSettings(client_context(pki.ca, cert=pki.client_cert,
                                                                      key=pki.client_key)))
            eng = InProcessEngine(tmp_path)
            text = with_tls_listener(eng, pki, tls_port)
            text = text.replace(
                '[trunks.carrier]\nhost = "127.0.0.1"\n',
                f'[trunks.carrier]\nhost = "127.0.0.1"\ntransport = "tls"\nport = {carrier_tls[1]}\n'
                f'tls_ca = "{pki.ca}"\ntls_verify_name = "carrier.test"\ntls_cert = "{pki.client_cert}"\n'
                f'tls_key = "{pki.client_key}"\nsrtp = "required"\n', 1)
            assert 'transport = "tls"\nport' in text and "tls_client_ca" in text
            eng.text = text
            await eng.start()
            centre = eng.centre
            await centre.login("1001", AGENT_PASSWORDS["1001"], "2001")
            aor = f"<sip:2001@{DOMAIN}>"
            phone.request("REGISTER", f"sip:{DOMAIN}", from_=aor, to=aor, dest=("127.0.0.1", tls_port),
                          transport="TLS", auth=DigestClient("2001", AGENT_PASSWORDS["1001"]),
                          headers=[("Contact", f"<sip:2001@127.0.0.1:{phone.address[1]};transport=tls>")])
            reg = await until(phone, ResponseReceived, final="REGISTER")
            assert reg.response.status_code == 200
            centre.set_ready(centre.agent("1001"))

            # --- the carrier calls in over TLS with an RTP/SAVP offer
            await media_c.start()
            await media_p.start()
            leg_c = media_c.create_leg("c", call_id="tls-trunk")
            sdp_c = SdpSession("127.0.0.1", 1)
            offer, crypto = secure_offer(sdp_c, leg_c.local_port)
            carrier.invite(f"sips:{DIALED}@127.0.0.1:{tls_port}", from_="<sips:+4930999@carrier.test>",
                           body=bytes(offer), content_type="application/sdp")

            # --- the engine offers the call to the phone over its TLS connection, with SDES
            inv = await until(phone, RequestReceived)
            assert inv.request.method == "INVITE" and inv.transport == "TLS"
            assert inv.request.headers.get("Contact").startswith("<sips:"), inv.request.headers.get("Contact")
            assert b"a=crypto:" in inv.request.body and b"RTP/AVP" in inv.request.body  # RFC 8643 offer
            leg_p = media_p.create_leg("p", call_id="tls-trunk")
            answer_p, neg_p, keys_p = secure_answer(SdpSession("127.0.0.1", 2),
                                                    SessionDescription.parse(inv.request.body), leg_p.local_port,
                                                    opportunistic=True)
            media_p.set_srtp("p", keys_p.suite, keys_p.local_key, keys_p.remote_key)
            media_p.update_leg("p", remote=(neg_p.remote_address, neg_p.remote_port), codec=neg_p.codec)
            phone.respond(inv.transaction, 200, body=bytes(answer_p), content_type="application/sdp")

            ok = await until(carrier, ResponseReceived, final="INVITE")
            assert ok.response.status_code == 200, ok.response.status_code
            assert ok.response.headers.get("Contact").startswith("<sips:"), ok.response.headers.get("Contact")
            neg_c, keys_c = accept_answer(sdp_c, SessionDescription.parse(ok.response.body), crypto)
            media_c.set_srtp("c", keys_c.suite, keys_c.local_key, keys_c.remote_key)
            media_c.update_leg("c", remote=(neg_c.remote_address, neg_c.remote_port), codec=neg_c.codec)

            sinks = {"c": play_and_record(media_c, "c", CARRIER_HZ), "p": play_and_record(media_p, "p", AGENT_HZ)}
            for _ in range(150):  # 1 s of audio heard at each end (longer on a loaded machine)
                await asyncio.sleep(0.1)
                if min(sink.heard_frames() for sink in sinks.values()) >= 50:
                    break
            talk = {name: sink.heard() for name, sink in sinks.items()}  # what each end decrypted
            (call,) = centre.calls.values()
            for leg_id in (call.caller.leg_id, call.agent_leg.leg_id):
                srtp = centre.media.srtp_leg(leg_id)
                assert srtp is not None and srtp.unprotected >= 25 and srtp.protected >= 25, (leg_id, srtp.unprotected)
                assert srtp.auth_failures == 0
            for media, leg in ((media_c, "c"), (media_p, "p")):
                assert media.srtp_leg(leg).unprotected >= 25
            (dialog,) = carrier.stack.dialogs
            carrier.bye(dialog)
            await asyncio.sleep(0.3)

            # --- the carrier's address, but not over TLS: refused before any routing
            carrier.invite(f"sip:{DIALED}@127.0.0.1:{eng.sip_port}", from_="<sip:+4930999@carrier.test>",
                           transport="UDP", body=bytes(sdp_c.offer(leg_c.local_port)),
                           content_type="application/sdp")
            refused = await until(carrier, ResponseReceived, final="INVITE")
            assert refused.response.status_code == 403 and "TLS required" in refused.response.reason
            # --- over TLS but a plain offer on an srtp = "required" trunk: 488
            carrier.invite(f"sips:{DIALED}@127.0.0.1:{tls_port}", from_="<sips:+4930999@carrier.test>",
                           body=bytes(SdpSession("127.0.0.1", 3).offer(leg_c.local_port)),
                           content_type="application/sdp")
            plain = await until(carrier, ResponseReceived, final="INVITE")
            assert plain.response.status_code == 488

            # --- the carrier's address over mutual TLS, but a certificate of another name (a phone's): 403
            impostor = SipEndpoint("127.0.0.1", 0, tcp=False, user="impostor")
            await impostor.start()
            try:
                await enable_tls(impostor, client=TlsSettings(client_context(pki.ca, cert=pki.client_cert,
                                                                             key=pki.client_key)))
                impostor.invite(f"sips:{DIALED}@127.0.0.1:{tls_port}", from_="<sips:+4930999@carrier.test>",
                                body=bytes(offer), content_type="application/sdp")
                wrong = await until(impostor, ResponseReceived, final="INVITE")
                assert wrong.response.status_code == 403
                assert wrong.response.reason == "Forbidden (certificate is not carrier.test)"
            finally:
                await impostor.stop()

            # --- out through the trunk: sips: over TLS (engine's client certificate checked), SRTP offer
            out = centre.legs.dial_trunk("carrier", "+4930111222", call_id="out-1", tenant="default",
                                         ring_timeout_s=5)
            got = await until(carrier, RequestReceived)
            assert got.request.method == "INVITE" and got.transport == "TLS"
            assert got.request.uri_text.startswith("sips:+4930111222@"), got.request.uri_text
            assert b"RTP/SAVP" in got.request.body and b"a=crypto:" in got.request.body
            carrier.respond(got.transaction, 486)
            await asyncio.sleep(0.3)
            assert out.outcome is LegOutcome.BUSY
            return talk
        finally:
            for media in (media_c, media_p):
                await media.stop()
                media.close()
            if eng is not None:
                await eng.stop()
            await phone.stop()
            await carrier.stop()

    talk = asyncio.run(asyncio.wait_for(scenario(), 90))
    for name, own, other in (("c", CARRIER_HZ, AGENT_HZ), ("p", AGENT_HZ, CARRIER_HZ)):
        pcm = talk[name]
        assert len(pcm) >= 8000, (name, len(pcm))
        window = pcm[len(pcm) // 2: len(pcm) // 2 + 4000]  # 0.5 s in the middle of the talk
        heard_other, heard_own = goertzel_power(window, other), goertzel_power(window, own)
        assert heard_other > 1e6, (name, heard_other)  # through two SRTP legs and the engine's mixer
        assert heard_own < heard_other / 100, (name, heard_own, heard_other)


def test_trunk_tls_config_is_checked(tmp_path):
    from engine.config import ConfigError, parse_config

    eng = InProcessEngine(tmp_path)
    bad = eng.text.replace('[trunks.carrier]\nhost = "127.0.0.1"\n',
                           '[trunks.carrier]\nhost = "127.0.0.1"\nsrtp = "required"\ntls_ca = "nope.pem"\n', 1)
    with pytest.raises(ConfigError) as err:
        parse_config(bad, str(tmp_path / "engine.toml"))
    text = str(err.value)
    assert "srtp = 'required' needs transport = 'tls'" in text and "'tls_ca' needs transport = 'tls'" in text
    tls = eng.text.replace('[trunks.carrier]\nhost = "127.0.0.1"\n',
                           '[trunks.carrier]\nhost = "127.0.0.1"\ntransport = "tls"\ntls_ca = "missing.pem"\n', 1)
    with pytest.raises(ConfigError, match="no such file"):
        parse_config(tls, str(tmp_path / "engine.toml"))
    cfg = parse_config(eng.text.replace('[trunks.carrier]\nhost = "127.0.0.1"\n',
                                        '[trunks.carrier]\nhost = "127.0.0.1"\ntransport = "tls"\n', 1),
                       str(tmp_path / "engine.toml"))
    trunk = cfg.trunks["carrier"]
    assert (trunk.sip_port, trunk.srtp_mode) == (5061, "optional")
    assert parse_config(eng.text, str(tmp_path / "engine.toml")).trunks["carrier"].srtp_mode == "off"


def test_supervisor_phone_on_tls_listens_and_barges_with_srtp(tmp_path):
    """A supervisor's phone registered over TLS is rung with an SDES offer (``phone_srtp``) and, on
    SRTP, hears both parties of a plain-RTP call (Goertzel of what it decrypted); on barge the
    caller and the agent hear the supervisor through the engine's decryption of that leg."""
    from conftest_inbound import DIALED as DIALED_IN, next_event_named, offer_sdp, trunk_call
    from conftest_supervise import SUP_PASSWORDS, SUPERVISOR_CONFIG, TONES_HZ, Phone, listen_window, who_is_heard
    from engine.passwords import hash_password

    d = tmp_path / "pki"
    pki = tls_certs.make_pki(d)
    tls_port = free_port()

    async def scenario():
        sup_phone = SipEndpoint("127.0.0.1", 0, tcp=False, user="3001")
        media_s = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=1))
        phones = {"caller": Phone("caller", "trunk"), "agent": Phone("agent", "2001")}
        eng, trunk, clients = None, None, []
        try:
            await sup_phone.start()
            await enable_tls(sup_phone, client=TlsSettings(client_context(pki.ca, cert=pki.client_cert,
                                                                          key=pki.client_key)))
            for p in phones.values():
                await p.start()
            eng = InProcessEngine(tmp_path, extra=SUPERVISOR_CONFIG.format(
                **{u: hash_password(pw, n=1024) for u, pw in SUP_PASSWORDS.items()}))
            eng.text = with_tls_listener(eng, pki, tls_port)
            await eng.start()
            centre = eng.centre
            admin, alice, sup = await eng.client(), await eng.client("alice", AGENT_PASSWORDS["1001"]), \
                await eng.client("sup", SUP_PASSWORDS["sup"])
            clients = [admin, alice, sup]
            await admin.subscribe(events=["call.*", "supervisor.*"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await phones["agent"].register(eng, "2001", AGENT_PASSWORDS["1001"]) == 200  # over UDP
            await sup.request("supervisor.phone_login", password=SUP_PASSWORDS["sup"])
            aor = f"<sip:3001@{DOMAIN}>"
            sup_phone.request("REGISTER", f"sip:{DOMAIN}", from_=aor, to=aor, dest=("127.0.0.1", tls_port),
                              transport="TLS", auth=DigestClient("3001", SUP_PASSWORDS["sup"]),
                              headers=[("Contact", f"<sip:3001@127.0.0.1:{sup_phone.address[1]};transport=tls>")])
            reg = await until(sup_phone, ResponseReceived, final="REGISTER")
            assert reg.response.status_code == 200
            await alice.request("agent.ready")

            # --- a plain call from the (UDP) trunk to the agent's UDP phone
            trunk, ok = await trunk_call(eng.sip_port, DIALED_IN, offer_sdp(phones["caller"].rtp_port))
            assert ok.response.status_code == 200
            phones["caller"].connect(ok.response.body)
            assert b"a=crypto" not in ok.response.body
            answered = await next_event_named(admin, "call.answered")
            call = centre.calls[answered["data"]["call_id"]]
            for leg_id in (call.caller.leg_id, call.agent_leg.leg_id):  # UDP legs stay plain RTP
                assert centre.media.srtp_leg(leg_id) is None and not centre.mediasec.is_secure(leg_id)

            # --- listen: the supervisor's phone is rung over TLS with an SDES offer
            await sup.request("supervisor.listen", agent="1001", ring_timeout_s=5)
            inv = await until(sup_phone, RequestReceived)
            assert inv.request.method == "INVITE" and inv.transport == "TLS"
            assert b"a=crypto:" in inv.request.body and b"RTP/AVP" in inv.request.body  # phone_srtp optional
            await media_s.start()
            leg_s = media_s.create_leg("s", call_id="tls-sup")
            answer_s, neg_s, keys_s = secure_answer(SdpSession("127.0.0.1", 5),
                                                    SessionDescription.parse(inv.request.body), leg_s.local_port,
                                                    opportunistic=True)
            media_s.set_srtp("s", keys_s.suite, keys_s.local_key, keys_s.remote_key)
            media_s.update_leg("s", remote=(neg_s.remote_address, neg_s.remote_port), codec=neg_s.codec)
            sup_phone.respond(inv.transaction, 200, body=bytes(answer_s), content_type="application/sdp")
            await next_event_named(admin, "supervisor.joined")
            sink = play_and_record(media_s, "s", TONES_HZ["supervisor"])
            for _ in range(150):
                await asyncio.sleep(0.1)
                if sink.heard_frames() >= 50:
                    break
            heard = sink.heard()  # what the supervisor's phone decrypted
            (sup_leg,) = [leg for leg in centre.media.legs if "/supervisor-" in leg]
            srtp = centre.media.srtp_leg(sup_leg)
            assert srtp is not None and srtp.protected >= 25 and srtp.unprotected >= 25, srtp
            assert srtp.auth_failures == 0 and centre.mediasec.is_secure(sup_leg)
            listen, _ = await listen_window(phones)
            assert listen == {"caller": {"agent"}, "agent": {"caller"}}  # the supervisor is not heard

            # --- barge: both parties hear the supervisor, whose SRTP the engine decrypts
            await sup.request("supervisor.barge", agent="1001")
            barge, _ = await listen_window(phones)
            assert barge == {"caller": {"agent", "supervisor"}, "agent": {"caller", "supervisor"}}
            assert media_s.srtp_leg("s").unprotected >= 25 and media_s.srtp_leg("s").auth_failures == 0

            await sup.request("supervisor.leave")
            trunk.bye(ok.dialog)
            await next_event_named(admin, "call.ended")
            return heard
        finally:
            for c in clients:
                await c.close()
            if trunk is not None:
                await trunk.stop()
            await media_s.stop()
            media_s.close()
            if eng is not None:
                await eng.stop()
            for p in phones.values():
                await p.stop()
            await sup_phone.stop()

    pcm = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert len(pcm) >= 8000, len(pcm)
    window = pcm[len(pcm) // 2: len(pcm) // 2 + 4000]  # 0.5 s in the middle of the listening
    assert who_is_heard(window) == {"caller", "agent"}  # both parties, never its own tone


def test_consult_line_of_a_tls_phone_runs_srtp(tmp_path):
    """An agent's phone on TLS dials a consult of its call (an INVITE to the engine with an SDES
    offer): the engine answers with its own key (``phone_srtp``), the consult target (a phone on
    UDP, plain RTP) hears what the TLS phone encrypted and vice versa."""
    from conftest_inbound import DIALED as DIALED_IN, next_event_named, offer_sdp, trunk_call
    from conftest_supervise import TONES_HZ, Phone, who_is_heard

    d = tmp_path / "pki"
    pki = tls_certs.make_pki(d)
    tls_port = free_port()

    async def scenario():
        alice_phone = SipEndpoint("127.0.0.1", 0, tcp=False, user="2001")
        media_a = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=1))
        phones = {"caller": Phone("caller", "trunk"), "agent": Phone("agent", "2002")}  # bob: plain UDP
        eng, trunk, clients = None, None, []
        try:
            await alice_phone.start()
            await enable_tls(alice_phone, client=TlsSettings(client_context(pki.ca, cert=pki.client_cert,
                                                                            key=pki.client_key)))
            for p in phones.values():
                await p.start()
            eng = InProcessEngine(tmp_path)
            eng.text = with_tls_listener(eng, pki, tls_port)
            await eng.start()
            centre = eng.centre
            admin = await eng.client()
            alice = await eng.client("alice", AGENT_PASSWORDS["1001"])
            bob = await eng.client("bob", AGENT_PASSWORDS["1002"])
            clients = [admin, alice, bob]
            await admin.subscribe(events=["call.*"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            await bob.request("agent.login", password=AGENT_PASSWORDS["1002"], extension="2002")
            assert await phones["agent"].register(eng, "2002", AGENT_PASSWORDS["1002"]) == 200
            aor = f"<sip:2001@{DOMAIN}>"
            alice_phone.request("REGISTER", f"sip:{DOMAIN}", from_=aor, to=aor, dest=("127.0.0.1", tls_port),
                                transport="TLS", auth=DigestClient("2001", AGENT_PASSWORDS["1001"]),
                                headers=[("Contact", f"<sip:2001@127.0.0.1:{alice_phone.address[1]};transport=tls>")])
            reg = await until(alice_phone, ResponseReceived, final="REGISTER")
            assert reg.response.status_code == 200
            await alice.request("agent.ready")

            # --- a call from the trunk, answered by alice's TLS phone with SRTP
            await media_a.start()
            trunk, ok = await trunk_call(eng.sip_port, DIALED_IN, offer_sdp(phones["caller"].rtp_port))
            inv = await until(alice_phone, RequestReceived)
            assert inv.request.method == "INVITE" and b"a=crypto:" in inv.request.body
            leg_a = media_a.create_leg("a", call_id="tls-consult")
            answer_a, neg_a, keys_a = secure_answer(SdpSession("127.0.0.1", 7),
                                                    SessionDescription.parse(inv.request.body), leg_a.local_port,
                                                    opportunistic=True)
            media_a.set_srtp("a", keys_a.suite, keys_a.local_key, keys_a.remote_key)
            media_a.update_leg("a", remote=(neg_a.remote_address, neg_a.remote_port), codec=neg_a.codec)
            alice_phone.respond(inv.transaction, 200, body=bytes(answer_a), content_type="application/sdp")
            await next_event_named(admin, "call.answered")
            await bob.request("agent.ready")

            # --- the TLS phone dials bob (2002) on a consult line with an RTP/SAVP offer
            leg_l = media_a.create_leg("l", call_id="tls-consult")
            sdp_l = SdpSession("127.0.0.1", 8)
            offer_l, crypto_l = secure_offer(sdp_l, leg_l.local_port)
            alice_phone.invite(f"sips:2002@127.0.0.1:{tls_port}", dest=("127.0.0.1", tls_port), transport="TLS",
                               from_=f"<sip:2001@{DOMAIN}>", to=f"<sip:2002@{DOMAIN}>",
                               body=bytes(offer_l), content_type="application/sdp",
                               auth=DigestClient("2001", AGENT_PASSWORDS["1001"]))
            line_ok = await until(alice_phone, ResponseReceived, final="INVITE")
            assert line_ok.response.status_code == 200, line_ok.response.status_code
            assert b"RTP/SAVP" in line_ok.response.body and b"a=crypto:" in line_ok.response.body
            await next_event_named(admin, "call.consult_answered")
            neg_l, keys_l = accept_answer(sdp_l, SessionDescription.parse(line_ok.response.body), crypto_l)
            media_a.set_srtp("l", keys_l.suite, keys_l.local_key, keys_l.remote_key)
            media_a.update_leg("l", remote=(neg_l.remote_address, neg_l.remote_port), codec=neg_l.codec)
            sink = Sink()
            media_a.create_room("line")
            media_a.join("line", "l")
            media_a.record("line", "rec", sink, [["l"]])
            media_a.play(ArraySource(tone(TONES_HZ["caller"], 10.0)), leg_id="l")  # a tone bob knows by name
            for _ in range(150):
                await asyncio.sleep(0.1)
                if sink.heard_frames() >= 50:
                    break
            (line_leg,) = [leg for leg in centre.media.legs if "/line-" in leg]
            srtp = centre.media.srtp_leg(line_leg)
            assert srtp is not None and srtp.protected >= 25 and srtp.unprotected >= 25, srtp
            assert srtp.auth_failures == 0 and media_a.srtp_leg("l").auth_failures == 0
            now = time.time()
            bob_heard = who_is_heard(phones["agent"].heard_between(now - 0.6, now))
            assert bob_heard == {"caller"}, bob_heard  # the TLS phone's tone, decrypted by the engine

            # --- only the TLS phone's legs are SRTP: the trunk's and bob's (UDP) legs stay plain RTP
            call = next(iter(centre.calls.values()))
            secure = {leg for leg in centre.media.legs if centre.media.srtp_leg(leg) is not None}
            assert secure == {call.agent_leg.leg_id, line_leg}, (secure, list(centre.media.legs))
            assert all(centre.mediasec.is_secure(leg) for leg in secure)

            # --- re-INVITEs on the line keep its SRTP and the engine's key; one dropping SRTP: 488
            def crypto_line(body: bytes) -> bytes:
                return next(line for line in body.split(b"\r\n") if line.startswith(b"a=crypto:"))

            alice_phone.request_in_dialog(line_ok.dialog, "INVITE", content_type="application/sdp",
                                          body=bytes(secure_offer(sdp_l, leg_l.local_port, crypto=crypto_l)[0]))
            again = await until(alice_phone, ResponseReceived, final="INVITE")
            assert again.response.status_code == 200
            assert crypto_line(again.response.body) == crypto_line(line_ok.response.body)
            alice_phone.request_in_dialog(line_ok.dialog, "INVITE", content_type="application/sdp",
                                          body=bytes(sdp_l.offer(leg_l.local_port)))
            downgrade = await until(alice_phone, ResponseReceived, final="INVITE")
            assert downgrade.response.status_code == 488
            assert centre.mediasec.is_secure(line_leg) and centre.media.srtp_leg(line_leg).auth_failures == 0

            trunk.bye(ok.dialog)
            await next_event_named(admin, "call.ended")
            return sink.heard()
        finally:
            for c in clients:
                await c.close()
            if trunk is not None:
                await trunk.stop()
            await media_a.stop()
            media_a.close()
            if eng is not None:
                await eng.stop()
            for p in phones.values():
                await p.stop()
            await alice_phone.stop()

    pcm = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert len(pcm) >= 8000, len(pcm)
    window = pcm[len(pcm) // 2: len(pcm) // 2 + 4000]
    assert who_is_heard(window) == {"agent"}  # bob's tone, through the engine's SRTP on the line
