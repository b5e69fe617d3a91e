"""The engine's own SIP TLS listener (`[[sip.listen]] transport = "tls"`): an agent's
phone (our UA) registers over TLS with digest after the agent logged in; a client
that does not trust the engine's CA cannot even send its REGISTER."""
from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import sys

import pytest

from conftest_callctl import InProcessEngine
from conftest_inbound import AGENT_PASSWORDS, DOMAIN, free_port
from sip.auth import DigestClient
from engine.legs import LegOutcome
from sip.events import RequestReceived, ResponseReceived, TransactionTimedOut
from sip.tls import TlsSettings, client_context, enable_tls
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

if "tls_certs" not in sys.modules:  # the PKI helper beside the SIP TLS tests
    _spec = importlib.util.spec_from_file_location(
        "tls_certs", pathlib.Path(__file__).resolve().parents[1] / "sip" / "tls_certs.py")
    sys.modules["tls_certs"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["tls_certs"])  # type: ignore[union-attr]
tls_certs = sys.modules["tls_certs"]


async def register_tls(addr: tuple[str, int], ca: str, extension: str, password: str, keep: list | None = None):
    ep = SipEndpoint("127.0.0.1", 0, tcp=False, user=extension)
    await ep.start()
    await enable_tls(ep, client=TlsSettings(client_context(ca)))
    if keep is not None:
        keep.append(ep)
    try:
        aor = f"<sip:{extension}@{DOMAIN}>"
        ep.request("REGISTER", f"sip:{DOMAIN}", from_=aor, to=aor, dest=addr, transport="TLS",
                   headers=[("Contact", f"<sip:{extension}@127.0.0.1:{ep.address[1]};transport=tls>")],
                   auth=DigestClient(extension, password))
        while True:
            ev = await ep.next_event(5.0)
            if isinstance(ev, (ResponseReceived, TransactionTimedOut)):
                if isinstance(ev, ResponseReceived) and ev.response.status_code < 200:
                    continue
                return ev
    finally:
        if keep is None:
            await ep.stop()


def test_phone_registers_over_the_engines_tls_listener(tmp_path):
    pki = tls_certs.make_pki(tmp_path / "pki")
    tls_port = free_port()
    eng = InProcessEngine(tmp_path)
    eng.text = eng.text.replace(
        f'{{ transport = "tcp", host = "127.0.0.1", port = {eng.sip_port} }},',
        f'{{ transport = "tcp", host = "127.0.0.1", port = {eng.sip_port} }},\n'
        f'  {{ transport = "tls", host = "127.0.0.1", port = {tls_port}, tls_cert = "{pki.server_cert}", '
        f'tls_key = "{pki.server_key}" }},', 1)
    assert 'transport = "tls"' in eng.text

    async def scenario():
        await eng.start()
        try:
            centre = eng.centre
            await centre.login("1001", AGENT_PASSWORDS["1001"], "2001")
            phones: list[SipEndpoint] = []
            ok = await register_tls(("127.0.0.1", tls_port), pki.ca, "2001", AGENT_PASSWORDS["1001"], phones)
            assert isinstance(ok, ResponseReceived) and ok.response.status_code == 200, ok
            (binding,) = centre.registrar.lookup(f"sip:2001@{DOMAIN}")
            assert binding.transport == "TLS"
            # The engine calls the phone back over the phone's own TLS connection.
            leg = centre.legs.dial_extension("2001", call_id="tls-1", tenant="default", ring_timeout_s=5)
            phone = phones[0]
            while True:
                ev = await phone.next_event(5.0)
                if isinstance(ev, RequestReceived):
                    break
            assert ev.request.method == "INVITE" and ev.transport == "TLS"
            phone.respond(ev.transaction, 486)
            await asyncio.sleep(0.2)
            assert leg.outcome is LegOutcome.BUSY
            await phone.stop()
            refused = await register_tls(("127.0.0.1", tls_port), pki.rogue_ca, "2001", AGENT_PASSWORDS["1001"])
            assert isinstance(refused, TransactionTimedOut) and refused.reason == "transport error"
        finally:
            await eng.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
