"""Crash safety: `ctiengine run` (a real subprocess on free ports) is killed with
SIGKILL while calls are up (two trunk calls, one click-to-dial call) and an agent
is logged in, then restarted on the same
store: the store opens cleanly, the interrupted calls get CDRs with end_reason
engine_restart, the completed call's CDR is intact, and the agent is back
logged out with an agent_state_log row saying why."""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3

import pytest

from conftest_inbound import AGENT_PASSWORDS, DIALED, EngineProcess, offer_sdp, register, trunk_call

pytestmark = pytest.mark.interop


def run(coro, timeout: float = 40.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def test_kill_9_mid_calls_then_restart_closes_everything(tmp_path):
    eng = EngineProcess(tmp_path)
    eng.start()
    try:
        async def before_crash():
            alice = await eng.client("alice", AGENT_PASSWORDS["1001"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(eng.sip_port, "2001", AGENT_PASSWORDS["1001"]) == 200
            # One call that completes: answered into the queue, then the caller hangs up.
            ep, final = await trunk_call(eng.sip_port, DIALED, offer_sdp(40000), caller="+4917000010")
            assert final.response.status_code == 200
            done_call = final.response.call_id
            await asyncio.sleep(0.3)
            ep.bye(ep.stack.dialogs[0])
            await asyncio.sleep(0.5)
            await ep.stop()
            # Two calls still up (waiting in the queue, hearing music on hold) at the crash.
            up = []
            for i in range(2):
                ep, final = await trunk_call(eng.sip_port, DIALED, offer_sdp(40002 + 2 * i), caller=f"+49170000{20 + i}")
                assert final.response.status_code == 200
                up.append(final.response.call_id)
                await ep.stop()  # sockets closed without a BYE: the engine still has the call
            # A click-to-dial call up at the crash (alice's phone is being rung for it).
            dialed = await alice.request("call.dial", number="+4930111222")
            status = await alice.request("engine.status")
            assert status["counts"]["calls"] == 3
            await asyncio.sleep(0.5)  # > store.batch_interval_ms: the journal rows are committed
            await alice.close()
            return done_call, up, dialed["call_id"]

        done_call, up, dial_call = run(before_crash())
        os.killpg(eng.proc.pid, signal.SIGKILL)
        eng.proc.wait(5)
        assert eng.proc.returncode == -signal.SIGKILL

        db_path = tmp_path / "cc.db"
        before = {r[0]: r[1] for r in sqlite3.connect(db_path).execute("SELECT call_id, end_reason FROM cdr")}
        assert before == {done_call: before[done_call]} and before[done_call] != "engine_restart"

        eng.start()  # same config, same store

        async def after_restart():
            admin = await eng.client()
            snap = await admin.request("state.snapshot")
            agents = {a["agent"]: a["state"] for a in snap["agents"]}
            assert agents["1001"] == "logged_out"
            assert snap["calls"] == []
            await admin.close()
        run(after_restart())
    finally:
        eng.stop()

    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cdrs = {r[0]: r[1:] for r in db.execute("SELECT call_id, end_reason, disposition, caller_number FROM cdr")}
    assert cdrs[done_call][0] == before[done_call]  # the completed CDR is untouched
    for i, call_id in enumerate(up):
        assert cdrs[call_id] == ("engine_restart", "interrupted", f"+49170000{20 + i}"), cdrs
    dial = db.execute("SELECT direction, dialed_number, agent, end_reason, disposition FROM cdr WHERE call_id = ?",
                      (dial_call,)).fetchone()
    assert dial == ("outbound", "+4930111222", "1001", "engine_restart", "interrupted"), dial
    rows = db.execute("SELECT state, previous_state, reason_code FROM agent_state_log WHERE agent = '1001'"
                      " ORDER BY id").fetchall()
    assert rows[-1] == ("logged_out", "busy", "engine_restart"), rows  # busy with the click-to-dial call
    assert db.execute("SELECT COUNT(*) FROM call_journal").fetchone()[0] == 0
    assert "recovered after an unclean stop: 3 call(s)" in eng.log.read_text(errors="replace")
