"""Configuration loading: every class of error gives one exact line
``FILE:LINE: key.path: reason`` and ``ctiengine check`` exits 2; the demo
config and a full config load into the typed model."""
from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys

import pytest

from engine.config import Config, Destination, load_config, parse_config, parse_destination, schema_fields
from engine.errors import ConfigError
from engine.passwords import hash_password, verify_password
from engine.tomllines import LineIndex, format_path

ROOT = pathlib.Path(__file__).resolve().parents[2]
H = hash_password("pw", n=1024)

# Each case: a file and the exact error lines it must produce (FILE is the path).
BAD_CONFIGS: list[tuple[str, str, list[str]]] = [
    ("unknown_top_key", """
[engine]
name = "x"

[sipp]
domain = "a"
""", ["FILE:5: sipp: unknown key (did you mean 'sip'?)"]),
    ("unknown_nested_key", """
[queues.sales]
groups = ["sales"]
ring_timeout = 10

[groups.sales]
""", ["FILE:4: queues.sales.ring_timeout: unknown key (did you mean 'ring_timeout_s'?)"]),
    ("wrong_type_int", """
[media]
rtp_port_min = "20000"
""", ["FILE:3: media.rtp_port_min: expected integer, got string '20000'"]),
    ("wrong_type_bool_for_int", """
[store]
batch_max_rows = true
""", ["FILE:3: store.batch_max_rows: expected integer, got boolean true"]),
    ("missing_required", f"""
[agents.1001]
name = "Alice"
groups = []
""", ["FILE:2: agents.1001: missing required key 'password'"]),
    ("out_of_range_skill", f"""
[agents.1001]
name = "Alice"
password = "{H}"
skills = {{ sales = 11 }}
""", ["FILE:5: agents.1001.skills.sales: 11 is above the maximum 10"]),
    ("bad_choice_strategy", """
[groups.sales]

[queues.sales]
groups = ["sales"]
strategy = "fastest"
""", ["FILE:6: queues.sales.strategy: 'fastest' is not one of: longest_idle, fewest_calls, "
      "least_talk_time, round_robin, top_down, random, ring_all, best_skill, weighted"]),
    ("queue_unknown_group", """
[groups.sales]

[queues.support]
groups = ["sales", "support"]
""", ["FILE:5: queues.support.groups[1]: unknown group 'support' (no [groups.support])"]),
    ("route_unknown_queue", """
[[routes]]
dialed_number = "100"
destination = "queue:sales"
""", ["FILE:4: routes[0].destination: unknown queue 'sales' (no [queues.sales])"]),
    ("agent_unknown_group", f"""
[groups.sales]

[agents.1001]
name = "A"
password = "{H}"
groups = ["sales", "billing"]
""", ["FILE:7: agents.1001.groups[1]: unknown group 'billing' (no [groups.billing])"]),
    ("bad_password_hash", """
[users.admin]
password = "secret"
role = "admin"
""", ["FILE:3: users.admin.password: not a scrypt hash (expected 'scrypt$n=N,r=R,p=P$SALT$KEY'; "
      "make one with 'ctiengine passwd')"]),
    ("cross_tenant_reference", f"""
[tenants.acme]

[groups.sales]

[queues.acme_q]
tenant = "acme"
groups = ["sales"]
""", ["FILE:8: queues.acme_q.groups[0]: group 'sales' belongs to tenant 'default', not 'acme'"]),
    ("unknown_tenant", f"""
[groups.sales]
tenant = "nobody"
""", ["FILE:3: groups.sales.tenant: unknown tenant 'nobody' (define it under [tenants.nobody])"]),
    ("duplicate_route", """
[groups.g]
[queues.q]
groups = ["g"]

[[routes]]
dialed_number = "100"
destination = "queue:q"

[[routes]]
dialed_number = "100"
destination = "hangup"
""", ["FILE:11: routes[1].dialed_number: dialed number '100' is already routed by routes[0]"]),
    ("bad_time_zone_and_port_range", """
[engine]
time_zone = "Mars/Olympus"

[media]
rtp_port_min = 30000
rtp_port_max = 20000
""", ["FILE:3: engine.time_zone: unknown time zone 'Mars/Olympus' (expected an IANA name such as 'Europe/Berlin')",
      "FILE:6: media.rtp_port_min: 30000 is not below rtp_port_max 20000"]),
    ("tiers_not_widening", """
[groups.g]
[queues.q]
groups = ["g"]

[[queues.q.tiers]]
after_s = 60

[[queues.q.tiers]]
after_s = 30
""", ["FILE:10: queues.q.tiers[1].after_s: tiers must widen over time: after_s 30 is not above "
      "the previous tier's 60"]),
    ("supervisor_without_groups_and_agent_user", f"""
[users.sup]
password = "{H}"
role = "supervisor"

[users.ag]
password = "{H}"
role = "agent"
""", ["FILE:2: users.sup.groups: a supervisor needs at least one supervised group",
      "FILE:6: users.ag: missing required key 'agent' (role 'agent' acts as one agent number)"]),
    ("toml_syntax", """
[engine]
name = "x
""", ["FILE:3: (toml): Illegal character '\\n'"]),
    ("unix_listener_without_path", """
[control]
listen = [ { transport = "unix" } ]
""", ["FILE:3: control.listen[0]: a unix listener needs 'path'"]),
    ("after_hours_without_hours", """
[[routes]]
dialed_number = "200*"
destination = "hangup"
after_hours = ["voicemail:x"]
""", ["FILE:5: routes[0].after_hours: 'after_hours' needs 'hours' (when business hours are)"]),
    ("inbound2_callpath_keys", """
[media]
rtp_timeout_s = -1

[callpath]
sticky_wait_s = 4000
rejects_before_not_ready = 0

[groups.g]
[queues.q]
groups = ["g"]
full_destination = "queue:q"

[queues.r]
groups = ["g"]
full_destination = "pager:1"
announcements = { periodic_prompt = "nope.wav" }

[agents.1001]
name = "A"
password = "%s"
auto_answer = "yes"
""" % H, ["FILE:3: media.rtp_timeout_s: -1 is below the minimum 0",
          "FILE:6: callpath.sticky_wait_s: 4000 is above the maximum 3600",
          "FILE:7: callpath.rejects_before_not_ready: 0 is below the minimum 1",
          "FILE:12: queues.q.full_destination: a full queue cannot overflow into itself",
          "FILE:16: queues.r.full_destination: unknown destination 'pager:1' (expected one of queue:NAME, "
          "flow:NAME, agent:NAME, voicemail:NAME, number:NAME, hangup)",
          "FILE:17: queues.r.announcements.periodic_prompt: prompt file not found: DIR/nope.wav (or use 'tts:TEXT')",
          "FILE:22: agents.1001.auto_answer: expected boolean, got string 'yes'"]),
    ("screening_lists", """
[screening.a]
kind = "deny"
numbers = ["+49x"]
reject_status = 302

[screening.b]
action = "message"
windows = [{ start = "18:00", end = "08:00" }]
time_zone = "Moon/Base"

[screening.c]
message = "hello"
tenant = "ghost"

[screening.d]
action = "message"
message_file = "missing.wav"
""", ["FILE:3: screening.a.kind: 'deny' is not one of: block, allow, exempt",
      "FILE:4: screening.a.numbers: not a dialed-number pattern '+49x' (digits with optional leading '+', "
      "a trailing '*' matches a prefix)",
      "FILE:5: screening.a.reject_status: 302 is below the minimum 400",
      "FILE:8: screening.b.action: action 'message' needs 'message' (text) or 'message_file'",
      "FILE:9: screening.b.windows[0].start: start 18:00 is not before end 08:00",
      "FILE:10: screening.b.time_zone: unknown time zone 'Moon/Base' (expected an IANA name such as "
      "'Europe/Berlin')",
      "FILE:13: screening.c.message: 'message'/'message_file' are only played with action = 'message'",
      "FILE:14: screening.c.tenant: unknown tenant 'ghost' (define it under [tenants.ghost])",
      "FILE:18: screening.d.message_file: message file not found: DIR/missing.wav"]),
    ("screening_more_keys", """
[screening.e]
dialed_numbers = ["030-555"]
reject_reason = 603
windows = [{ days = ["funday"] }]
description = 1
""", ["FILE:3: screening.e.dialed_numbers: not a dialed-number pattern '030-555' (digits with optional "
      "leading '+', a trailing '*' matches a prefix)",
      "FILE:4: screening.e.reject_reason: expected string, got integer 603",
      "FILE:5: screening.e.windows[0].days: unknown day 'funday' (expected mon, tue, wed, thu, fri, sat, sun)",
      "FILE:6: screening.e.description: expected string, got integer 1"]),
    ("duty_numbers", """
[[routes]]
dialed_number = "100"
destination = "number:+4930111$abc"
""", ["FILE:4: routes[0].destination: not a phone number 'abc' (digits, optional leading '+')"]),
    ("device_extensions", """
[extensions.2001]
sip_ha1 = "5F4DCC3B5AA765D61D8327DEB882CF99"

[extensions.abc]
sip_ha1 = "5f4dcc3b5aa765d61d8327deb882cf99"
""", ["FILE:3: extensions.2001.sip_ha1: not an MD5 HA1 (32 lowercase hex digits: md5 of "
      "'EXTENSION:REALM:PASSWORD')",
      "FILE:5: extensions.abc: extension 'abc' must be digits"]),
]


@pytest.mark.parametrize("name,text,expected", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_reports_exact_lines(tmp_path: pathlib.Path, name: str, text: str, expected: list[str]) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    want = [line.replace("FILE", str(path)).replace("DIR", str(tmp_path)) for line in expected]
    assert info.value.errors == want


def test_at_least_ten_distinct_bad_files() -> None:
    assert len({c[0] for c in BAD_CONFIGS}) >= 10


@pytest.mark.parametrize("name", ["queue_unknown_group", "wrong_type_int", "toml_syntax", "missing_required"])
def test_check_command_exits_2_with_the_lines(tmp_path: pathlib.Path, name: str) -> None:
    text, expected = next((c[1], c[2]) for c in BAD_CONFIGS if c[0] == name)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:-1] == [line.replace("FILE", str(path)) for line in expected]
    assert lines[-1] == f"{path}: {len(expected)} error(s)"
    assert proc.stdout == ""


def test_all_errors_reported_together(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text("""
[engine]
log_level = "LOUD"
colour = 1

[queues.q1]
groups = ["nope"]
ring_timeout_s = 0
""")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    p = str(path)
    assert info.value.errors == [
        f"{p}:3: engine.log_level: 'LOUD' is not one of: DEBUG, INFO, WARNING, ERROR, CRITICAL",
        f"{p}:4: engine.colour: unknown key (expected one of: name, log_level, time_zone)",
        f"{p}:7: queues.q1.groups[0]: unknown group 'nope' (no [groups.nope])",
        f"{p}:8: queues.q1.ring_timeout_s: 0 is below the minimum 1",
    ]


def test_missing_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.toml"))
    assert info.value.errors[0].startswith(f"{tmp_path / 'nope.toml'}:1: (file): cannot read")


def test_demo_config_is_valid_and_typed() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "check", "examples/demo.toml"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("examples/demo.toml: OK: 1 tenant(s), 4 agent(s), 2 group(s)")
    cfg = load_config(str(ROOT / "examples/demo.toml"))
    assert sorted(cfg.agents) == ["1001", "1002", "1003", "1004"]
    assert cfg.agents["1001"].number == "1001" and cfg.agents["1001"].skills == {"sales": 9, "english": 6}
    assert verify_password("pw1001", cfg.agents["1001"].password)
    assert verify_password("demo-admin", cfg.users["admin"].password)
    assert cfg.queues["support"].tiers[0].skills == {"support": 1}
    assert [(lst.transport, lst.port) for lst in cfg.sip.listen] == [("udp", 5060), ("tcp", 5060)]
    assert cfg.control.listen[0].port == 7070 and cfg.control.listen[1].transport == "unix"
    assert cfg.resolve_path(cfg.store.path) == str(ROOT / "var" / "demo.db")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.engine.name = "x"  # type: ignore[misc]


def test_empty_config_gets_defaults() -> None:
    cfg = parse_config("", "empty.toml")
    assert cfg.store.path == "var/ctiengine.db"
    assert cfg.agents == {} and cfg.routes == ()
    assert cfg.queues == {} and Config().users == {}


def test_every_entity_carries_tenant() -> None:
    from engine import config as c

    for cls in (c.Skill, c.Group, c.Agent, c.Trunk, c.Queue, c.Hours, c.Route, c.Flow, c.User):
        assert "tenant" in [f[0] for f in schema_fields(cls)], cls.__name__


def test_destinations() -> None:
    assert parse_destination("queue:sales") == Destination("queue", "sales")
    assert str(parse_destination("hangup")) == "hangup"
    assert parse_destination("number:+4930123") == Destination("number", "+4930123")
    for bad, reason in [("queue:", "has no target"), ("hangup:x", "takes no target"),
                        ("number:12ab", "not a phone number"), ("pbx:1", "unknown destination")]:
        with pytest.raises(ValueError, match=reason):
            parse_destination(bad)


def test_line_index_arrays_and_quoted_keys() -> None:
    text = '''
[[routes]]
dialed_number = "1"
[[routes]]
after_hours = [
  "x",
]
dialed_number = "2"
[queues."a b"]
x.y = 1
[[queues."a b".tiers]]
after_s = 1
[[queues."a b".tiers]]
after_s = 2
'''
    li = LineIndex(text)
    assert li.line_of(("routes", 1, "dialed_number")) == 8
    assert li.line_of(("routes", 1, "after_hours", 0)) == 5
    assert li.line_of(("queues", "a b", "x", "y")) == 10
    assert li.line_of(("queues", "a b", "tiers", 1, "after_s")) == 14
    assert li.line_of(("nothing",)) == 1
    assert format_path(("queues", "a b", "tiers", 1, "after_s")) == 'queues."a b".tiers[1].after_s'


def test_passwords_roundtrip_and_reject() -> None:
    h = hash_password("s3cret", n=1024)
    assert h.startswith("scrypt$n=1024,r=8,p=1$")
    assert verify_password("s3cret", h)
    assert not verify_password("s3cret ", h)
    assert not verify_password("s3cret", "scrypt$n=1000,r=8,p=1$AAAA$AAAA")
    assert hash_password("x", n=1024) != hash_password("x", n=1024)  # salted
    with pytest.raises(ValueError):
        hash_password("x", n=1000)


def test_passwd_command_prints_a_verifiable_hash() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "passwd", "--stdin", "-n", "1024"],
                          input="open sesame\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert verify_password("open sesame", proc.stdout.strip())
