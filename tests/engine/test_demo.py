"""engine/demo.py without an engine: settings from the config and flags, event
lines, and a clear exit 2 when the control socket is unreachable (real CLI)."""
from __future__ import annotations

import argparse
import pathlib
import socket
import subprocess
import sys

from engine.demo import DEMO_LINE, configure, describe_event, settings_from_args

ROOT = pathlib.Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def test_settings_come_from_the_config_and_flags_override() -> None:
    s = settings_from_args(parse("--config", str(ROOT / "examples" / "demo.toml")))
    assert (s.host, s.sip_port, s.control_port, s.domain) == ("127.0.0.1", 5060, 7070, "demo.local")
    assert s.agents == {"1001": "2001", "1002": "2002", "1003": "2003", "1004": "2004"}
    assert s.dialed == DEMO_LINE and s.calls == 4
    assert s.store == str(ROOT / "var" / "demo.db") and s.recordings == str(ROOT / "var" / "recordings")
    s = settings_from_args(parse("--config", str(ROOT / "examples" / "demo.toml"), "--agents", "1004,1002:2102",
                                 "--calls", "1", "--sip-port", "5999", "--talk-s", "20"))
    assert s.agents == {"1004": "2004", "1002": "2102"}
    assert (s.calls, s.sip_port, s.talk_s) == (1, 5999, 20.0)


def test_event_lines() -> None:
    line = describe_event({"event": "call.ringing", "data": {
        "call_id": "abcdef1234567890", "caller_number": "+49170", "queue": "sales", "agent": "1001",
        "extension": "2001", "variables": {"department": "1", "post_call_flow": "post_call_survey"}}})
    assert line == ("call.ringing   call abcdef123456 from +49170 queue sales -> agent 1001 (ext 2001) "
                    "screen pop {'department': '1'}")
    assert describe_event({"event": "agent.state", "data": {"agent": "1002", "previous_state": "busy",
                                                            "state": "not_ready", "reason_code": "break"}}) == \
        "agent.state    agent 1002 busy -> not_ready (break)"
    assert describe_event({"event": "queue.stats", "data": {"queue": "sales", "waiting": 2}}).startswith(
        "queue.stats    queue=sales, waiting=2")


def test_unreachable_engine_exits_2_with_a_clear_message() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--control-port", str(port),
                           "--sip-port", str(port), "--timeout-s", "10"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot reach the engine's control socket at 127.0.0.1:{port}" in proc.stdout
    assert "make run" in proc.stdout


def test_missing_config_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--config", "/nonexistent/centre.toml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "config file /nonexistent/centre.toml not found" in proc.stderr
