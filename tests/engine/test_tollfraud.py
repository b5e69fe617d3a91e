"""engine/tollfraud.py: patterns per tenant and role, concurrent and daily caps."""
from __future__ import annotations

import datetime as dt

import pytest

from engine.config import ConfigError, parse_config
from engine.errors import Busy, Forbidden
from engine.tollfraud import TollFraudPolicy

CONFIG = """
[tenants.acme]
[tenants.globex]

[toll_fraud.acme]
allow = ["+49*", "+43*"]
deny = ["+49900*", "+49137*"]
roles = { agent = ["+4930*"], ivr = ["+4930555*"] }
max_concurrent_outbound = 2
max_calls_per_day = 3

[toll_fraud.default]
allow = ["+1*"]
"""

# 2026-11-23 10:00 Europe/Berlin
T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()


@pytest.fixture
def policy() -> TollFraudPolicy:
    cfg = parse_config(CONFIG, "tf.toml")
    return TollFraudPolicy(cfg.toll_fraud, time_zone="Europe/Berlin")


def test_deny_wins_then_role_list_then_tenant_list(policy):
    assert policy.check("acme", "admin", "+4940123", T0).allowed
    d = policy.check("acme", "admin", "+49900123456", T0)
    assert not d.allowed and d.code == "forbidden" and "'+49900*'" in d.reason
    assert not policy.check("acme", "admin", "+4413", T0).allowed  # no allow pattern
    assert policy.check("acme", "agent", "+4930111", T0).allowed
    d = policy.check("acme", "agent", "+4940123", T0)  # admin may, the agent role may not
    assert not d.allowed and "roles.agent" in d.reason
    assert policy.check("acme", "agent", "+4930900", T0).allowed  # the agent list covers it
    assert policy.check("acme", "ivr", "+4930555123", T0).allowed
    assert not policy.check("acme", "ivr", "+4930111", T0).allowed
    assert policy.check("default", "agent", "+15551234", T0).allowed
    assert not policy.check("default", "agent", "+4930111", T0).allowed


def test_tenant_without_policy_is_unrestricted_and_reported(policy):
    assert policy.check("globex", "agent", "+88112345", T0).allowed
    assert policy.unguarded_tenants({"acme", "globex", "default"}) == ["globex"]


@pytest.mark.parametrize("number", ["", "sip:+4930@evil", "+49 30 1", "+4930;user=phone", "1" * 40, "+49\n30"])
def test_non_numbers_are_refused_even_unrestricted(policy, number):
    assert not policy.check("globex", "admin", number, T0).allowed


def test_concurrent_cap_counts_started_legs_until_finished(policy):
    assert policy.start("c1", "acme", "admin", "+4940111", T0).allowed
    assert policy.start("c2", "acme", "admin", "+4940112", T0).allowed
    d = policy.start("c3", "acme", "admin", "+4940113", T0)
    assert not d.allowed and d.code == "busy" and "max_concurrent_outbound" in d.reason
    assert policy.concurrent("acme") == 2
    policy.finish("c1")
    policy.finish("c1")  # twice: harmless
    policy.finish("never-started")
    assert policy.concurrent("acme") == 1
    with pytest.raises(ValueError):
        policy.start("c2", "acme", "admin", "+4940112", T0)


def test_daily_cap_restarts_at_local_midnight(policy):
    for i in range(3):
        assert policy.start(f"c{i}", "acme", "admin", "+4940111", T0 + i).allowed
        policy.finish(f"c{i}")
    d = policy.check("acme", "admin", "+4940111", T0 + 10)
    assert not d.allowed and "max_calls_per_day" in d.reason
    assert policy.calls_today("acme", T0) == 3
    midnight = dt.datetime(2026, 11, 24, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()
    assert not policy.check("acme", "admin", "+4940111", midnight - 2).allowed  # 23:59:59 local
    assert policy.check("acme", "admin", "+4940111", midnight).allowed
    assert policy.calls_today("acme", midnight) == 0
    policy.seed_today("acme", 3, midnight)  # e.g. counted from today's CDRs after a restart
    assert not policy.check("acme", "admin", "+4940111", midnight).allowed


def test_refused_start_counts_nothing(policy):
    assert not policy.start("x", "acme", "admin", "+49900111", T0).allowed
    assert policy.concurrent("acme") == 0 and policy.calls_today("acme", T0) == 0
    policy.finish("x")
    assert policy.concurrent("acme") == 0


def test_require_raises_engine_errors(policy):
    policy.require("acme", "admin", "+4940111", T0)
    with pytest.raises(Forbidden, match="denied pattern"):
        policy.require("acme", "admin", "+49900111", T0)
    policy.start("a", "acme", "admin", "+4940111", T0)
    policy.start("b", "acme", "admin", "+4940111", T0)
    with pytest.raises(Busy):
        policy.require("acme", "admin", "+4940111", T0)


def test_config_errors_name_file_line_and_key():
    bad = CONFIG + '\n[toll_fraud.nope]\nallow = ["+1*"]\n\n[toll_fraud.globex]\nroles = { boss = ["1"], agent = ["x1"] }\nmax_calls_per_day = -1\n'
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, "tf.toml")
    assert exc.value.errors == [
        "tf.toml:15: toll_fraud.nope: unknown tenant 'nope' (define it under [tenants.nope])",
        "tf.toml:19: toll_fraud.globex.roles.boss: unknown role 'boss' (expected one of: admin, supervisor, "
        "agent, reporting, ivr, system)",
        "tf.toml:19: toll_fraud.globex.roles.agent[0]: not a dialed-number pattern 'x1' (digits with optional "
        "leading '+', a trailing '*' matches a prefix)",
        "tf.toml:20: toll_fraud.globex.max_calls_per_day: -1 is below the minimum 0",
    ]


def test_abuse_config_is_validated_with_lines():
    bad = '[sip.abuse]\nunknown_sources = "maybe"\ntrusted_networks = ["10.0.0.0/33"]\nburst = 0\n'
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, "a.toml")
    assert [e.split(":", 2)[1] for e in exc.value.errors] == ["2", "3", "4"]
    assert "sip.abuse.unknown_sources: 'maybe' is not one of: allow, drop, reject" in exc.value.errors[0]
    assert "sip.abuse.trusted_networks: not an IP network" in exc.value.errors[1]


def test_security_md_examples_are_valid():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 5
    cfg = parse_config(blocks[0], "security.md")  # [sip.abuse] with a trusted carrier
    assert cfg.sip.abuse.unknown_sources == "drop" and cfg.trunks["carrier"].accept_networks == ("192.0.2.0/28",)
    cfg = parse_config(blocks[1], "security.md")  # [toll_fraud.default]
    policy = TollFraudPolicy(cfg.toll_fraud)
    assert not policy.check("default", "admin", "+49900123", T0).allowed
    assert policy.check("default", "ivr", "+4930555001", T0).allowed
    for block in blocks[2:]:  # the TLS listeners and the TLS trunk name files of a real site
        with pytest.raises(ConfigError, match="no such file"):
            parse_config(block, "security.md")
