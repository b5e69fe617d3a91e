"""sip/guard.py: the sans-IO abuse policy, with a fake clock and raw bytes."""
from __future__ import annotations

import logging

import pytest

from sip.events import SourceBanned
from sip.guard import GuardConfig, SourceGuard, Verdict


def req(method: str = "OPTIONS", user: str = "100", agent: str | None = None, to_user: str | None = None) -> bytes:
    ruri = f"sip:{user}@192.0.2.1" if method != "REGISTER" else "sip:192.0.2.1"
    lines = [f"{method} {ruri} SIP/2.0", "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1",
             "From: <sip:x@198.51.100.7>;tag=1", f"To: <sip:{to_user or user}@192.0.2.1>", "Call-ID: c1",
             f"CSeq: 1 {method}", "Max-Forwards: 70"]
    if agent:
        lines.append(f"User-Agent: {agent}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


SRC = ("198.51.100.7", 5060)


def test_token_bucket_drops_over_rate_then_refills():
    g = SourceGuard(GuardConfig(rate_per_s=10, burst=5, rate_violations_before_ban=0, sweep_max_users=0))
    verdicts = [g.inspect(req(), SRC, 0.0) for _ in range(8)]
    assert verdicts == [Verdict.ACCEPT] * 5 + [Verdict.DROP] * 3
    assert g.inspect(req(), SRC, 0.1) is Verdict.ACCEPT  # 0.1 s * 10/s = one token
    assert g.inspect(req(), SRC, 0.1) is Verdict.DROP
    assert g.inspect(req(), ("198.51.100.8", 5060), 0.1) is Verdict.ACCEPT  # per source
    assert g.counters.dropped_rate == 4 and not g.bans(0.1)


def test_persistent_flooder_gets_banned_and_ban_expires(caplog):
    g = SourceGuard(GuardConfig(rate_per_s=10, burst=5, rate_violations_before_ban=20, ban_s=30))
    with caplog.at_level(logging.WARNING, "sip.guard"):
        for _ in range(25):
            g.inspect(req(), SRC, 1.0)
    assert g.is_banned(SRC[0], 1.0)
    ev = g.next_event()
    assert isinstance(ev, SourceBanned) and ev.ip == SRC[0] and ev.until == 31.0 and "rate limit" in ev.reason
    assert g.next_event() is None
    assert any("banning SIP source 198.51.100.7" in r.getMessage() for r in caplog.records)
    assert g.inspect(req(), SRC, 20.0) is Verdict.DROP and g.counters.dropped_banned >= 1
    assert g.inspect(req(), SRC, 40.0) is Verdict.ACCEPT  # ban over, bucket full again


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipvicious 0.3.4", "SIPCLI/v1.8", "VaxSIPUserAgent/3.1"])
def test_scanner_user_agents_ban_at_once(agent):
    g = SourceGuard()
    assert g.inspect(req(agent=agent), SRC, 0.0) is Verdict.DROP
    assert g.is_banned(SRC[0], 0.0) and "scanner" in g.bans(0.0)[0][2]
    # Everything from that source is dropped now, even a harmless request.
    assert g.inspect(req(agent="Linphone/5"), SRC, 1.0) is Verdict.DROP


def test_ordinary_user_agents_pass():
    g = SourceGuard()
    for agent in ("baresip v1.0", "Linphone/5.2", "sipp", "Yealink SIP-T46S", "Asterisk PBX 18"):
        assert g.inspect(req(agent=agent), SRC, 0.0) is Verdict.ACCEPT, agent
    assert not g.bans(0.0)


def test_options_and_register_sweeps_ban():
    g = SourceGuard(GuardConfig(sweep_max_users=5, sweep_window_s=60))
    for i in range(5):
        assert g.inspect(req("OPTIONS", user=str(100 + i)), SRC, float(i)) is Verdict.ACCEPT
    assert g.inspect(req("OPTIONS", user="200"), SRC, 6.0) is Verdict.DROP
    assert "OPTIONS sweep over 6 users" in g.bans(6.0)[0][2]
    other = ("203.0.113.9", 5060)
    for i in range(6):
        v = g.inspect(req("REGISTER", to_user=str(300 + i)), other, float(i))
    assert v is Verdict.DROP and g.is_banned(other[0], 6.0)
    # The same user again and again is not a sweep; a slow sweep outside the window neither.
    slow = ("203.0.113.10", 5060)
    for i in range(20):
        assert g.inspect(req("REGISTER", to_user="1001"), slow, float(i)) is Verdict.ACCEPT
    for i in range(12):
        assert g.inspect(req("OPTIONS", user=str(i)), slow, 100.0 + i * 30) is Verdict.ACCEPT


def test_failed_digest_logins_ban_and_success_forgives():
    g = SourceGuard(GuardConfig(auth_failures_before_ban=3, auth_failure_window_s=60))
    assert not g.auth_failed(SRC[0], 0.0)
    assert not g.auth_failed(SRC[0], 1.0)
    g.auth_succeeded(SRC[0], 2.0)  # the right password at last: the slate is clean
    assert not g.auth_failed(SRC[0], 3.0) and not g.auth_failed(SRC[0], 4.0)
    assert g.auth_failed(SRC[0], 5.0)
    assert g.inspect(req("REGISTER"), SRC, 6.0) is Verdict.DROP
    # Failures spread wider than the window never add up.
    slow = "203.0.113.20"
    assert not any(g.auth_failed(slow, t * 61.0) for t in range(10))


def test_unknown_sources_dropped_or_rejected_until_authenticated():
    cfg = GuardConfig(unknown_sources="reject", known_networks=("10.1.0.0/16",), known_source_ttl_s=100)
    g = SourceGuard(cfg)
    assert g.inspect(req("INVITE"), SRC, 0.0) is Verdict.REJECT
    assert g.inspect(req("ACK"), SRC, 0.0) is Verdict.DROP  # an ACK is never answered
    assert g.inspect(req("INVITE"), ("10.1.2.3", 5060), 0.0) is Verdict.ACCEPT
    assert g.inspect(req("REGISTER"), SRC, 0.0) is Verdict.ACCEPT  # how a phone becomes known
    assert g.inspect(b"SIP/2.0 200 OK\r\n\r\n", SRC, 0.0) is Verdict.ACCEPT  # responses match txns
    g.auth_succeeded(SRC[0], 1.0)
    assert g.inspect(req("BYE"), SRC, 2.0) is Verdict.ACCEPT
    assert g.inspect(req("BYE"), SRC, 200.0) is Verdict.REJECT  # known status lapsed
    assert SourceGuard(GuardConfig(unknown_sources="drop")).inspect(req("INVITE"), SRC, 0.0) is Verdict.DROP


def test_registration_networks_limit_register_only():
    g = SourceGuard(GuardConfig(registration_networks=("192.0.2.0/24",)))
    assert g.inspect(req("REGISTER"), SRC, 0.0) is Verdict.REJECT
    assert g.inspect(req("REGISTER"), ("192.0.2.77", 5060), 0.0) is Verdict.ACCEPT
    assert g.inspect(req("OPTIONS"), SRC, 0.0) is Verdict.ACCEPT
    assert g.counters.rejected_registration == 1


def test_trusted_networks_skip_every_check():
    g = SourceGuard(GuardConfig(trusted_networks=("198.51.100.0/24",), rate_per_s=1, burst=1,
                                unknown_sources="drop"))
    for _ in range(50):
        assert g.inspect(req("INVITE", agent="friendly-scanner"), SRC, 0.0) is Verdict.ACCEPT
    assert not g.auth_failed(SRC[0], 0.0) and not g.bans(0.0)


def test_tables_and_log_stay_bounded_under_spoofed_sources(caplog):
    g = SourceGuard(GuardConfig(max_sources=100, rate_per_s=1, burst=1, rate_violations_before_ban=1))
    caplog.set_level(logging.WARNING, "sip.guard")
    for i in range(1000):
        ip = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
        g.inspect(req(), (ip, 5060), 0.0)
        g.inspect(req(), (ip, 5060), 0.0)  # over the rate: banned
    assert g.source_count == 100 and len(g.bans(0.0)) == 100
    assert g.counters.evicted_sources == 900
    assert len(caplog.records) == 30  # 2000 warnings' worth, 30 written this minute
    g.ban("192.0.2.1", 61.0, "later")
    assert "1970 more guard warnings in the last minute were not logged" in caplog.records[-2].getMessage()
    while g.next_event() is not None:
        pass


def test_unban_lifts_the_ban():
    g = SourceGuard()
    g.ban(SRC[0], 0.0, "manual")
    assert g.inspect(req(), SRC, 1.0) is Verdict.DROP
    assert g.unban(SRC[0]) and not g.unban(SRC[0])
    assert g.inspect(req(), SRC, 1.0) is Verdict.ACCEPT


@pytest.mark.parametrize("data", [b"", b"\r\n", b"INVITE", b"SIP/2.0", b"\xff" * 200, b"A B C\r\n\r\n",
                                  b"REGISTER sip:x SIP/2.0\r\nTo:\r\n\r\n", b"OPTIONS  SIP/2.0\r\n\r\n",
                                  b"REGISTER x SIP/2.0\r\nt: <sips:\r\nuser-agent\r\n\r\n"])
def test_garbage_never_raises(data):
    g = SourceGuard(GuardConfig(unknown_sources="reject"))
    assert isinstance(g.inspect(data, SRC, 0.0), Verdict)


def test_config_is_validated():
    with pytest.raises(ValueError, match="unknown_sources"):
        GuardConfig(unknown_sources="maybe")
    with pytest.raises(ValueError):
        GuardConfig(trusted_networks=("not-a-net",))


def test_sweep_detection_spares_known_and_registration_networks():
    for cfg, src in ((GuardConfig(sweep_max_users=3, known_networks=("10.0.0.0/8",)), ("10.1.1.1", 5060)),
                     (GuardConfig(sweep_max_users=3, registration_networks=("192.0.2.0/24",)), ("192.0.2.5", 5060))):
        g = SourceGuard(cfg)
        for i in range(20):  # an office behind one NAT address registering 20 phones
            assert g.inspect(req("REGISTER", to_user=str(2000 + i)), src, float(i)) is Verdict.ACCEPT
        assert not g.bans(20.0)
        other = ("203.0.113.1", 5060)  # the same from elsewhere is a sweep
        assert [g.inspect(req("OPTIONS", user=str(i)), other, 0.0) for i in range(4)][-1] is Verdict.DROP
