"""Supervisor ops end to end: the engine as a subprocess, the trunk, the agent's and the
supervisor's phones as real SIP UAs sending distinct tones over real RTP; Goertzel of what
each phone receives (and of the stereo recording) proves each row of the hear-set table."""
from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import wave

import numpy as np
import pytest

from conftest_inbound import AGENT_PASSWORDS, DIALED, next_event_named, offer_sdp, trunk_call
from conftest_supervise import (
    SUP_PASSWORDS, Phone, listen_window, supervised_engine, who_is_heard,
)
from engine.client import ClientError

pytestmark = pytest.mark.interop

TWO_PARTY = {"caller": {"agent"}, "agent": {"caller"}, "supervisor": set()}
LISTEN = {"caller": {"agent"}, "agent": {"caller"}, "supervisor": {"caller", "agent"}}
WHISPER = {"caller": {"agent"}, "agent": {"caller", "supervisor"}, "supervisor": {"caller", "agent"}}
BARGE = {"caller": {"agent", "supervisor"}, "agent": {"caller", "supervisor"}, "supervisor": {"caller", "agent"}}
INTERCEPTED = {"caller": {"supervisor"}, "agent": set(), "supervisor": {"caller"}}
NOBODY = {"caller": set(), "agent": set(), "supervisor": set()}


def run(coro, timeout: float = 45.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def rows(tmp_path, sql):
    conn = sqlite3.connect(tmp_path / "cc.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


async def expect_error(client, code: str, op: str, **args) -> str:
    with pytest.raises(ClientError) as exc:
        await client.request(op, **args)
    assert exc.value.code == code, (op, args, exc.value.code, exc.value.message)
    return str(exc.value)


class Scene:
    """Engine clients, the three phones and one answered call from the trunk to agent 1001."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.phones = {"caller": Phone("caller", "trunk"), "agent": Phone("agent", "2001"),
                       "supervisor": Phone("supervisor", "3001")}
        self.clients: list = []
        self.extra_phones: list[Phone] = []
        self.extra_trunks: list = []
        self.trunk = None
        self.trunk_dialog = None
        self.call_id = ""

    async def __aenter__(self) -> "Scene":
        e = self.engine
        for p in self.phones.values():
            await p.start()
        self.admin = await e.client()
        self.alice = await e.client("alice", AGENT_PASSWORDS["1001"])
        self.sup = await e.client("sup", SUP_PASSWORDS["sup"])
        self.sup2 = await e.client("sup2", SUP_PASSWORDS["sup2"])
        self.clients = [self.admin, self.alice, self.sup, self.sup2]
        await self.admin.subscribe(events=["call.*", "agent.*", "supervisor.*"])
        await self.alice.subscribe(events=["*"])
        await self.sup.subscribe(events=["supervisor.*", "call.*"])
        await self.alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
        assert await self.phones["agent"].register(e, "2001", AGENT_PASSWORDS["1001"]) == 200
        # The supervisor's phone has no credentials until supervisor.phone_login.
        assert await self.phones["supervisor"].register(e, "3001", SUP_PASSWORDS["sup"]) == 403
        await expect_error(self.sup, "forbidden", "supervisor.phone_login", password="wrong")
        res = await self.sup.request("supervisor.phone_login", password=SUP_PASSWORDS["sup"])
        assert res == {"user": "sup", "extension": "3001"}
        assert await self.phones["supervisor"].register(e, "3001", "wrong") == 403
        assert await self.phones["supervisor"].register(e, "3001", SUP_PASSWORDS["sup"]) == 200
        await self.alice.request("agent.ready")
        await self.call_agent()
        return self

    async def call_agent(self) -> None:
        """A call from the trunk, answered by agent 1001's phone."""
        caller = self.phones["caller"]
        if self.trunk is not None:
            await self.trunk.stop()
        self.trunk, ev = await trunk_call(self.engine.sip_port, DIALED, offer_sdp(caller.rtp_port))
        assert ev.response.status_code == 200
        self.trunk_dialog = ev.dialog
        caller.connect(ev.response.body)
        answered = await next_event_named(self.admin, "call.answered")
        self.call_id = answered["data"]["call_id"]

    async def hear(self) -> tuple[dict[str, set[str]], tuple[float, float]]:
        return await listen_window(self.phones)

    async def hang_up_caller(self) -> dict:
        self.trunk.bye(self.trunk_dialog)
        return await next_event_named(self.admin, "call.ended")

    async def __aexit__(self, *exc) -> None:
        for c in self.clients:
            await c.close()
        for t in [self.trunk, *self.extra_trunks]:
            if t is not None:
                await t.stop()
        for p in [*self.phones.values(), *self.extra_phones]:
            await p.stop()


@pytest.fixture
def engine(tmp_path):
    eng = supervised_engine(tmp_path)
    eng.start()
    yield eng
    eng.stop()


def recording_channels(tmp_path, call_id: str = "") -> tuple[np.ndarray, np.ndarray, float]:
    recs = rows(tmp_path, "SELECT * FROM recordings")
    (rec,) = [r for r in recs if r["call_id"] == call_id] if call_id else recs
    with wave.open(rec["path"]) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    return x[:, 0], x[:, 1], rec["start_ts"]


def recorded(channel: np.ndarray, start_ts: float, window: tuple[float, float]) -> set[str]:
    """Parties in a recording channel over a wall-clock window (trimmed 0.1 s each side)."""
    a = int((window[0] + 0.1 - start_ts) * 8000)
    b = int((window[1] - 0.1 - start_ts) * 8000)
    assert 0 <= a < b <= len(channel), (a, b, len(channel))
    return who_is_heard(channel[a:b])


def test_listen_whisper_barge_switch_without_reringing(engine, tmp_path):
    windows: dict[str, tuple[float, float]] = {}

    async def scenario():
        async with Scene(engine) as s:
            heard, windows["two_party"] = await s.hear()
            assert heard == TWO_PARTY
            res = await s.sup.request("supervisor.listen", agent="1001", ring_timeout_s=5)
            assert res["state"] == "ringing" and res["mode"] == "listen" and res["call_id"] == s.call_id
            joined = await next_event_named(s.sup, "supervisor.joined")
            assert joined["data"]["mode"] == "listen" and joined["data"]["monitored_agent"] == "1001"
            heard, windows["listen"] = await s.hear()
            assert heard == LISTEN
            res = await s.sup.request("supervisor.whisper", agent="1001")
            assert res["state"] == "joined" and res["mode"] == "whisper"
            heard, windows["whisper"] = await s.hear()
            assert heard == WHISPER
            # The agent puts the caller on hold: the supervisor is paused, then whispers again on retrieve.
            await s.alice.request("call.hold", call_id=s.call_id)
            heard, windows["held"] = await s.hear()
            assert heard == NOBODY
            await expect_error(s.sup, "invalid_state", "supervisor.barge", agent="1001")  # not while held
            await s.alice.request("call.retrieve", call_id=s.call_id)
            heard, _ = await s.hear()
            assert heard == WHISPER
            res = await s.sup.request("supervisor.barge", call_id=s.call_id)
            assert res["state"] == "joined" and res["mode"] == "barge"
            heard, windows["barge"] = await s.hear()
            assert heard == BARGE
            await s.sup.request("supervisor.listen", agent="1001")
            heard, windows["listen_again"] = await s.hear()
            assert heard == LISTEN
            assert s.phones["supervisor"].invites == 1  # every switch without re-ringing
            (mon,) = (await s.sup.request("supervisor.list"))["monitors"]
            assert mon["supervisor"] == "sup" and mon["mode"] == "listen" and mon["state"] == "joined"
            assert (await s.sup2.request("supervisor.list"))["monitors"] == []  # another group's supervisor
            # A second call to agent 1002: the supervisor moves there (same phone leg, no re-ringing).
            bob = await engine.client("bob", AGENT_PASSWORDS["1002"])
            s.clients.append(bob)
            second = {"caller": Phone("caller", "trunk2"), "agent": Phone("agent", "2002"),
                      "supervisor": s.phones["supervisor"]}
            for role in ("caller", "agent"):
                await second[role].start()
                s.extra_phones.append(second[role])
            await bob.request("agent.login", password=AGENT_PASSWORDS["1002"], extension="2002")
            assert await second["agent"].register(engine, "2002", AGENT_PASSWORDS["1002"]) == 200
            await bob.request("agent.ready")
            trunk2, ev2 = await trunk_call(engine.sip_port, DIALED, offer_sdp(second["caller"].rtp_port),
                                           caller="+4917000002")
            s.extra_trunks.append(trunk2)
            second["caller"].connect(ev2.response.body)
            answered = await next_event_named(s.admin, "call.answered")
            assert answered["data"]["agent"] == "1002"
            call2 = answered["data"]["call_id"]
            res = await s.sup.request("supervisor.barge", agent="1002")
            assert res["call_id"] == call2 and res["state"] == "joined" and res["mode"] == "barge"
            moved = await next_event_named(s.sup, "supervisor.left")
            assert moved["data"]["reason"] == "moved" and moved["data"]["call_id"] == s.call_id
            heard, windows2["moved"] = await listen_window(second)
            assert heard == BARGE
            assert s.phones["supervisor"].invites == 1
            first = {k: v for k, v in s.phones.items() if k != "supervisor"}
            assert (await listen_window(first))[0] == {"caller": {"agent"}, "agent": {"caller"}}
            # Agent 1002 transfers the call to a queue: monitoring follows the agent, the supervisor leaves.
            await bob.request("call.transfer", call_id=call2, target="queue:sales")
            ev = await next_event_named(s.sup, "supervisor.left")
            assert ev["data"]["reason"] == "agent_left" and ev["data"]["call_id"] == call2
            await asyncio.sleep(0.2)
            assert s.phones["supervisor"].ended == 1  # BYE to the supervisor's phone
            await s.admin.request("call.hangup", call_id=call2)
            assert (await next_event_named(s.admin, "call.ended"))["data"]["call_id"] == call2
            # Barge straight into agent 1001's call (the phone is rung again), then hang the phone up.
            await s.sup.request("supervisor.barge", agent="1001")
            await next_event_named(s.sup, "supervisor.joined")
            assert s.phones["supervisor"].invites == 2
            heard, windows["barge_again"] = await s.hear()
            assert heard == BARGE
            s.phones["supervisor"].hang_up()
            ev = await next_event_named(s.sup, "supervisor.left")
            assert ev["data"]["reason"] == "supervisor_hangup"
            heard, windows["after_hangup"] = await s.hear()
            assert heard == TWO_PARTY
            assert (await s.sup.request("supervisor.list"))["monitors"] == []
            # Listen once more; the call ends under the supervisor.
            await s.sup.request("supervisor.listen", agent="1001")
            await next_event_named(s.sup, "supervisor.joined")
            ended = await s.hang_up_caller()
            assert ended["data"]["reason"] == "caller_hangup" and ended["data"]["call_id"] == s.call_id
            ev = await next_event_named(s.sup, "supervisor.left")
            assert ev["data"]["reason"] == "call_ended"
            await asyncio.sleep(0.2)
            assert s.phones["supervisor"].invites == 3 and s.phones["supervisor"].ended == 3
            # The monitored agent never saw a supervisor event (silent monitoring).
            seen = []
            with contextlib.suppress(asyncio.TimeoutError):
                while (ev := await s.alice.next_event(timeout=0.3)) is not None:
                    seen.append(ev["event"])
            assert seen and not [e for e in seen if e.startswith("supervisor.")], seen

    windows2: dict[str, tuple[float, float]] = {}
    run(scenario())
    assert engine.stop() == 0
    call1, call2 = [r["call_id"] for r in rows(tmp_path, "SELECT call_id FROM cdr ORDER BY start_ts")]
    left, right, start_ts = recording_channels(tmp_path, call2)
    assert recorded(right, start_ts, windows2["moved"]) == {"agent", "supervisor"}
    left, right, start_ts = recording_channels(tmp_path, call1)
    expect_right = {"two_party": {"agent"}, "listen": {"agent"}, "whisper": {"agent"},
                    "held": set(), "barge": {"agent", "supervisor"}, "listen_again": {"agent"},
                    "after_hangup": {"agent"},
                    "barge_again": {"agent", "supervisor"}}
    for phase, window in windows.items():
        assert recorded(left, start_ts, window) == {"caller"}, phase
        assert recorded(right, start_ts, window) == expect_right[phase], phase
    assert len(rows(tmp_path, "SELECT * FROM recordings")) == 2  # one recording per call, continued throughout
    events = [(r["event"], r["agent"], {call1: 1, call2: 2}[r["call_id"]], r["party"]) for r in
              rows(tmp_path, "SELECT * FROM call_events ORDER BY id")]
    assert events == [("supervisor.listen", "1001", 1, "sup"), ("supervisor.joined", "1001", 1, "sup"),
                      ("supervisor.whisper", "1001", 1, "sup"), ("hold", "1001", 1, ""),
                      ("retrieve", "1001", 1, ""), ("supervisor.barge", "1001", 1, "sup"),
                      ("supervisor.listen", "1001", 1, "sup"),
                      ("supervisor.left", "1001", 1, "sup"), ("supervisor.barge", "1002", 2, "sup"),
                      ("supervisor.joined", "1002", 2, "sup"), ("supervisor.left", "1002", 2, "sup"),
                      ("transfer_blind", "1002", 2, "queue:sales"),
                      ("supervisor.barge", "1001", 1, "sup"), ("supervisor.joined", "1001", 1, "sup"),
                      ("supervisor.left", "1001", 1, "sup"),
                      ("supervisor.listen", "1001", 1, "sup"), ("supervisor.joined", "1001", 1, "sup"),
                      ("supervisor.left", "1001", 1, "sup")]
    details = [json.loads(r["detail"]) for r in
               rows(tmp_path, "SELECT detail FROM call_events WHERE event LIKE 'supervisor.%' ORDER BY id")]
    assert details[2] == {"previous_mode": "listen", "state": "joined"}
    assert [d["reason"] for d in details if "reason" in d] == ["moved", "agent_left", "supervisor_hangup",
                                                               "call_ended"]
    assert details[5] == {"reason": "moved", "to_call": call2}
    audit = {r["op"] for r in rows(tmp_path, "SELECT op FROM audit_log WHERE user = 'sup'")}
    assert {"supervisor.listen", "supervisor.whisper", "supervisor.barge", "supervisor.phone_login"} <= audit


def test_errors_leave_the_call_up_then_intercept_then_force_release_and_force_state(engine, tmp_path):
    windows: dict[str, tuple[float, float]] = {}

    async def scenario():
        async with Scene(engine) as s:
            sup, call_id = s.sup, s.call_id
            await expect_error(sup, "not_found", "supervisor.listen", agent="1999")
            await expect_error(sup, "not_found", "supervisor.barge", call_id="no-such-call")
            await expect_error(sup, "invalid_state", "supervisor.whisper", agent="1002")  # logged out, no call
            await expect_error(sup, "invalid_args", "supervisor.listen")
            await expect_error(sup, "invalid_state", "supervisor.leave")
            await expect_error(sup, "invalid_state", "agent.force_state", agent="1001", state="not_ready")
            await expect_error(sup, "invalid_args", "agent.force_state", agent="1001", state="ready")
            for op in ("supervisor.listen", "supervisor.intercept", "supervisor.force_release"):
                await expect_error(s.sup2, "forbidden", op, agent="1001")  # supervises another group
            await expect_error(s.sup2, "forbidden", "agent.force_state", agent="1001", state="logged_out")
            await expect_error(s.alice, "forbidden", "supervisor.listen", agent="1001")  # role agent
            # The supervisor's phone rejects, then does not answer: an event each, call untouched.
            s.phones["supervisor"].behaviour = "reject"
            await sup.request("supervisor.listen", agent="1001")
            failed = await next_event_named(sup, "supervisor.failed")
            assert failed["data"]["outcome"] == "busy" and failed["data"]["status"] == 486
            s.phones["supervisor"].behaviour = "ring"
            await sup.request("supervisor.barge", agent="1001", ring_timeout_s=1)
            failed = await next_event_named(sup, "supervisor.failed")
            assert failed["data"]["outcome"] == "no_answer"
            calls = (await s.admin.request("call.list"))["calls"]
            assert [(c["call_id"], c["state"], c["agent"]) for c in calls] == [(call_id, "talking", "1001")]
            heard, windows["after_errors"] = await s.hear()
            assert heard == TWO_PARTY
            assert s.phones["agent"].ended == 0
            # Listen, then leave: the call is back to caller <-> agent.
            s.phones["supervisor"].behaviour = "answer"
            await sup.request("supervisor.listen", agent="1001")
            await next_event_named(sup, "supervisor.joined")
            assert (await sup.request("supervisor.leave"))["state"] == "ended"
            ev = await next_event_named(sup, "supervisor.left")
            assert ev["data"]["reason"] == "leave"
            heard, windows["after_leave"] = await s.hear()
            assert heard == TWO_PARTY
            assert s.phones["supervisor"].ended == 1  # our BYE reached the supervisor's phone
            # Intercept: the supervisor takes the caller, the agent's leg is released to wrap-up.
            res = await sup.request("supervisor.intercept", agent="1001")
            assert res["mode"] == "intercept" and res["state"] == "ringing"
            got = await next_event_named(s.alice, "call.intercepted")
            assert got["data"] == {"call_id": call_id, "agent": "1001", "supervisor": "sup", "tenant": "default",
                                   "groups": ["sales"]}
            heard, windows["intercepted"] = await s.hear()
            assert heard == INTERCEPTED
            assert s.phones["agent"].ended == 1
            agents = {a["agent"]: a for a in (await s.admin.request("agent.list"))["agents"]}
            assert agents["1001"]["state"] in ("wrapup", "ready")
            await expect_error(sup, "invalid_state", "supervisor.leave")  # the supervisor is the party now
            await expect_error(sup, "invalid_state", "supervisor.listen", agent="1001")  # not on a call any more
            for op in ("call.hangup", "call.hold"):  # the intercepted agent no longer holds the call
                await expect_error(s.alice, "forbidden", op, call_id=call_id)
            calls = (await s.admin.request("call.list"))["calls"]
            assert [(c["call_id"], c["state"]) for c in calls] == [(call_id, "talking")]
            # The supervisor (now the call's party) hangs up: the call ends, the caller gets a BYE.
            s.phones["supervisor"].hang_up()
            ended = await next_event_named(s.admin, "call.ended")
            assert ended["data"]["agent"] == "1001" and ended["data"]["reason"] == "supervisor_hangup"
            ids["intercepted"] = s.call_id
            # A second call: force release, then forced agent states.
            while (await s.admin.request("agent.list"))["agents"][0]["state"] != "ready":  # wrapup_s = 1
                await asyncio.sleep(0.1)
            await s.call_agent()
            ids["released"] = s.call_id
            res = await sup.request("supervisor.force_release", agent="1001")
            assert res == {"call_id": s.call_id, "agent": "1001", "state": "ended", "end_reason": "force_released"}
            ended = await next_event_named(s.admin, "call.ended")
            assert ended["data"]["reason"] == "force_released"
            await asyncio.sleep(0.2)
            assert s.phones["agent"].ended == 2
            await expect_error(sup, "invalid_state", "supervisor.force_release", agent="1001")
            await expect_error(sup, "not_found", "supervisor.force_release", call_id=s.call_id)
            res = await sup.request("agent.force_state", agent="1001", state="not_ready", reason_code="coaching")
            assert res["state"] == "not_ready" and res["reason_code"] == "coaching"
            res = await sup.request("agent.force_state", agent="1001", state="logged_out")
            assert res["state"] == "logged_out"
            await expect_error(sup, "invalid_state", "agent.force_state", agent="1001", state="logged_out")
            # Logged out by the supervisor: the agent's phone credentials are gone.
            assert await s.phones["agent"].register(engine, "2001", AGENT_PASSWORDS["1001"]) == 403
            await sup.request("supervisor.phone_logout")
            assert await s.phones["supervisor"].register(engine, "3001", SUP_PASSWORDS["sup"]) == 403
            await expect_error(sup, "invalid_state", "supervisor.phone_logout")

    ids: dict[str, str] = {}
    run(scenario())
    assert engine.stop() == 0
    cdrs = {r["call_id"]: r for r in rows(tmp_path, "SELECT * FROM cdr")}
    assert set(cdrs) == set(ids.values())
    cdr = cdrs[ids["intercepted"]]
    assert cdr["agent"] == "1001" and cdr["disposition"] == "answered" and cdr["end_reason"] == "supervisor_hangup"
    states = [(r["previous_state"], r["state"], r["ts"], r["reason_code"]) for r in
              rows(tmp_path, "SELECT * FROM agent_state_log WHERE agent = '1001' ORDER BY id")]
    busy_to_wrapup = [ts for prev, st, ts, _ in states if (prev, st) == ("busy", "wrapup")]
    assert len(busy_to_wrapup) == 2
    assert busy_to_wrapup[0] < cdr["end_ts"] - 0.3  # the intercepted call: wrap-up began at the intercept
    assert [(p, st, r) for p, st, _, r in states][-3:] == [
        ("busy", "wrapup", ""), ("wrapup", "not_ready", "coaching"), ("not_ready", "logged_out", "")]
    released = cdrs[ids["released"]]
    assert released["end_reason"] == "force_released" and released["disposition"] == "answered"
    assert released["agent"] == "1001"
    forced = [(r["event"], r["call_id"], r["party"], r["detail"]) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE event IN ('supervisor.force_release', 'agent.force_state') "
                             "ORDER BY id")]
    assert [(e, c, p) for e, c, p, _ in forced] == [("supervisor.force_release", ids["released"], "sup"),
                                                    ("agent.force_state", "", "sup"),
                                                    ("agent.force_state", "", "sup")]
    assert '"reason_code": "coaching"' in forced[1][3]
    events = [(r["event"], r["party"]) for r in
              rows(tmp_path, f"SELECT * FROM call_events WHERE call_id = '{ids['intercepted']}' ORDER BY id")]
    assert events == [("supervisor.listen", "sup"), ("supervisor.failed", "sup"),
                      ("supervisor.barge", "sup"), ("supervisor.failed", "sup"),
                      ("supervisor.listen", "sup"), ("supervisor.joined", "sup"), ("supervisor.left", "sup"),
                      ("supervisor.intercept", "sup"), ("supervisor.joined", "sup"), ("call.intercepted", "sup"),
                      ("supervisor.left", "sup")]
    left, right, start_ts = recording_channels(tmp_path, ids["intercepted"])
    assert recorded(left, start_ts, windows["after_errors"]) == {"caller"}
    assert recorded(right, start_ts, windows["after_errors"]) == {"agent"}
    assert recorded(left, start_ts, windows["intercepted"]) == {"caller"}
    assert recorded(right, start_ts, windows["intercepted"]) == {"supervisor"}


