"""engine/campaign_service.py + campaign_ops.py: ops over the control socket, a simulated carrier
behind the CallPort, a real SQLite store; the kill -9 test runs the engine in a child process."""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from campaign_fakes import sim_service
from engine.client import ClientError, ControlClient
from engine.config import Config
from foundation_helpers import PASSWORDS, run, running_engine, tcp_address

from engine import campaign_ops  # noqa: F401  (registers the ops)

CSV = ("number,name,balance\n+4930100001,Anna,10\n+4930100002,Bob,20\n+4930100003,Carl,30\n"
       "+4930100004,Dora,40\n+4930100011,Emil,50\n+4930100016,Fritz,60\n")

DEFINITION = {"mode": "progressive", "groups": ["sales"], "max_attempts": 2, "amd": True,
              "retries": [{"outcome": "busy", "delay_s": 0}, {"outcome": "no_answer", "delay_s": 0}],
              "caller_number": "+4930999"}


async def client(engine: Any, user: str) -> ControlClient:
    host, port = tcp_address(engine)
    c = ControlClient(host=host, port=port, user=user, password=PASSWORDS[user], reconnect=False)
    await c.connect()
    return c


async def until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def log_rows(store: Any, campaign: str) -> list[dict[str, Any]]:
    store.flush()
    return store.select("campaign_log", {"campaign": campaign}, limit=100000)


def test_runtime_campaign_end_to_end_over_ops(make_config: Callable[..., Config]) -> None:
    async def main() -> None:
        svc, port = sim_service(agents=2)
        async with running_engine(make_config(), services=[svc]) as engine:
            sup = await client(engine, "sup")
            agent = await client(engine, "agent1")
            try:
                with pytest.raises(ClientError) as err:
                    await sup.request("campaign.create", name="bad", definition={"mode": "survey",
                                                                                 "groups": ["sales"]})
                assert err.value.code == "invalid_args" and "needs 'flow'" in str(err.value)
                with pytest.raises(ClientError) as err:
                    await sup.request("campaign.create", name="x", definition={"groups": ["support"]})
                assert err.value.code == "forbidden"  # sup supervises sales only
                st = await sup.request("campaign.create", name="spring", definition=DEFINITION)
                assert st["state"] == "created" and st["source"] == "runtime"
                res = await sup.request("campaign.import", name="spring", csv=CSV + "oops,x,1\n")
                assert res["imported"] == 6 and res["rejected"][0]["line"] == 8
                assert [c["name"] for c in (await agent.request("campaign.list"))["campaigns"]] == ["spring"]
                with pytest.raises(ClientError) as err:
                    await agent.request("campaign.start", name="spring")
                assert err.value.code == "forbidden"
                await sup.request("campaign.start", name="spring")
                await until(lambda: svc.core("default", "spring").book.state.value == "completed")
                status = await sup.request("campaign.status", name="spring")
                assert status["records"]["done"] == 2 and status["records"]["failed"] == 4
                # Screen pop carried the CSV fields; the agent disposes its own record and books a callback.
                pop = next(p for p in port.pops if p["record"]["number"] == "+4930100001")
                assert pop["record"]["fields"] == {"name": "Anna", "balance": "10"}
                rid = pop["record"]["record_id"]
                conn = [r for r in log_rows(engine.store, "spring") if r["event"] == "connected"]
                mine = next(r for r in conn if r["record_id"] == rid)
                other = next(r for r in conn if r["record_id"] != rid)
                if mine["agent"] == "1001":
                    rec = await agent.request("campaign.disposition", name="spring", record_id=rid,
                                              disposition="call_back", callback_ts=time.time() + 3600,
                                              notes="after 5")
                    assert rec["state"] == "waiting" and rec["callback_agent"] == "1001"
                if other["agent"] != "1001":
                    with pytest.raises(ClientError) as err:
                        await agent.request("campaign.disposition", name="spring",
                                            record_id=other["record_id"], disposition="sale")
                    assert err.value.code == "forbidden"
                report = await sup.request("campaign.report", name="spring", from_ts=time.time() - 60,
                                           interval_s=120)
                (b,) = report["intervals"]
                # 6 numbers: 2 answered by people, 1 machine, busy and no-answer retried once, 1 invalid.
                assert b["attempts"] == 8 and b["connects"] == 2 and b["machines"] == 1
                assert b["outcomes"] == {"answered": 2, "busy": 2, "invalid_number": 1, "machine": 1,
                                         "no_answer": 2}
                assert b["amd"] == {"human": 2, "machine": 1} and b["drop_rate"] == 0.0
                assert b["connect_rate"] == 0.25
                csv = (await sup.request("campaign.report", name="spring", from_ts=time.time() - 60,
                                         interval_s=120, format="csv"))["csv"]
                assert csv.splitlines()[0].startswith("start_ts,end_ts,attempts") and ",8," in csv
                assert sorted(port.dialled) == sorted(["+4930100001", "+4930100002", "+4930100002",
                                                       "+4930100003", "+4930100003", "+4930100004",
                                                       "+4930100011", "+4930100016"])
                assert [h[1] for h in port.hung_up] == ["answering_machine"]
            finally:
                await sup.close()
                await agent.close()
    run(main())


def test_dnc_and_screen_hook_block_before_dialling(make_config: Callable[..., Config]) -> None:
    async def main() -> None:
        svc, port = sim_service(agents=3)
        svc.screen_hooks.append(lambda tenant, campaign, number: "blacklist" if number.endswith("11") else None)
        async with running_engine(make_config(), services=[svc]) as engine:
            admin = await client(engine, "admin")
            try:
                await admin.request("campaign.create", name="c", definition=DEFINITION)
                await admin.request("campaign.import", name="c", csv=CSV)
                await admin.request("campaign.dnc", number="+49 30 100001")
                await admin.request("campaign.dnc", number="+49301000*", campaign="other")
                await admin.request("campaign.start", name="c")
                await until(lambda: svc.core("default", "c").book.state.value == "completed")
                assert "+4930100001" not in port.dialled and "+4930100011" not in port.dialled
                blocked = [(r["number"], json.loads(r["data"])["reason"]) for r in log_rows(engine.store, "c")
                           if r["event"] == "blocked"]
                assert sorted(blocked) == [("+4930100001", "dnc"), ("+4930100011", "blacklist")]
                assert engine.store.count("dnc") == 2
            finally:
                await admin.close()
    run(main())


def test_predictive_drops_when_no_agent_and_pause(make_config: Callable[..., Config]) -> None:
    """Predictive with one agent and a long talk: an answered call finds nobody and is dropped."""
    async def main() -> None:
        svc, port = sim_service(agents=1, talk_s=5.0)
        svc_def = {**DEFINITION, "mode": "predictive", "amd": False, "connect_timeout_s": 0.5, "max_drop_rate": 0.5,
                   "drop_message": "tts:Sorry, we will call you again."}
        async with running_engine(make_config(), services=[svc]) as engine:
            admin = await client(engine, "admin")
            try:
                await admin.request("campaign.create", name="p", definition=svc_def)
                await admin.request("campaign.import", name="p", csv="number\n+4930200001\n+4930200011\n")
                core = svc.core("default", "p")
                # Warm the pacer as if 30 % of calls were answered: it overdials for one idle agent.
                for i in range(300):
                    core.pacer.attempt_finished(i < 90, 5.0)
                    core.pacer.handle_finished(60.0)
                    core.pacer.answered_call(dropped=False)
                await admin.request("campaign.start", name="p")
                await until(lambda: any(r["outcome"] == "dropped" for r in log_rows(engine.store, "p")))
                assert port.played and port.played[0].prompt == "tts:Sorry, we will call you again."
                st = await admin.request("campaign.pause", name="p")
                assert st["state"] == "paused" and st["pacing"]["dropped"] == 1
                with pytest.raises(ClientError) as err:
                    await admin.request("campaign.pause", name="p")
                assert err.value.code == "conflict"
            finally:
                await admin.close()
    run(main())


CHILD_CONFIG = """
[campaigns.autumn]
mode = "progressive"
groups = ["sales"]
autostart = true
"""


def test_kill_9_mid_campaign_then_resume_never_dials_twice(make_config: Callable[..., Config],
                                                           tmp_path: pathlib.Path) -> None:
    """The engine process dies (SIGKILL) with calls in flight; the restart finishes the rest."""
    cfg = make_config(CHILD_CONFIG)
    db = cfg.resolve_path(cfg.store.path)
    # Records first (as campaign.import would), then the child engine dials them.
    from engine.campaign import CampaignBook
    from engine.store import SqliteStore

    store = SqliteStore(db)
    book = CampaignBook(cfg.campaigns["autumn"])
    numbers = [f"+49302000{i:02d}{d}" for i, d in zip(range(12), "555551111111")]
    for row in book.import_csv("number\n" + "\n".join(numbers) + "\n", time.time()).rows:
        store.append("campaign_records", row)
    store.close()
    here = pathlib.Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent.parent), str(here)])}
    proc = subprocess.Popen([sys.executable, str(here / "campaign_fakes.py"), cfg.source], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        attempts = 0
        while time.monotonic() < deadline and attempts < 5:
            time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    attempts = conn.execute("SELECT COUNT(*) FROM campaign_log WHERE event = 'attempt'").fetchone()[0]
            except sqlite3.OperationalError:
                continue
        assert attempts == 5, "the child engine placed no calls"
        os.killpg(proc.pid, signal.SIGKILL)  # five calls ring forever (numbers ending in 5): in flight
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stderr:
            proc.stderr.close()

    async def resume() -> None:
        svc, port = sim_service(agents=5)
        async with running_engine(cfg, services=[svc]) as engine:
            core = svc.core("default", "autumn")
            assert core.book.state.value == "running"
            await until(lambda: core.book.state.value == "completed")
            rows = log_rows(engine.store, "autumn")
            per_number: dict[str, int] = {}
            for r in rows:
                if r["event"] == "attempt":
                    per_number[r["number"]] = per_number.get(r["number"], 0) + 1
            assert per_number == {n: 1 for n in numbers}, per_number  # nobody dialled twice
            interrupted = sorted(r["number"] for r in rows if r["outcome"] == "interrupted")
            assert interrupted == numbers[:5]
            assert sorted(port.dialled) == numbers[5:]
    run(resume())


def test_preview_over_ops_agent_accepts_and_skips(make_config: Callable[..., Config]) -> None:
    async def main() -> None:
        svc, port = sim_service(agents=2)
        port.agents = ["1001", "1002"]
        async with running_engine(make_config(), services=[svc]) as engine:
            sup = await client(engine, "sup")
            agent = await client(engine, "agent1")
            try:
                await sup.request("campaign.create", name="pv", definition={
                    "mode": "preview", "groups": ["sales"], "preview_timeout_s": 30})
                await sup.request("campaign.import", name="pv", csv="number,name\n+4930300001,A\n+4930300011,B\n")
                await sup.request("campaign.start", name="pv")
                await asyncio.sleep(0.2)
                assert port.dialled == []  # preview: nothing dialled by itself
                shown = await agent.request("campaign.preview_next", name="pv")
                assert shown["record"]["fields"] == {"name": "A"}
                with pytest.raises(ClientError) as err:
                    await agent.request("campaign.preview_next", name="pv", agent="1002")
                assert err.value.code == "forbidden"  # an agent acts for itself only
                placed = await agent.request("campaign.preview_accept", name="pv",
                                             record_id=shown["record"]["record_id"])
                await until(lambda: any(r["event"] == "connected" for r in log_rows(engine.store, "pv")))
                conn = next(r for r in log_rows(engine.store, "pv") if r["event"] == "connected")
                assert conn["agent"] == "1001" and conn["call_id"] == placed["call_id"]
                second = await agent.request("campaign.preview_next", name="pv")
                rec = await agent.request("campaign.preview_skip", name="pv", record_id=second["record"]["record_id"])
                assert rec["state"] == "skipped"
                await until(lambda: svc.core("default", "pv").book.state.value == "completed")
                assert port.dialled == ["+4930300001"]
                rec = await agent.request("campaign.disposition", name="pv", record_id=shown["record"]["record_id"],
                                          disposition="sale")
                assert rec["disposition"] == "sale"
            finally:
                await sup.close()
                await agent.close()
    run(main())


def test_campaign_legs_carry_the_creators_role(make_config: Callable[..., Config]) -> None:
    """Toll fraud: a runtime campaign's legs are checked against the role of the user who created it
    (kept across a restart, from the campaigns rows); a configured campaign has none (system/agent)."""
    async def main() -> None:
        cfg = make_config()
        svc, _port = sim_service(agents=2)
        async with running_engine(cfg, services=[svc]) as engine:
            sup = await client(engine, "sup")
            await sup.request("campaign.create", name="spring", definition=DEFINITION)
            await sup.close()
            assert svc.creator_role(svc.core("default", "spring").campaign) == "supervisor"
            engine.store.flush()
        svc2, _port2 = sim_service(agents=2)
        async with running_engine(cfg, services=[svc2]):
            assert svc2.creator_role(svc2.core("default", "spring").campaign) == "supervisor"
            import dataclasses
            configured = dataclasses.replace(svc2.core("default", "spring").campaign, name="from_config")
            assert svc2.creator_role(configured) == ""
    run(main(), timeout=30)


def test_stop_while_attempt_rows_flush_dials_nobody(make_config: Callable[..., Config]) -> None:
    """campaign.stop between an attempt row being written and its INVITE (the row is flushed
    first, so a restart never dials twice): stop hangs up the calls it knows of, and the ones
    not dialled yet must not be dialled afterwards -- they once were, and a ringing one stayed
    live forever."""
    async def main() -> None:
        svc, port = sim_service(agents=2)
        async with running_engine(make_config(), services=[svc]) as engine:
            sup = await client(engine, "sup")
            try:
                await sup.request("campaign.create", name="spring", definition=DEFINITION)
                await sup.request("campaign.import", name="spring", csv=CSV)
                core = svc.core("default", "spring")
                store = engine.store
                real_flush, entered, gate = store.aflush, asyncio.Event(), asyncio.Event()

                async def slow_flush() -> None:  # the first flush with calls placed waits for the gate
                    if not entered.is_set() and core.live:
                        entered.set()
                        await gate.wait()
                    await real_flush()

                store.aflush = slow_flush
                await sup.request("campaign.start", name="spring")
                await asyncio.wait_for(entered.wait(), 10)
                placed = list(core.live)
                assert placed and port.dialled == []
                await sup.request("campaign.stop", name="spring")
                gate.set()
                await until(lambda: not core.live)
                assert port.dialled == []          # nobody was called after the stop
                store.aflush = real_flush
                rows = [r for r in log_rows(store, "spring") if r["event"] == "result"]
                assert sorted(r["call_id"] for r in rows) == sorted(placed)
                assert {r["outcome"] for r in rows} == {"interrupted"}
                assert all(r["next_ts"] is not None for r in rows)
                assert {core.book.records[r["record_id"]].state.value for r in rows} == {"waiting"}
            finally:
                await sup.close()

    run(main(), timeout=60)
