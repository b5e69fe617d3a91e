"""Sealed KPI buckets (engine/kpi_buckets.py) must give the reference path's
figures: after late rows arrive and are re-sealed, across the DST end of the
fixture range, with an unaligned report start and the raw tail after the
watermark."""
from __future__ import annotations

import sqlite3
from typing import Any

import pytest

import kpi_fixtures as fx
from engine.kpi import Calendar, Dimension, KpiSettings, Period, call_time
from engine.kpi_buckets import BUCKET_S, offsets_ok, report_from_buckets, seal, seal_all, seal_state, usable
from engine.store import SqliteStore
from test_kpi import CALLS, CBS, QLOG, STATES, assert_reports_equal, engine_report

# The watermark lands in the middle of the range (the 25-hour DST day); the
# rest of the range is the raw tail.
WATERMARK = fx.SINCE + 40 * 3600
LAG = 0.0


def _late_split() -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Rows written on time vs rows that arrive after their buckets were sealed:
    every 5th call offered before the watermark, agent spans crossing it or
    ending after it, every 3rd ring-no-answer before it."""
    early: dict[str, list[dict[str, Any]]] = {"cdr": [], "agent_state_log": [], "queue_log": [], "callbacks": CBS}
    late: dict[str, list[dict[str, Any]]] = {"cdr": [], "agent_state_log": [], "queue_log": []}
    for i, c in enumerate(CALLS):
        (late if call_time(c) < WATERMARK and i % 5 == 0 else early)["cdr"].append(c)
    for s in STATES:
        (late if s["ts"] >= WATERMARK - 1800 else early)["agent_state_log"].append(s)
    for i, q in enumerate(QLOG):
        (late if q["ts"] < WATERMARK and i % 3 == 0 else early)["queue_log"].append(q)
    return early, late


def _append(path: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    store = SqliteStore(path)
    for table, rows in tables.items():
        for r in rows:
            store.append(table, r)
    store.close()


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = str(tmp_path_factory.mktemp("kpib") / "store.db")
    early, late = _late_split()
    assert late["cdr"] and late["agent_state_log"] and late["queue_log"]
    _append(path, early)
    conn = sqlite3.connect(path, isolation_level=None)
    settings = KpiSettings()
    first = seal(conn, settings=settings, members=fx.MEMBERS, now=WATERMARK, lag_s=LAG, max_buckets=20)
    assert first["reset"] and first["sealed"] == 20  # bounded: 20 buckets per run
    seal_all(conn, settings=settings, members=fx.MEMBERS, now=WATERMARK, lag_s=LAG, max_buckets=20)
    assert seal_state(conn)["sealed_until"] == WATERMARK // BUCKET_S * BUCKET_S
    _append(path, late)  # late rows: their buckets are already sealed
    again = seal(conn, settings=settings, members=fx.MEMBERS, now=WATERMARK, lag_s=LAG, max_buckets=10)
    assert again["late"] > 10 and again["resealed"] == 10  # bounded re-seal, the rest stays dirty
    runs = seal_all(conn, settings=settings, members=fx.MEMBERS, now=WATERMARK, lag_s=LAG, max_buckets=10)
    assert runs > 1
    assert conn.execute("SELECT COUNT(*) FROM kpi_dirty").fetchone()[0] == 0
    yield conn
    conn.close()


def _bucket_report(conn: sqlite3.Connection, period: Period, dimension: Dimension,
                   since: float = fx.SINCE) -> dict[tuple[float, str], dict[str, Any]]:
    cal, settings = Calendar(fx.ZONE), KpiSettings()
    st = usable(conn, cal, settings, fx.MEMBERS, since, fx.UNTIL)
    assert st is not None
    rep = report_from_buckets(conn, st, period=period, dimension=dimension, since=since, until=fx.UNTIL,
                              settings=settings, cal=cal, tenants=["acme"], members=fx.MEMBERS)
    return {(r["start_ts"], r[dimension.value]): r for r in rep.rows()}


CASES = sorted({(p, Dimension.QUEUE) for p in Period} | {(Period.INTERVAL_30, d) for d in Dimension}
               | {(Period.MONTH, d) for d in Dimension}
               | {(Period.DAY, Dimension.AGENT), (Period.HOUR, Dimension.GROUP), (Period.WEEK, Dimension.AGENT)},
               key=lambda x: (x[0].value, x[1].value))


@pytest.mark.parametrize("period,dimension", CASES, ids=lambda x: x.value)
def test_bucket_path_equals_reference_path(sealed: sqlite3.Connection, period: Period, dimension: Dimension) -> None:
    want = engine_report(period, dimension, KpiSettings())
    assert_reports_equal(_bucket_report(sealed, period, dimension), want, f"buckets {period.value}/{dimension.value}")


@pytest.mark.parametrize("dimension", [Dimension.AGENT, Dimension.GROUP, Dimension.DIALED_NUMBER],
                         ids=lambda x: x.value)
def test_bucket_month_roll_up_equals_plain_recomputation(sealed: sqlite3.Connection, dimension: Dimension) -> None:
    """The month per agent / group / dialled number, rolled up in SQL from sealed buckets across the DST
    change, against the independent plain recomputation (kpi_fixtures.plain_report)."""
    want = fx.plain_report("month", dimension.value, CALLS, STATES, QLOG, CBS)
    got = _bucket_report(sealed, Period.MONTH, dimension)
    assert len(got) >= 2 and sum(r["offered"] for r in got.values()) > 100
    assert_reports_equal(got, want, f"buckets month/{dimension.value} vs plain")


def test_roll_up_is_one_group_by_per_piece(sealed: sqlite3.Connection) -> None:
    """SQLite returns one row per (local period, key) per constant-offset piece, not one per bucket row;
    the plan reads kpi_bucket through its key index."""
    from engine.kpi import Report
    from engine.kpi_buckets import rollup_into, rollup_sql

    seen: list[str] = []
    sealed.set_trace_callback(seen.append)
    try:
        rep = Report(Period.MONTH, Dimension.AGENT, Calendar(fx.ZONE), KpiSettings(), fx.SINCE, WATERMARK)
        a, b = int(fx.SINCE), int(WATERMARK // BUCKET_S * BUCKET_S)
        rollup_into(sealed, rep, ["acme"], a, b)
    finally:
        sealed.set_trace_callback(None)
    assert sum("FROM kpi_bucket" in q for q in seen) == 2  # the DST change cuts the range in two pieces
    assert len(rep.tallies) == len(fx.AGENTS)
    n = sealed.execute("SELECT COUNT(*) FROM kpi_bucket WHERE dimension = 'agent' AND bucket_start >= ? "
                       "AND bucket_start < ?", (a, b)).fetchone()[0]
    assert n > 10 * len(fx.AGENTS)  # many bucket rows went into those few tallies
    plan = " ".join(r[3] for r in sealed.execute("EXPLAIN QUERY PLAN " + rollup_sql(["acme"]),
                                                 [0, 86400, "agent", a, b, "acme"]))
    assert "kpi_bucket_key" in plan


def test_buckets_hold_the_sealed_range_only(sealed: sqlite3.Connection) -> None:
    lo, hi = sealed.execute("SELECT MIN(bucket_start), MAX(bucket_start) FROM kpi_bucket").fetchone()
    assert lo >= fx.SINCE - 86400 and hi < WATERMARK
    st = seal_state(sealed)
    assert st["sealed_until"] < fx.UNTIL  # so the reports above also read a raw tail


def test_unaligned_start_reads_a_raw_head(sealed: sqlite3.Connection) -> None:
    from engine.kpi import tally_rows

    since = fx.SINCE + 600
    rep = tally_rows(period=Period.HOUR, dimension=Dimension.QUEUE, since=since, until=fx.UNTIL,
                     settings=KpiSettings(), cal=Calendar(fx.ZONE), cdr=CALLS, agent_states=STATES,
                     queue_log=QLOG, callbacks=CBS, members=fx.MEMBERS)
    want = {(r["start_ts"], r["queue"]): r for r in rep.rows()}
    assert_reports_equal(_bucket_report(sealed, Period.HOUR, Dimension.QUEUE, since), want, "unaligned")


def test_other_settings_or_zones_do_not_use_buckets(sealed: sqlite3.Connection) -> None:
    cal = Calendar(fx.ZONE)
    assert usable(sealed, cal, KpiSettings(service_level_s=30), fx.MEMBERS, fx.SINCE, fx.UNTIL) is None
    assert usable(sealed, cal, KpiSettings(), {}, fx.SINCE, fx.UNTIL) is None
    assert not offsets_ok(Calendar("Asia/Kathmandu"), fx.SINCE, fx.UNTIL)  # +05:45
    assert usable(sealed, Calendar("Asia/Kathmandu"), KpiSettings(), fx.MEMBERS, fx.SINCE, fx.UNTIL) is None
    assert offsets_ok(Calendar("Asia/Kolkata"), fx.SINCE, fx.UNTIL)  # +05:30


def test_new_settings_reset_and_reseal(tmp_path: Any) -> None:
    path = str(tmp_path / "s.db")
    _append(path, {"cdr": CALLS[:40]})
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        seal_all(conn, settings=KpiSettings(), members=fx.MEMBERS, now=fx.UNTIL, lag_s=LAG, max_buckets=500)
        n = conn.execute("SELECT COUNT(*) FROM kpi_bucket").fetchone()[0]
        assert n > 0
        again = seal(conn, settings=KpiSettings(), members=fx.MEMBERS, now=fx.UNTIL, lag_s=LAG)
        assert again == {**again, "resealed": 0, "sealed": 0, "late": 0, "reset": False}  # idempotent, no work
        other = KpiSettings(service_level_s=5)
        d = seal(conn, settings=other, members=fx.MEMBERS, now=fx.UNTIL, lag_s=LAG, max_buckets=1)
        assert d["reset"]
        assert usable(conn, Calendar(fx.ZONE), KpiSettings(), fx.MEMBERS, fx.SINCE, fx.UNTIL) is None
        seal_all(conn, settings=other, members=fx.MEMBERS, now=fx.UNTIL, lag_s=LAG, max_buckets=500)
        assert conn.execute("SELECT COUNT(*) FROM kpi_bucket").fetchone()[0] == n
    finally:
        conn.close()


def test_seal_service_runs_off_the_loop_and_reports_use_the_buckets(tmp_path: Any) -> None:
    import asyncio
    import types

    from engine.config import parse_config
    from engine.kpi_buckets import SealService
    from engine.reporting import build_report, open_reader

    path = str(tmp_path / "svc.db")
    _append(path, {"cdr": CALLS, "callbacks": CBS})
    cfg = parse_config(f'[engine]\nname = "t"\ntime_zone = "{fx.ZONE}"\n', "t.toml")
    engine = types.SimpleNamespace(config=cfg, store=types.SimpleNamespace(path=path))
    svc = SealService(max_buckets=500)

    svc.engine = engine
    last = asyncio.run(svc.run_once(now=fx.UNTIL + 7200))
    assert last["sealed_until"] == fx.UNTIL
    conn = open_reader(path)
    try:
        assert usable(conn, Calendar(fx.ZONE), KpiSettings(), {}, fx.SINCE, fx.UNTIL) is not None
        rep = build_report(conn, cfg, period=Period.DAY, dimension=Dimension.TENANT, since=fx.SINCE,
                           until=fx.UNTIL, tenants=["acme"])
        want = engine_report(Period.DAY, Dimension.TENANT, KpiSettings())
        got = {(r["start_ts"], r["tenant"]): r for r in rep.rows()}
        # no agents configured: agent time of the fixtures counts by tenant only, which both paths share
        for k, row in want.items():
            assert got[k]["offered"] == row["offered"] and got[k]["repeat_calls"] == row["repeat_calls"]
    finally:
        conn.close()

    async def loop() -> int:  # the service's own loop: runs at start, then every interval_s
        await svc.start(engine)  # type: ignore[arg-type]
        for _ in range(300):
            if svc.runs >= 2:
                break
            await asyncio.sleep(0.05)
        await svc.stop()
        return svc.runs

    svc.interval_s, svc.runs = 0.01, 0
    assert asyncio.run(loop()) >= 2


def _same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Equal row for row, key order and value types included (CSV / XLSX write what they get)."""
    assert len(got) == len(want) and want
    for g, w in zip(got, want):
        assert list(g) == list(w)
        assert g == w
        assert all(type(g[k]) is type(w[k]) for k in w), g


@pytest.mark.parametrize("period,dimension,until", [
    (Period.INTERVAL_30, Dimension.AGENT, WATERMARK // BUCKET_S * BUCKET_S),  # bucket rows only
    (Period.INTERVAL_30, Dimension.AGENT, fx.UNTIL),  # + raw tail + callbacks on the same keys
    (Period.INTERVAL_30, Dimension.QUEUE, fx.UNTIL),
    (Period.DAY, Dimension.AGENT, fx.UNTIL),
    (Period.MONTH, Dimension.GROUP, fx.UNTIL),  # two DST pieces: rows added as tallies
], ids=lambda x: getattr(x, "value", "until"))
def test_column_wise_rows_equal_row_wise_rows(sealed: sqlite3.Connection, period: Period, dimension: Dimension,
                                              until: float) -> None:
    """Report.rows (figures computed column-wise with numpy over the bucket rows) gives exactly the rows
    of the row-wise path (Tally.figures per row), on sealed buckets with and without a raw tail."""
    cal, settings = Calendar(fx.ZONE), KpiSettings()
    st = usable(sealed, cal, settings, fx.MEMBERS, fx.SINCE, until)
    assert st is not None
    rep = report_from_buckets(sealed, st, period=period, dimension=dimension, since=fx.SINCE, until=until,
                              settings=settings, cal=cal, tenants=["acme"], members=fx.MEMBERS)
    if period is Period.INTERVAL_30:
        assert rep._pending  # the bucket rows are still rows: the column-wise path is exercised
    got = rep.rows()
    _same_rows(got, rep.rows_by_tally())
    assert any(r["occupancy"] is not None for r in got)
    if period is Period.INTERVAL_30:
        assert any(r["service_level"] is None for r in got) and any(r["service_level"] is not None for r in got)


@pytest.mark.parametrize("short_in_sl", [False, True])
def test_column_wise_rows_equal_row_wise_rows_on_raw_tallies(short_in_sl: bool) -> None:
    """The same on the reference path's tallies (no bucket rows), both short-abandon conventions."""
    from engine.kpi import tally_rows

    settings = KpiSettings(short_abandons_in_service_level=short_in_sl, service_level_s=15.0)
    for dimension in (Dimension.AGENT, Dimension.QUEUE, Dimension.TENANT):
        rep = tally_rows(period=Period.HOUR, dimension=dimension, since=fx.SINCE, until=fx.UNTIL, settings=settings,
                         cal=Calendar(fx.ZONE), cdr=CALLS, agent_states=STATES, queue_log=QLOG, callbacks=CBS,
                         members=fx.MEMBERS)
        _same_rows(rep.rows(), rep.rows_by_tally())
