"""engine/campaign_edit.py + campaign.update / campaign.delete over the control socket (simulated carrier,
real SQLite store, restart from the store)."""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable

import pytest

from campaign_fakes import sim_service
from engine.campaign import CampaignState
from engine.campaign_edit import FIXED_KEYS, IDLE_KEYS, LIVE_KEYS, changed_keys, check_delete, plan_update
from engine.client import ClientError
from engine.config import Campaign, Config
from engine.errors import Conflict, InvalidArgs, InvalidState
from foundation_helpers import run, running_engine
from test_campaign_service import CSV, DEFINITION, client, log_rows, until

from engine import campaign_ops  # noqa: F401  (registers the ops)


def test_every_campaign_key_has_exactly_one_edit_class() -> None:
    fields = {f.name for f in dataclasses.fields(Campaign)}
    assert LIVE_KEYS | IDLE_KEYS | set(FIXED_KEYS) == fields
    assert not LIVE_KEYS & IDLE_KEYS and not (LIVE_KEYS | IDLE_KEYS) & set(FIXED_KEYS)


def test_plan_update_rules() -> None:
    d = {"mode": "predictive", "groups": ["sales"]}
    running, paused = CampaignState.RUNNING, CampaignState.PAUSED
    assert plan_update("c", d, {"max_drop_rate": 0.02}, running, 5) == {**d, "max_drop_rate": 0.02}
    # An idle key given with its current value is no change: allowed while running.
    assert plan_update("c", d, {"mode": "predictive", "caller_number": "+4930"}, running, 3)["caller_number"]
    with pytest.raises(InvalidState, match="is running: pause or stop it before changing amd, mode"):
        plan_update("c", d, {"mode": "progressive", "amd": True}, running, 0)
    with pytest.raises(InvalidState, match="has 2 call"):
        plan_update("c", d, {"mode": "progressive"}, paused, 2)
    assert plan_update("c", d, {"mode": "progressive"}, paused, 0)["mode"] == "progressive"
    with pytest.raises(InvalidArgs, match="'time_zone' cannot be changed .record zones were fixed at import"):
        plan_update("c", d, {"time_zone": "Europe/Berlin"}, paused, 0)
    with pytest.raises(InvalidArgs, match="unknown key 'colour'"):
        plan_update("c", d, {"colour": "red"}, paused, 0)
    with pytest.raises(InvalidArgs, match="no changes"):
        plan_update("c", d, {}, paused, 0)
    with pytest.raises(InvalidArgs, match="must be a string"):
        plan_update("c", d, {1: "x", "mode": "preview"}, paused, 0)
    with pytest.raises(Conflict, match="configuration file"):
        plan_update("c", d, {"max_attempts": 2}, paused, 0, source="config")
    assert changed_keys(d, {**d, "amd": True}) == {"amd": {"from": None, "to": True}}


def test_check_delete_rules() -> None:
    for state in (CampaignState.CREATED, CampaignState.STOPPED, CampaignState.COMPLETED):
        check_delete("c", state, 0)
    for state in (CampaignState.RUNNING, CampaignState.PAUSED):
        with pytest.raises(InvalidState, match=f"is {state.value}: stop it before deleting it"):
            check_delete("c", state, 0)
    with pytest.raises(InvalidState, match="still has 1 call"):
        check_delete("c", CampaignState.STOPPED, 1)
    with pytest.raises(Conflict, match="configuration file"):
        check_delete("c", CampaignState.STOPPED, 0, source="config")


async def _code(coro: Any) -> str:
    with pytest.raises(ClientError) as err:
        await coro
    return err.value.code


CONFIG_CAMPAIGN = """
[campaigns.filed]
groups = ["sales"]
"""


def test_update_and_delete_over_ops_then_restart(make_config: Callable[..., Config]) -> None:
    config = make_config(CONFIG_CAMPAIGN)

    async def first() -> None:
        svc, port = sim_service(agents=2, talk_s=0.3)
        async with running_engine(config, services=[svc]) as engine:
            sup, agent, admin = (await client(engine, "sup"), await client(engine, "agent1"),
                                 await client(engine, "admin"))
            try:
                await sup.request("campaign.create", name="spring", definition=DEFINITION)
                # The first number rings until hung up (last digit 5): a call stays in progress.
                csv = CSV.replace("number,name,balance\n", "number,name,balance\n+4930100015,Ring,0\n")
                await sup.request("campaign.import", name="spring", csv=csv)
                await sup.request("campaign.start", name="spring")
                core = svc.core("default", "spring")
                # Live keys change while dialling; the next INVITE carries the new caller id.
                res = await sup.request("campaign.update", name="spring",
                                        changes={"caller_number": "+4930777", "max_drop_rate": 0.01,
                                                 "retries": [{"outcome": "busy", "delay_s": 0, "max_attempts": 3}]})
                assert set(res["changed"]) == {"caller_number", "max_drop_rate", "retries"}
                assert res["changed"]["caller_number"] == {"from": "+4930999", "to": "+4930777"}
                assert core.campaign.caller_number == "+4930777" and core.pacer.max_drop_rate == 0.01
                assert core.book.rules["busy"].max_attempts == 3
                # Changes that make no sense while dialling, fixed keys, bad values, scopes.
                assert await _code(sup.request("campaign.update", name="spring",
                                               changes={"mode": "predictive"})) == "invalid_state"
                assert await _code(sup.request("campaign.update", name="spring",
                                               changes={"time_zone": "Asia/Tokyo"})) == "invalid_args"
                with pytest.raises(ClientError) as err:
                    await sup.request("campaign.update", name="spring", changes={"max_drop_rate": 0.9})
                assert err.value.code == "invalid_args" and "max_drop_rate" in str(err.value)
                assert await _code(sup.request("campaign.update", name="spring",
                                               changes={"groups": ["support"]})) == "forbidden"
                assert await _code(sup.request("campaign.update", name="spring",
                                               changes={"groups": "sales"})) == "invalid_args"   # not a list
                assert await _code(sup.request("campaign.update", name="spring",
                                               changes={"agents": ["2001"]})) == "not_found"  # acme's agent
                assert await _code(agent.request("campaign.update", name="spring",
                                                 changes={"max_attempts": 1})) == "forbidden"
                assert await _code(sup.request("campaign.update", name="filed",
                                               changes={"max_attempts": 1})) == "conflict"
                assert await _code(sup.request("campaign.delete", name="spring")) == "invalid_state"
                assert await _code(sup.request("campaign.delete", name="filed")) == "conflict"
                # Paused with a call still ringing: idle keys wait for it, deleting too.
                # (dialled, not only "dialing": a pause while the attempt row is flushed keeps it undialled)
                await until(lambda: "+4930100015" in port.dialled)
                await sup.request("campaign.pause", name="spring")
                with pytest.raises(ClientError) as err:
                    await sup.request("campaign.update", name="spring", changes={"amd": False})
                assert err.value.code == "invalid_state" and "call(s) in progress" in str(err.value)
                assert await _code(sup.request("campaign.delete", name="spring")) == "invalid_state"
                await sup.request("campaign.stop", name="spring")      # hangs the ringing call up
                await until(lambda: not core.live)
                res = await sup.request("campaign.update", name="spring", changes={"amd": False, "mode": "predictive"})
                assert set(res["changed"]) == {"amd", "mode"} and core.pacer.mode.value == "predictive"
                deleted = await sup.request("campaign.delete", name="spring")
                assert deleted["state"] == "deleted" and deleted["records"]["total"] == 7
                # Gone from the engine, kept for reports; the name is not reused.
                assert await _code(sup.request("campaign.status", name="spring")) == "not_found"
                assert await _code(sup.request("campaign.update", name="spring",
                                               changes={"max_attempts": 1})) == "not_found"
                assert [c["name"] for c in (await sup.request("campaign.list"))["campaigns"]] == ["filed"]
                listed = (await sup.request("campaign.list", deleted=True))["campaigns"]
                assert listed == [{"name": "spring", "tenant": "default", "mode": "predictive", "state": "deleted"}]
                rep = await sup.request("campaign.report", name="spring", from_ts=time.time() - 60, interval_s=120)
                attempts = sum(1 for r in log_rows(engine.store, "spring") if r["event"] == "attempt")
                assert rep["intervals"][0]["attempts"] == attempts >= 1
                assert rep["intervals"][0]["agents"]["1001"]["talk_share"] is None   # no call path: no state rows
                since = time.time() - 60
                xlsx = await sup.request("campaign.report", name="spring", from_ts=since, format="xlsx")
                assert xlsx["format"] == "xlsx" and xlsx["data"][:2] == b"PK"          # a zip: the workbook
                per_agent = (await sup.request("campaign.report", name="spring", from_ts=since, format="csv",
                                               table="agents"))["csv"].splitlines()
                assert per_agent[0].startswith("start_ts,end_ts,agent,logged_in_s,talk_s,wrapup_s,idle_s")
                assert [line.split(",")[2] for line in per_agent[1:]] == ["1001"]
                assert await _code(sup.request("campaign.create", name="spring",
                                               definition=DEFINITION)) == "conflict"
                # Another tenant's admin sees nothing of it.
                acme = await client(engine, "acme_admin")
                try:
                    assert (await acme.request("campaign.list", deleted=True))["campaigns"] == []
                    assert await _code(acme.request("campaign.report", name="spring",
                                                    from_ts=0)) == "not_found"
                finally:
                    await acme.close()
                rows = log_rows(engine.store, "spring")
                updated = [json.loads(r["data"]) for r in rows if r["event"] == "updated"]
                assert [sorted(u["changes"]) for u in updated] == [["caller_number", "max_drop_rate", "retries"],
                                                                   ["amd", "mode"]]
                assert all(u["user"] == "sup" for u in updated)
                assert [r["event"] for r in rows][-1] == "deleted"
                audit = engine.store.select("audit_log", {"user": "sup"}, limit=1000)
                ops = [(a["op"], a["result"]) for a in audit if a["op"] in ("campaign.update", "campaign.delete")]
                assert ("campaign.update", "ok") in ops and ("campaign.update", "error:invalid_state") in ops
                assert ("campaign.delete", "ok") in ops and ("campaign.delete", "error:conflict") in ops
                await admin.request("campaign.create", name="autumn", definition=DEFINITION)
                await admin.request("campaign.update", name="autumn", changes={"caller_number": "+4930555"})
            finally:
                for c in (sup, agent, admin):
                    await c.close()

    async def second() -> None:
        svc, _ = sim_service(agents=1)
        async with running_engine(config, services=[svc]) as engine:
            assert ("default", "spring") not in svc.cores and ("default", "spring") in svc.deleted
            autumn = svc.core("default", "autumn")
            assert autumn.campaign.caller_number == "+4930555" and autumn.book.state.value == "created"
            sup = await client(engine, "sup")
            try:
                assert await _code(sup.request("campaign.create", name="spring",
                                               definition=DEFINITION)) == "conflict"
                rep = await sup.request("campaign.report", name="spring", from_ts=time.time() - 120,
                                        interval_s=240)
                attempts = sum(1 for r in log_rows(engine.store, "spring") if r["event"] == "attempt")
                assert rep["intervals"][0]["attempts"] == attempts >= 1
            finally:
                await sup.close()

    run(first())
    run(second())


def test_documented_update_example_is_accepted(make_config: Callable[..., Config]) -> None:
    """The first ``campaign.update`` example of docs/control-campaign-ops.md passes the rules and the check."""
    import ast
    import pathlib

    from engine.config import build_campaign

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "control-campaign-ops.md").read_text()
    section = doc.split("### `campaign.update`", 1)[1]
    changes = ast.literal_eval("{" + section.split("changes={", 1)[1].split("})", 1)[0] + "}")
    cfg = make_config()
    definition = {"mode": "predictive", "groups": ["sales"], "caller_number": "+4930999"}
    merged = plan_update("spring", definition, changes, CampaignState.RUNNING, 3)
    c = build_campaign(cfg, "spring", merged)
    assert c.caller_number == "+4930999222" and c.retries[0].max_attempts == 4 and c.agents == ("1002",)


def test_pacer_retune_keeps_measurements_and_the_newest_window() -> None:
    from engine.pacing import Pacer, PacingMode

    p = Pacer(PacingMode.PROGRESSIVE, max_drop_rate=0.03, drop_window_calls=100)
    for i in range(60):
        p.answered_call(dropped=i < 10)          # the 10 oldest answered calls were dropped
        p.attempt_finished(True, 1.0)
        p.handle_finished(30.0)
    assert p.window_drop_rate == pytest.approx(10 / 60)
    before = (p.answer_rate, p.mean_ring_s, p.mean_handle_s)
    p.retune(PacingMode.PREDICTIVE, max_drop_rate=0.02, drop_window_calls=50, connect_timeout_s=3.0)
    assert p.mode is PacingMode.PREDICTIVE and p.max_drop_rate == 0.02 and p.connect_timeout_s == 3.0
    assert p.window_drop_rate == 0.0             # the newest 50 answered calls had no drop
    assert (p.answer_rate, p.mean_ring_s, p.mean_handle_s) == before and p.mean_handle_s == 30.0
    with pytest.raises(ValueError, match="not in"):
        p.retune(PacingMode.PREDICTIVE, max_drop_rate=1.5, drop_window_calls=50, connect_timeout_s=3.0)


def test_dialer_reconfigure_swaps_the_definition() -> None:
    from engine.campaign import CampaignBook
    from engine.config import CampaignRetry
    from engine.dialer import DialerCore

    c = Campaign(name="c", mode="progressive", retries=(CampaignRetry(outcome="busy", delay_s=60),))
    core = DialerCore(CampaignBook(c))
    new = dataclasses.replace(c, mode="predictive", caller_number="+4930777", max_drop_rate=0.01,
                              retries=(CampaignRetry(outcome="no_answer", delay_s=5),))
    core.reconfigure(new)
    assert core.campaign is new and core.book.campaign is new and core.pacer.mode.value == "predictive"
    assert set(core.book.rules) == {"no_answer"} and core.pacer.max_drop_rate == 0.01
    with pytest.raises(InvalidArgs, match="cannot reconfigure"):
        core.reconfigure(dataclasses.replace(c, name="other"))
