"""Reporting ops over a real engine, control socket and SQLite store: scope by
tenant and role on every op, CDR query/export, KPI report, real-time stats
and the stats event, callbacks, recording search and chunked download."""
from __future__ import annotations

import asyncio
import io
import pathlib
import time
from typing import Any

import pytest

from engine.kpi import Calendar, Dimension, KpiSettings, Period, tally_rows
from engine.realtime import StatsService
from foundation_helpers import RawConn, run, running_engine

NOW = time.time()
DAY_START = Calendar("UTC").period_start(NOW, Period.DAY)
T0 = DAY_START + 600  # 00:10 UTC today


def cdr(call_id: str, **kw: Any) -> dict[str, Any]:
    row = {"call_id": call_id, "tenant": "default", "direction": "inbound", "caller_number": "+4930100",
           "dialed_number": "800", "trunk": "t1", "queue": "sales", "grp": "sales", "agent": "1001",
           "start_ts": T0, "queued_ts": T0 + 5, "answered_ts": T0 + 15, "end_ts": T0 + 100, "wait_s": 10.0,
           "talk_s": 85.0, "disposition": "answered", "notes": ""}
    row.update(kw)
    return row


ROWS = [
    cdr("a1"),
    cdr("a2", caller_number="+4930200", agent="1002", queue="support", grp="support", wait_s=40.0,
        transferred=1, notes="Customer wants a REFUND", start_ts=T0 + 60, queued_ts=T0 + 61, answered_ts=T0 + 101),
    cdr("a3", caller_number="+4989300", agent="", grp="", answered_ts=None, wait_s=30.0, disposition="abandoned",
        start_ts=T0 + 120, queued_ts=T0 + 121, talk_s=0.0),
    cdr("a4", caller_number="+4930400", start_ts=T0 + 1900, queued_ts=T0 + 1901, answered_ts=T0 + 1903,
        wait_s=2.0, recorded=1, survey_score=3, reason_code="sale"),
    cdr("x1", tenant="acme", queue="acme_sales", grp="acme_sales", agent="2001", caller_number="+4930999"),
]


def config(make_config: Any, tmp_path: pathlib.Path) -> Any:
    return make_config(f"""
[recording]
path = "{tmp_path}/rec"

[reporting]
stats_interval_s = 0.2
abandoned_to_callback = true
""")


async def seeded(engine: Any, tmp_path: pathlib.Path) -> dict[str, Any]:
    store = engine.store
    for r in ROWS:
        store.append("cdr", r)
    rec_dir = tmp_path / "rec" / "2026"
    rec_dir.mkdir(parents=True)
    files = {}
    for i, (call, agent, grp, tenant) in enumerate((("a1", "1001", "sales", "default"),
                                                    ("a2", "1002", "support", "default"),
                                                    ("x1", "2001", "acme_sales", "acme"))):
        f = rec_dir / f"{call}.wav"
        f.write_bytes(bytes(range(256)) * (400 + i))
        files[call] = f
        store.append("recordings", {"call_id": call, "tenant": tenant, "path": str(f), "start_ts": T0 + i,
                                    "duration_s": 30.0 + i, "agent": agent, "grp": grp, "queue": grp,
                                    "caller_number": "+4930100", "bytes": f.stat().st_size})
    store.append("recordings", {"call_id": "evil", "tenant": "default", "path": "/etc/passwd", "start_ts": T0,
                                "agent": "1001", "grp": "sales", "queue": "sales"})
    for i, (queue, agent, tenant) in enumerate((("sales", "", "default"), ("support", "1002", "default"),
                                                ("acme_sales", "", "acme"))):
        store.append("callbacks", {"tenant": tenant, "call_id": f"cb{i}", "caller_number": "+4930555",
                                   "queue": queue, "requested_ts": T0 + i, "assigned_agent": agent})
    await store.aflush()
    return files


async def session(engine: Any, user: str) -> RawConn:
    c = await RawConn.open(engine)
    await c.auth(user)
    return c


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"], reply
    return reply["result"]


def err(reply: dict[str, Any]) -> str:
    assert not reply["ok"], reply
    return reply["error"]["code"]


def ids(result: dict[str, Any]) -> list[str]:
    return [r["call_id"] for r in result["rows"]]


def test_cdr_query_filters_paging_and_scope(make_config: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with running_engine(config(make_config, tmp_path)) as engine:
            await seeded(engine, tmp_path)
            admin, sup, agent, rep, acme, root = [await session(engine, u) for u in
                                                  ("admin", "sup", "agent1", "reports", "acme_admin", "root")]
            assert ids(ok(await admin.call("cdr.query"))) == ["a1", "a2", "a3", "a4"]
            assert ids(ok(await rep.call("cdr.query"))) == ["a1", "a2", "a3", "a4"]
            assert ids(ok(await acme.call("cdr.query"))) == ["x1"]
            assert sorted(ids(ok(await root.call("cdr.query")))) == ["a1", "a2", "a3", "a4", "x1"]
            assert ids(ok(await root.call("cdr.query", tenant="acme"))) == ["x1"]
            assert err(await admin.call("cdr.query", tenant="acme")) == "forbidden"
            # supervisor of 'sales': calls of the sales group, queue and agents
            assert ids(ok(await sup.call("cdr.query"))) == ["a1", "a3", "a4"]
            assert ids(ok(await agent.call("cdr.query"))) == ["a1", "a4"]
            # an agent's filter cannot widen its scope
            assert ids(ok(await agent.call("cdr.query", agent="1002"))) == []
            # filters
            q = admin.call
            assert ids(ok(await q("cdr.query", caller_prefix="+4930"))) == ["a1", "a2", "a4"]
            assert ids(ok(await q("cdr.query", caller_prefix="+49893"))) == ["a3"]
            assert ids(ok(await q("cdr.query", min_wait_s=30))) == ["a2", "a3"]
            assert ids(ok(await q("cdr.query", max_wait_s=10, disposition="answered"))) == ["a1", "a4"]
            assert ids(ok(await q("cdr.query", transferred=True))) == ["a2"]
            assert ids(ok(await q("cdr.query", recorded=True, min_survey_score=3))) == ["a4"]
            assert ids(ok(await q("cdr.query", notes_text="refund"))) == ["a2"]
            assert ids(ok(await q("cdr.query", reason_code="sale"))) == ["a4"]
            assert ids(ok(await q("cdr.query", group="support", queue="support", agent="1002"))) == ["a2"]
            assert ids(ok(await q("cdr.query", since=T0 + 100, until=T0 + 2000))) == ["a3", "a4"]
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + 100))
            assert ids(ok(await q("cdr.query", since=iso))) == ["a3", "a4"]
            assert ids(ok(await q("cdr.query", call_id="a2", dialed_number="800", trunk="t1"))) == ["a2"]
            # paging, newest first, total
            page = ok(await q("cdr.query", limit=3, descending=True, count=True))
            assert ids(page) == ["a4", "a3", "a2"] and page["next_offset"] == 3 and page["total"] == 4
            page = ok(await q("cdr.query", limit=3, offset=3, descending=True))
            assert ids(page) == ["a1"] and page["next_offset"] is None
            assert err(await q("cdr.query", limit=0)) == "invalid_args"
            assert err(await q("cdr.query", since="yesterday")) == "invalid_args"
            assert err(await q("cdr.query", bogus=1)) == "invalid_args"
            for c in (admin, sup, agent, rep, acme, root):
                await c.close()
    run(main())


def test_cdr_export_csv_and_xlsx_in_chunks_and_audited(make_config: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with running_engine(config(make_config, tmp_path)) as engine:
            await seeded(engine, tmp_path)
            admin = await session(engine, "admin")
            first = ok(await admin.call("cdr.export", limit=3))
            second = ok(await admin.call("cdr.export", offset=first["next_offset"], limit=3))
            assert first["rows"] == 3 and second["rows"] == 1 and second["next_offset"] is None
            text = (first["data"] + second["data"]).decode()
            lines = text.split("\r\n")
            assert lines[0].startswith("id,call_id,tenant") and len([x for x in lines if x]) == 5
            assert "x1" not in text
            book = ok(await admin.call("cdr.export", format="xlsx", caller_prefix="+4930"))
            from openpyxl import load_workbook
            ws = load_workbook(io.BytesIO(book["data"]), read_only=True)["cdr"]
            values = [r for r in ws.iter_rows(values_only=True)]
            assert values[0][:3] == ("id", "call_id", "tenant")
            assert [v[1] for v in values[1:]] == ["a1", "a2", "a4"]
            agent = await session(engine, "agent1")
            assert "a2" not in ok(await agent.call("cdr.export"))["data"].decode()
            await engine.store.aflush()
            audited = engine.store.select("audit_log", {"op": "cdr.export"})
            assert len(audited) == 4 and {a["user"] for a in audited} == {"admin", "agent1"}
            await admin.close()
            await agent.close()
    run(main())


def test_kpi_report_matches_the_engine_and_is_scoped(make_config: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with running_engine(config(make_config, tmp_path)) as engine:
            await seeded(engine, tmp_path)
            admin = await session(engine, "admin")
            res = ok(await admin.call("kpi.report", period="30min", dimension="queue", since=DAY_START,
                                      until=DAY_START + 86400))
            want = tally_rows(period=Period.INTERVAL_30, dimension=Dimension.QUEUE, since=DAY_START,
                              until=DAY_START + 86400, settings=KpiSettings(), cal=Calendar("UTC"),
                              cdr=[r for r in ROWS if r["tenant"] == "default"]).rows()
            assert [(r["start_ts"], r["queue"]) for r in res["rows"]] == [(r["start_ts"], r["queue"]) for r in want]
            first = res["rows"][0]
            assert first["queue"] == "sales" and first["offered"] == 2 and first["abandoned"] == 1
            assert first["service_level"] == 0.5  # a1 within 20 s; a3 abandoned after 30 s (a long abandon)
            assert res["time_zone"] == "UTC" and res["total"] == len(want)
            day = ok(await admin.call("kpi.report", period="day", dimension="tenant",
                                      since=time.strftime("%Y-%m-%d", time.gmtime(NOW)),
                                      until=DAY_START + 86400))
            (row,) = day["rows"]
            assert row["tenant"] == "default" and row["offered"] == 4 and row["callbacks_requested"] == 2
            agent = await session(engine, "agent1")
            assert err(await agent.call("kpi.report", dimension="queue", since=DAY_START, until=NOW)) == "forbidden"
            mine = ok(await agent.call("kpi.report", dimension="agent", period="day", since=DAY_START,
                                       until=DAY_START + 86400))
            assert {r["agent"] for r in mine["rows"]} == {"1001"}
            assert err(await agent.call("kpi.report", dimension="agent", keys=["1002"], since=DAY_START,
                                        until=NOW)) == "forbidden"
            sup = await session(engine, "sup")
            qs = ok(await sup.call("kpi.report", dimension="queue", period="day", since=DAY_START,
                                   until=DAY_START + 86400))
            assert {r["queue"] for r in qs["rows"]} == {"sales"}
            assert err(await sup.call("kpi.report", dimension="tenant", since=DAY_START, until=NOW)) == "forbidden"
            assert err(await admin.call("kpi.report", since=NOW, until=NOW - 5)) == "invalid_args"
            for c in (admin, agent, sup):
                await c.close()
    run(main())


def test_callbacks_assign_schedule_complete_and_scope(make_config: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with running_engine(config(make_config, tmp_path)) as engine:
            await seeded(engine, tmp_path)
            admin, sup, agent, rep = [await session(engine, u) for u in ("admin", "sup", "agent1", "reports")]
            cbs = ok(await admin.call("callback.list"))["callbacks"]
            assert [c["call_id"] for c in cbs] == ["cb0", "cb1"]
            assert [c["call_id"] for c in ok(await sup.call("callback.list"))["callbacks"]] == ["cb0"]
            assert ok(await agent.call("callback.list"))["callbacks"] == []
            cb0 = cbs[0]["id"]
            assert err(await rep.call("callback.assign", id=cb0, agent="1001")) == "forbidden"
            assert err(await sup.call("callback.assign", id=cb0, agent="1002")) == "forbidden"  # not sup's group
            assert err(await sup.call("callback.assign", id=cbs[1]["id"], agent="1001")) == "not_found"
            got = ok(await sup.call("callback.assign", id=cb0, agent="1001"))
            assert got["state"] == "assigned" and got["assigned_agent"] == "1001"
            mine = ok(await agent.call("callback.list"))["callbacks"]
            assert [c["id"] for c in mine] == [cb0]
            at = "2030-01-02T09:30"
            got = ok(await agent.call("callback.schedule", id=cb0, at=at, notes="after 9"))
            assert got["state"] == "scheduled" and got["scheduled_ts"] == 1893576600.0
            assert err(await agent.call("callback.schedule", id=cb0, at=at, agent="1002")) == "forbidden"
            due = ok(await admin.call("callback.list", due_before="2030-01-03"))["callbacks"]
            assert cb0 in [c["id"] for c in due]
            done = ok(await agent.call("callback.complete", id=cb0, result_call_id="a4"))
            assert done["state"] == "done" and done["result_call_id"] == "a4"
            # the serving call's CDR now links the callback to the original call
            linked = ok(await admin.call("cdr.query", callback_of="cb0"))
            assert ids(linked) == ["a4"]
            assert err(await agent.call("callback.complete", id=cb0)) == "conflict"
            assert err(await admin.call("callback.schedule", id=cb0, at=at)) == "conflict"
            for c in (admin, sup, agent, rep):
                await c.close()
    run(main())


def test_recording_query_and_chunked_fetch_by_permission(make_config: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with running_engine(config(make_config, tmp_path)) as engine:
            files = await seeded(engine, tmp_path)
            admin, sup, agent, acme = [await session(engine, u) for u in ("admin", "sup", "agent1", "acme_admin")]
            everything = ok(await admin.call("recording.query"))["rows"]
            assert sorted(r["call_id"] for r in everything) == ["a1", "a2", "evil"]
            assert all("/" not in r["path"] for r in everything)
            assert sorted(r["call_id"] for r in ok(await sup.call("recording.query"))["rows"]) == ["a1", "evil"]
            assert sorted(r["call_id"] for r in ok(await agent.call("recording.query"))["rows"]) == ["a1", "evil"]
            assert [r["call_id"] for r in ok(await acme.call("recording.query"))["rows"]] == ["x1"]
            assert [r["call_id"] for r in ok(await admin.call("recording.query", min_duration_s=31))["rows"]] \
                == ["a2"]
            by_call = {r["call_id"]: r["id"] for r in everything}
            chunks, offset = [], 0
            while offset is not None:
                part = ok(await agent.call("recording.fetch", id=by_call["a1"], offset=offset, length=30000))
                chunks.append(part["data"])
                offset = part["next_offset"]
            assert b"".join(chunks) == files["a1"].read_bytes() and len(chunks) == 4
            assert err(await agent.call("recording.fetch", id=by_call["a2"])) == "not_found"  # not its call
            assert err(await acme.call("recording.fetch", id=by_call["a1"])) == "not_found"  # other tenant
            assert err(await admin.call("recording.fetch", id=by_call["evil"])) == "forbidden"  # outside the root
            assert err(await admin.call("recording.fetch", id=by_call["a1"], length=10**7)) == "invalid_args"
            for c in (admin, sup, agent, acme):
                await c.close()
    run(main())


def test_stats_realtime_and_the_stats_event(make_config: Any, tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        svc = StatsService(today_refresh_s=0.2)
        async with running_engine(config(make_config, tmp_path), services=[svc]) as engine:
            await seeded(engine, tmp_path)
            await svc.refresh_today()
            admin, sup, agent = [await session(engine, u) for u in ("admin", "sup", "agent1")]
            snap = ok(await admin.call("stats.realtime"))
            queues = {q["queue"]: q for q in snap["queues"]}
            assert set(queues) == {"sales"}  # tenant default has one queue; acme's is not shown
            sales = queues["sales"]
            assert sales["waiting"] == 0 and sales["agents_by_state"] == {"logged_out": 1}
            assert sales["offered_today"] == 3 and sales["answered_today"] == 2
            assert sales["service_level_today"] == pytest.approx(2 / 3, abs=1e-3)
            assert sales["abandon_rate_today"] == pytest.approx(1 / 3, abs=1e-3)
            agents = {a["agent"]: a for a in snap["agents"]}
            assert set(agents) == {"1001", "1002"} and agents["1001"]["calls_today"] == 2
            # tenant default's admin in an engine with two tenants: no engine-wide figures (docs/tenants.md)
            assert "registrations" not in snap["engine"] and "recordings_free_bytes" not in snap["engine"]
            assert [a["agent"] for a in ok(await agent.call("stats.realtime"))["agents"]] == ["1001"]
            s = ok(await sup.call("stats.realtime"))
            assert [a["agent"] for a in s["agents"]] == ["1001"] and "registrations" not in s["engine"]
            ok(await agent.call("events.subscribe", events=["stats"]))
            ok(await admin.call("events.subscribe", events=["stats"]))
            for conn, want in ((agent, ["1001"]), (admin, ["1001", "1002"])):
                ev = await conn.frame(timeout=5)
                while ev.get("event") != "stats":
                    ev = await conn.frame(timeout=5)
                assert [a["agent"] for a in ev["data"]["agents"]] == want
            # abandoned -> callback (config switch on)
            engine.bus.publish("call.ended", {"call_id": "gone", "disposition": "abandoned", "queue": "sales",
                                              "caller_number": "+4930777"}, tenant="default", queue="sales")
            await engine.store.aflush()
            rows = engine.store.select("callbacks", {"call_id": "gone"})
            assert len(rows) == 1 and rows[0]["state"] == "open" and rows[0]["queue"] == "sales"
            for c in (admin, sup, agent):
                await c.close()
    run(main())


def test_callback_preview_and_dialled_callback_outcomes(make_config: Any, tmp_path: pathlib.Path) -> None:
    """Due callbacks of ready agents are previewed once; a dialled callback's
    call ending answered completes it (CDR linked), otherwise it is retried.
    (The dialling itself, engine/legs.py through call control, needs the call
    path: without it callback.dial is 'unavailable'.)"""
    async def main() -> None:
        svc = StatsService(today_refresh_s=60)
        async with running_engine(config(make_config, tmp_path), services=[svc]) as engine:
            await seeded(engine, tmp_path)
            admin, agent = await session(engine, "admin"), await session(engine, "agent1")
            cbs = ok(await admin.call("callback.list"))["callbacks"]
            cb0, cb1 = cbs[0]["id"], cbs[1]["id"]
            ok(await admin.call("callback.schedule", id=cb0, at=NOW - 60, agent="1001"))
            ok(await agent.call("events.subscribe", events=["callback.*"]))
            assert [r["id"] for r in await svc.preview_due(ready={"1001"})] == [cb0]
            ev = await agent.frame()
            while ev.get("event") != "callback.preview":
                ev = await agent.frame()
            assert ev["data"]["id"] == cb0 and ev["data"]["caller_number"] == "+4930555"
            assert await svc.preview_due(ready={"1001"}) == []  # once per ready period
            assert await svc.preview_due(ready=set()) == []
            assert [r["id"] for r in await svc.preview_due(ready={"1001"})] == [cb0]  # ready again
            assert err(await agent.call("callback.dial", id=cb0)) == "unavailable"
            # what callback.dial leaves behind, then the calls ending
            import sqlite3
            conn = sqlite3.connect(engine.store.path, isolation_level=None)
            conn.execute("UPDATE callbacks SET state = 'dialing', result_call_id = 'a4' WHERE id = ?", [cb0])
            conn.execute("UPDATE callbacks SET state = 'dialing', result_call_id = 'a2' WHERE id = ?", [cb1])
            conn.close()
            svc.dialled.update({"a4", "a2"})
            engine.bus.publish("call.ended", {"call_id": "a4", "disposition": "answered"}, tenant="default")
            engine.bus.publish("call.ended", {"call_id": "a2", "disposition": "no_answer"}, tenant="default")
            for _ in range(100):
                rows = {r["id"]: r for r in ok(await admin.call("callback.list"))["callbacks"]}
                if rows[cb0]["state"] == "done" and rows[cb1]["state"] == "assigned":
                    break
                await asyncio.sleep(0.05)
            assert rows[cb0]["state"] == "done" and rows[cb1]["state"] == "assigned"
            assert ids(ok(await admin.call("cdr.query", callback_of="cb0"))) == ["a4"]
            assert ok(await admin.call("cdr.query", callback_of="cb1"))["rows"] == []
            await admin.close()
            await agent.close()
    run(main())
