"""``ctiengine demo`` against an engine running examples/demo.toml (moved to free
ports and a temporary directory): simulated agents log in and answer,
simulated callers walk the menu by DTMF; the printed events and the CDR rows
are checked."""
from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys

import pytest

from conftest_inbound import EngineProcess
from ivr_e2e_helpers import flow_tts_texts, prewarm_tts

pytestmark = pytest.mark.interop

ROOT = pathlib.Path(__file__).resolve().parents[2]


def demo_config(tmp: pathlib.Path, sip_port: int, ctl_port: int) -> str:
    text = (ROOT / "examples" / "demo.toml").read_text()
    rtp = 22000 + (sip_port % 200) * 40
    for old, new in [
        ("port = 5060", f"port = {sip_port}"),
        ("port = 7070", f"port = {ctl_port}"),
        ('path = "../var/ctiengine.sock"', f'path = "{tmp}/ctl.sock"'),
        ('path = "../var/demo.db"', f'path = "{tmp}/demo.db"'),
        ('path = "../var/recordings"', f'path = "{tmp}/recordings"'),
        ('path = "flows/', f'path = "{ROOT}/examples/flows/'),
        ("rtp_port_min = 20000", f"rtp_port_min = {rtp}"),
        ("rtp_port_max = 20999", f"rtp_port_max = {rtp + 38}"),
        ("min_length_s = 2", "min_length_s = 1"),  # short demo calls are kept too
    ]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_ctiengine_demo_prints_events_and_writes_cdrs(tmp_path: pathlib.Path) -> None:
    eng = EngineProcess(tmp_path)
    eng.config.write_text(demo_config(tmp_path, eng.sip_port, eng.ctl_port))
    flows = ROOT / "examples" / "flows"
    texts = flow_tts_texts(flows / "demo_centre.toml", ("welcome", "main", "sales_menu", "support_menu")) + \
        flow_tts_texts(flows / "post_call_survey.toml", ("overall", "thanks"))
    assert len(texts) == 6
    pool = prewarm_tts(tmp_path / "tts", texts)  # the prompts these two callers hear
    eng.start()
    pool.shutdown(wait=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--config", str(eng.config),
                               "--calls", "2", "--interval-s", "0.5", "--talk-s", "1.5", "--seed", "7",
                               "--timeout-s", "45"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                              start_new_session=True)
    finally:
        rc = eng.stop()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr + eng.log_text()
    assert rc == 0, eng.log_text()
    for agent in ("1001", "1002", "1003", "1004"):
        assert f"agent {agent} logged in on extension 200{agent[-1]}" in out
    assert "demo finished: 2 call(s) placed, 2 answered by agents, 1 survey answer(s)" in out
    lines = out.splitlines()
    ringing = [line for line in lines if "call.ringing" in line]
    assert any("queue sales" in line and "'department': '1'" in line and "'sales_topic': '1'" in line
               for line in ringing), ringing
    assert any("queue support" in line and "'department': '2'" in line and "'support_topic': '1'" in line
               for line in ringing), ringing
    assert sum("call.answered" in line for line in lines) == 2
    assert sum("call.ended" in line for line in lines) == 2
    assert any("-> wrapup" in line for line in lines)
    assert any("rates the call" in line for line in lines)
    assert f"recordings: {tmp_path}/recordings" in out
    assert f"CDRs: table cdr in {tmp_path}/demo.db" in out
    assert sum(line.startswith("  cdr ") and " answered " in line for line in lines) == 2
    db = sqlite3.connect(tmp_path / "demo.db")
    try:
        cdrs = db.execute("SELECT queue, agent, disposition, flow FROM cdr ORDER BY queue").fetchall()
        surveys = db.execute("SELECT agent, queue, question FROM surveys").fetchall()
        recordings = db.execute("SELECT path FROM recordings").fetchall()
    finally:
        db.close()
    assert [(q, d, f) for q, _a, d, f in cdrs] == [("sales", "answered", "centre"), ("support", "answered", "centre")]
    assert cdrs[0][1] in ("1001", "1002") and cdrs[1][1] in ("1002", "1003", "1004")
    assert surveys == [(cdrs[1][1], "support", "satisfaction/overall")]
    assert len(recordings) == 2 and all(pathlib.Path(p).exists() for (p,) in recordings)
