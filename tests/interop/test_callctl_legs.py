"""engine/legs.py against SIPp as the trunk's callee: answer (+ far-end BYE), busy, no answer
(our CANCEL), 404, 503, a 407 digest challenge, max_channels and the toll-fraud hook; and a leg to
a registered phone (our UA) carrying real RTP both ways."""
from __future__ import annotations

import asyncio
import pathlib
import time

import pytest

from conftest_callctl import (
    AGENT_PASSWORDS, InProcessEngine, Phone, ToneParty, heard_set, trunk_section,
)
from conftest_inbound import free_port, sipp_dir, start_sipp, stop_proc, wait_udp_bound
from engine.errors import InvalidArgs, NotFound
from engine.legs import (
    DialCheck, LegAnswered, LegEnded, LegFailed, LegOutcome, LegRinging, LegState, classify,
)

pytestmark = pytest.mark.interop

SIPP = pathlib.Path(__file__).resolve().parent / "sipp"


def run(coro, timeout: float = 45.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def test_classify_table():
    assert classify(486) is classify(600) is LegOutcome.BUSY
    assert {classify(s) for s in (404, 484, 604)} == {LegOutcome.INVALID_NUMBER}
    assert {classify(s) for s in (503, 480, 500, 502, 599)} == {LegOutcome.CONGESTION}
    assert {classify(s) for s in (403, 488, 603, 401, 407)} == {LegOutcome.REJECTED}
    assert classify(408) is LegOutcome.TIMEOUT


def check_digest(log: str, user: str, password: str, realm: str) -> None:
    """Recompute the RFC 2617 qop=auth response of the INVITE's Proxy-Authorization from SIPp's message log."""
    import hashlib
    import re

    line = next(ln for ln in log.splitlines() if ln.startswith("Proxy-Authorization:"))
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', line.split("Digest", 1)[1]))
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"INVITE:{fields['uri']}")
    expected = md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    assert fields["realm"] == realm and fields["qop"] == "auth"
    assert fields["response"] == expected, (fields, expected)


class Recorder:
    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, ev) -> None:
        self.events.append(ev)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def test_trunk_outcomes_against_sipp(tmp_path):
    """Six SIPp callees at once, one per trunk; each outcome classified with its SIP status."""
    cases = {  # trunk name -> (scenario, extra sipp args)
        "answer": ("callee_answer.xml", ["-rtp_echo", "-d", "4000"]),
        "busy": ((486, "Busy Here"), []),
        "missing": ((404, "Not Found"), []),
        "congested": ((503, "Service Unavailable"), []),
        "silent": ("callee_noanswer.xml", []),
        "auth": ("callee_auth.xml", ["-rtp_echo"]),
        "auth401": ("callee_auth401.xml", ["-key", "user", "acct7", "-key", "pass", "s3cret"]),  # SIPp verifies
    }
    ports = {name: free_port() for name in cases}
    extra = "".join(trunk_section(name, ports[name], caller_number="+4930999000",
                                  username="acct7" if name.startswith("auth") else "",
                                  password="s3cret" if name.startswith("auth") else "") for name in cases)
    eng = InProcessEngine(tmp_path, extra=extra)
    procs = {}
    for name, (scenario, args) in cases.items():
        d = sipp_dir(tmp_path, name, 1000, 1.0)
        if isinstance(scenario, tuple):  # a final status: SIPp reads codes at load time, so one file each
            path = d / "callee_reject.xml"
            path.write_text((SIPP / "callee_reject.xml").read_text().replace("@CODE@", str(scenario[0]))
                            .replace("@REASON@", scenario[1]))
            scenario = path
        procs[name] = start_sipp(["-sf", str(SIPP / scenario), "-i", "127.0.0.1", "-p", str(ports[name]),
                                  "-mp", str(free_port()), "-m", "1", "-timeout", "30", "-timeout_error",
                                  "-trace_msg", *args], d)

    async def scenario():
        await eng.start()
        centre = eng.centre
        probe = ToneParty(600.0, "probe")
        try:
            for name in cases:
                await wait_udp_bound(ports[name])
            recs = {name: Recorder() for name in cases}
            legs = {}
            for name in cases:
                caller = "+4940111" if name == "answer" else None  # given caller id vs the trunk's
                legs[name] = centre.legs.dial_trunk(
                    name, "+4930555999", call_id=f"out-{name}", tenant="default", caller_number=caller,
                    ring_timeout_s=1.5 if name == "silent" else 15.0, agent="1001", purpose="dial",
                    on_event=recs[name])
            outcomes = dict(zip(cases, await asyncio.gather(*(leg.wait_answer() for leg in legs.values()))))
            assert outcomes == {"answer": LegOutcome.ANSWERED, "busy": LegOutcome.BUSY,
                                "missing": LegOutcome.INVALID_NUMBER, "congested": LegOutcome.CONGESTION,
                                "silent": LegOutcome.NO_ANSWER, "auth": LegOutcome.ANSWERED,
                                "auth401": LegOutcome.ANSWERED}
            assert {n: legs[n].status for n in cases} == {"answer": 200, "busy": 486, "missing": 404,
                                                          "congested": 503, "silent": 487, "auth": 200,
                                                          "auth401": 200}
            for name in ("busy", "missing", "congested", "silent"):
                assert recs[name].kinds() == ["LegRinging", "LegFailed"], (name, recs[name].kinds())
                failed = recs[name].events[-1]
                assert failed.outcome is outcomes[name] and failed.status == legs[name].status
                assert legs[name].state is LegState.FAILED and legs[name].leg_id not in centre.media.legs
            assert recs["answer"].kinds()[:2] == ["LegRinging", "LegAnswered"]
            assert recs["auth"].kinds() == ["LegAnswered"]  # the callee never rang
            assert centre.legs.trunk_channels("answer") == 1 and centre.legs.trunk_channels("busy") == 0
            # media: a probe leg bridged to the answered leg; SIPp echoes our 600 Hz back
            leg = legs["answer"]
            probe.start()
            media = centre.media
            pl = media.create_leg("probe", call_id="out-answer", remote=("127.0.0.1", probe.port))
            probe.remote = ("127.0.0.1", pl.local_port)
            media.create_room("r-answer")
            media.join("r-answer", "probe")
            media.join("r-answer", leg.leg_id)
            start = time.monotonic()
            await asyncio.sleep(0.9)
            from conftest_callctl import goertzel_power
            echoed = goertzel_power(probe.audio(start + 0.3)[-4000:], 600.0)
            assert echoed > 1e5, echoed
            # far end hangs up (-d 4000 after its ACK): LegEnded, media leg gone
            reason = await asyncio.wait_for(leg.wait_ended(), 5)
            assert reason == "bye_received" and recs["answer"].kinds()[-1] == "LegEnded"
            assert leg.leg_id not in media.legs and leg.state is LegState.ENDED
            media.destroy_room("r-answer")
            media.destroy_leg("probe")
            # our hang-up: BYE to the authenticated callee; no LegEnded for our own hang-up
            legs["auth"].hangup()
            legs["auth401"].hangup()
            assert legs["auth"].state is LegState.ENDED
            await asyncio.sleep(0.3)
            assert recs["auth"].kinds() == ["LegAnswered"]
            assert centre.legs.live == []
        finally:
            probe.close()
            await eng.stop()

    try:
        run(scenario())
        loop_rc = {}
        for name, p in procs.items():
            try:
                loop_rc[name] = p.wait(10)
            except Exception:
                loop_rc[name] = None
        assert loop_rc == {name: 0 for name in cases}, {
            n: (tmp_path / n / "sipp.log").read_text(errors="replace")[-800:] for n, rc in loop_rc.items() if rc}
    finally:
        for p in procs.values():
            stop_proc(p)
    msgs = "".join(f.read_text(errors="replace") for f in (tmp_path / "answer").glob("*messages.log"))
    assert "From: <sip:+4940111@" in msgs                      # the caller id given
    msgs = "".join(f.read_text(errors="replace") for f in (tmp_path / "busy").glob("*messages.log"))
    assert "From: <sip:+4930999000@" in msgs                   # the trunk's caller_number
    msgs = "".join(f.read_text(errors="replace") for f in (tmp_path / "auth").glob("*messages.log"))
    assert "Proxy-Authorization: Digest" in msgs and 'username="acct7"' in msgs
    check_digest(msgs, "acct7", "s3cret", "carrier.test")
    assert "INVITE sip:+4930555999@127.0.0.1:" in msgs


def test_policy_channels_errors_and_extension_leg(tmp_path):
    """Toll-fraud refusal, max_channels, bad arguments; then a leg to a registered phone with RTP both ways."""
    dead = free_port()
    eng = InProcessEngine(tmp_path, extra=trunk_section("small", dead, max_channels=1)
                          + trunk_section("other", dead, host="127.0.0.1"))

    async def scenario():
        await eng.start()
        centre = eng.centre
        phone = Phone("2001", 700.0)
        probe = ToneParty(1000.0, "probe")
        try:
            seen: list[DialCheck] = []

            def policy(check: DialCheck) -> str | None:
                seen.append(check)
                return "premium numbers are barred" if check.number.startswith("+49900") else None

            centre.dial_policy = policy
            rec = Recorder()
            denied = centre.legs.dial_trunk("small", "+499001234", call_id="c1", tenant="default",
                                            agent="1001", purpose="transfer", on_event=rec)
            assert denied.state is LegState.FAILED and denied.outcome is LegOutcome.DENIED
            assert rec.events == []  # reported with call_soon, never re-entrantly
            await asyncio.sleep(0)
            assert rec.kinds() == ["LegFailed"] and rec.events[0].reason == "premium numbers are barred"
            assert seen[0] == DialCheck("default", "small", "+499001234", "", "c1", "1001", "transfer")
            first = centre.legs.dial_trunk("small", "+4930555", call_id="c2", tenant="default", ring_timeout_s=5)
            assert first.state is LegState.CALLING and centre.legs.trunk_channels("small") == 1
            full = centre.legs.dial_trunk("small", "+4930556", call_id="c3", tenant="default")
            assert full.outcome is LegOutcome.CONGESTION and full.status == 0 and "channels" in full.reason
            first.cancel()
            assert first.outcome is LegOutcome.CANCELLED and centre.legs.trunk_channels("small") == 0
            with pytest.raises(NotFound):
                centre.legs.dial_trunk("nope", "+4930555", call_id="c4", tenant="default")
            with pytest.raises(NotFound, match="no trunk 'other'"):  # another tenant's: as if absent
                centre.legs.dial_trunk("other", "+4930555", call_id="c4", tenant="acme")
            with pytest.raises(InvalidArgs):
                centre.legs.dial_trunk("other", "sip:evil@example.com", call_id="c4", tenant="default")
            unreg = centre.legs.dial_extension("2999", call_id="c5", tenant="default")
            assert unreg.outcome is LegOutcome.UNREACHABLE
            # a registered phone: ringing, answered, RTP both ways through a room, DTMF, our BYE
            await centre.login("1001", AGENT_PASSWORDS["1001"], "2001")
            await phone.start(eng.sip_port, AGENT_PASSWORDS["1001"])
            rec = Recorder()
            leg = centre.legs.dial_extension("2001", call_id="c6", tenant="default", caller_number="+4917",
                                             ring_timeout_s=5, on_event=rec)
            assert await asyncio.wait_for(leg.wait_answer(), 5) is LegOutcome.ANSWERED
            assert rec.kinds() == ["LegRinging", "LegAnswered"] and isinstance(rec.events[0], LegRinging)
            invite = next(r for r in phone.requests if r.method == "INVITE")
            assert invite.headers.get("X-Call-Id") == "c6" and "+4917@" in invite.headers.get("From")
            probe.start()
            pl = centre.media.create_leg("probe", call_id="c6", remote=("127.0.0.1", probe.port))
            probe.remote = ("127.0.0.1", pl.local_port)
            centre.media.create_room("r6")
            centre.media.join("r6", "probe")
            centre.media.join("r6", leg.leg_id)
            phone_heard = await phone.party.window(0.9)
            probe_heard = probe.hears(time.monotonic() - 0.6)
            assert "caller" in heard_set(phone_heard), phone_heard     # 1000 Hz from the probe
            assert "agent" in heard_set(probe_heard), probe_heard      # 700 Hz from the phone
            leg.send_dtmf("5")
            await asyncio.sleep(0.4)
            assert 5 in [e for _, e in phone.party.events]
            # far end hangs up → LegEnded
            phone.bye()
            assert await asyncio.wait_for(leg.wait_ended(), 3) == "bye_received"
            assert isinstance(rec.events[-1], LegEnded)
            with pytest.raises(InvalidArgs):
                leg.send_dtmf("1")
        finally:
            probe.close()
            await phone.stop()
            await eng.stop()

    run(scenario())
