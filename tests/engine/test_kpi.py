"""Every KPI recomputed from raw rows by a plain independent implementation
(kpi_fixtures.plain_report) must equal engine.kpi's reference path and the
SQLite fast path (engine.kpi_sql), for every period and dimension, over
three days that include the DST change, calls crossing interval boundaries,
transfers, abandons while ringing and agents serving several queues."""
from __future__ import annotations

import math
import pathlib
import zoneinfo
from typing import Any

import pytest

import kpi_fixtures as fx
from engine.kpi import (FIGURES, Calendar, Dimension, KpiSettings, Period, call_time, split_span, tally_rows)
from engine.kpi_sql import tally_sqlite
from engine.store import SqliteStore

CALLS = fx.edge_cases() + fx.random_calls(300, seed=7)
STATES = fx.agent_states(seed=11)
QLOG = fx.queue_log(CALLS, seed=13)
CBS = fx.callbacks(seed=17)
PERIODS = list(Period)
DIMENSIONS = list(Dimension)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def assert_reports_equal(got: dict[tuple[float, str], dict[str, Any]],
                         want: dict[tuple[float, str], dict[str, Any]], what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: different (bucket, key) sets"
    for k in want:
        for name in FIGURES:
            assert same(got[k][name], want[k][name]), f"{what} {k} {name}: {got[k][name]!r} != {want[k][name]!r}"


def engine_report(period: Period, dimension: Dimension, settings: KpiSettings) -> dict[tuple[float, str], dict]:
    rep = tally_rows(period=period, dimension=dimension, since=fx.SINCE, until=fx.UNTIL, settings=settings,
                     cal=Calendar(fx.ZONE), cdr=CALLS, agent_states=STATES, queue_log=QLOG, callbacks=CBS,
                     members=fx.MEMBERS)
    return {(r["start_ts"], r[dimension.value]): r for r in rep.rows()}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("kpi") / "store.db"
    store = SqliteStore(str(path))
    for table, rows in (("cdr", CALLS), ("agent_state_log", STATES), ("queue_log", QLOG), ("callbacks", CBS)):
        for r in rows:
            store.append(table, r)
    store.close()
    import sqlite3
    conn = sqlite3.connect(str(path))
    yield conn
    conn.close()


# Every period for the queue dimension, every dimension by hour (the plain
# recomputation is slow by design; the SQL test below covers all 25 pairs).
PLAIN_CASES = [(p, Dimension.QUEUE) for p in PERIODS] + [(Period.HOUR, d) for d in DIMENSIONS
                                                          if d is not Dimension.QUEUE]


@pytest.mark.parametrize("period,dimension", PLAIN_CASES, ids=lambda x: x.value)
def test_reference_path_equals_plain_recomputation(period: Period, dimension: Dimension) -> None:
    settings = KpiSettings()
    want = fx.plain_report(period.value, dimension.value, CALLS, STATES, QLOG, CBS)
    assert_reports_equal(engine_report(period, dimension, settings), want, f"{period.value}/{dimension.value}")


# Every period by queue and agent, every dimension by 30-minute interval.
SQL_CASES = sorted({(p, d) for p in PERIODS for d in (Dimension.QUEUE, Dimension.AGENT)}
                   | {(Period.INTERVAL_30, d) for d in DIMENSIONS}, key=lambda x: (x[0].value, x[1].value))


@pytest.mark.parametrize("period,dimension", SQL_CASES, ids=lambda x: x.value)
def test_sql_path_equals_reference_path(db: Any, period: Period, dimension: Dimension) -> None:
    settings = KpiSettings()
    rep = tally_sqlite(db, period=period, dimension=dimension, since=fx.SINCE, until=fx.UNTIL, settings=settings,
                       cal=Calendar(fx.ZONE), tenants=["acme"], members=fx.MEMBERS)
    got = {(r["start_ts"], r[dimension.value]): r for r in rep.rows()}
    assert_reports_equal(got, engine_report(period, dimension, settings), f"sql {period.value}/{dimension.value}")


def test_other_settings_agree_with_plain_recomputation() -> None:
    settings = KpiSettings(service_level_s=30, short_abandon_s=5, short_abandons_in_service_level=True,
                           repeat_window_days=0.5, service_level_target=0.5)
    rep = tally_rows(period=Period.HOUR, dimension=Dimension.QUEUE, since=fx.SINCE, until=fx.UNTIL,
                     settings=settings, cal=Calendar(fx.ZONE), cdr=CALLS, agent_states=STATES, queue_log=QLOG,
                     callbacks=CBS, members=fx.MEMBERS)
    want = fx.plain_report("hour", "queue", CALLS, STATES, QLOG, CBS, sl_s=30, short_s=5, short_in_sl=True,
                           repeat_days=0.5, target=0.5)
    assert_reports_equal({(r["start_ts"], r["queue"]): r for r in rep.rows()}, want, "settings")


def test_tenants_are_kept_apart(db: Any) -> None:
    rep = tally_sqlite(db, period=Period.DAY, dimension=Dimension.TENANT, since=fx.SINCE, until=fx.UNTIL,
                       settings=KpiSettings(), cal=Calendar(fx.ZONE), tenants=["other"], members=fx.MEMBERS)
    assert rep.rows() == []


def test_edge_cases_by_hand() -> None:
    """The hand-made calls, with figures worked out on paper (docs/kpis.md)."""
    edge = fx.edge_cases()
    cal = Calendar(fx.ZONE)
    rep = tally_rows(period=Period.INTERVAL_30, dimension=Dimension.QUEUE, since=fx.SINCE, until=fx.UNTIL,
                     settings=KpiSettings(), cal=cal, cdr=edge)
    rows = {(r["start"], r["queue"]): r for r in rep.rows()}
    sales = rows[("2026-10-24T10:00:00+02:00", "sales")]
    # "cross" (queued 10:29:50, answered 10:30:10) is in the 10:00 interval
    assert sales["offered"] == 1 and sales["answered"] == 1 and sales["service_level"] == 1.0
    assert sales["average_handle_time_s"] == 150 + 30 + 12
    later = rows[("2026-10-24T10:30:00+02:00", "sales")]  # "xfer": queued 10:31:35, waited 35 s
    assert later["transfer_rate"] == 1.0 and later["service_level"] == 0.0
    support = rows[("2026-10-24T10:30:00+02:00", "support")]
    # one long abandon while ringing (50 s) and one short abandon (20 s, excluded)
    assert support["offered"] == 2 and support["abandoned"] == 2 and support["short_abandoned"] == 1
    assert support["abandon_rate"] == 1.0 and support["service_level"] == 0.0
    assert support["average_time_to_abandon_s"] == 35.0 and support["ring_no_answer_count"] == 1
    assert support["longest_wait_s"] == 50.0
    # 86,400 s later is 09:29:50 local: the clocks went back an hour overnight
    repeat = rows[("2026-10-25T09:00:00+01:00", "sales")]
    assert repeat["repeat_calls"] == 1 and repeat["survey_average_score"] == 3
    last = rows[("2026-10-26T23:30:00+01:00", "vip")]
    assert last["offered"] == 1 and last["service_level"] == 0.0
    assert not any(k[1] == "vip" and r["abandoned"] for k, r in rows.items())  # "after" is outside


def test_dst_day_has_25_hours_and_two_0200_buckets() -> None:
    cal = Calendar(fx.ZONE)
    day = cal.period_start(fx.SINCE + 86400 + 5 * 3600, Period.DAY)
    assert cal.next_start(day, Period.DAY) - day == 25 * 3600
    hours = {cal.label(cal.period_start(day + h * 3600 + 10, Period.HOUR)) for h in range(25)}
    assert "2026-10-25T02:00:00+02:00" in hours and "2026-10-25T02:00:00+01:00" in hours
    assert len(hours) == 25


def test_spring_forward_month_and_week_boundaries() -> None:
    cal = Calendar("Europe/Berlin")
    z = zoneinfo.ZoneInfo("Europe/Berlin")
    import datetime as dt
    t = dt.datetime(2026, 3, 29, 12, tzinfo=z).timestamp()
    day = cal.period_start(t, Period.DAY)
    assert cal.next_start(day, Period.DAY) - day == 23 * 3600
    assert cal.label(cal.period_start(t, Period.WEEK)) == "2026-03-23T00:00:00+01:00"
    assert cal.label(cal.period_start(t, Period.MONTH)) == "2026-03-01T00:00:00+01:00"
    assert cal.label(cal.next_start(cal.period_start(t, Period.MONTH), Period.MONTH)) == "2026-04-01T00:00:00+02:00"
    assert cal.label(cal.next_start(cal.period_start(t + 300 * 86400, Period.MONTH), Period.MONTH)) \
        == "2027-02-01T00:00:00+01:00"


def test_split_span_covers_the_span_exactly() -> None:
    cal = Calendar(fx.ZONE)
    parts = split_span(fx.SINCE + 100, fx.SINCE + 100 + 5000, cal, Period.INTERVAL_30)
    assert sum(s for _, s in parts) == pytest.approx(5000)
    assert [b - fx.SINCE for b, _ in parts] == [0, 1800, 3600]


def test_call_time_is_queue_entry_else_start() -> None:
    assert call_time({"start_ts": 5.0, "queued_ts": 9.0}) == 9.0
    assert call_time({"start_ts": 5.0, "queued_ts": None}) == 5.0


def test_half_hour_zone_uses_reference_path_only() -> None:
    cal = Calendar("Asia/Kolkata")  # +05:30 is a multiple of 15 minutes: fast path fine
    assert cal.base_bucket_ok(fx.SINCE, fx.UNTIL)
    assert cal.label(cal.period_start(fx.SINCE, Period.INTERVAL_30)).endswith(":00+05:30") or \
        cal.label(cal.period_start(fx.SINCE, Period.INTERVAL_30)).endswith(":30:00+05:30")
    assert not Calendar("Africa/Monrovia").base_bucket_ok(-2e9, -1.9e9)  # -00:44:30 until 1972


def test_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Calendar("Mars/Olympus")


def test_fixture_db_is_a_real_store(db: Any) -> None:
    assert db.execute("SELECT COUNT(*) FROM cdr").fetchone()[0] == len(CALLS)
    assert pathlib.Path(db.execute("PRAGMA database_list").fetchone()[2]).exists()


@pytest.mark.parametrize("seek_max", [0.0, 1e9], ids=["window", "seek"])
@pytest.mark.parametrize("dimension", [Dimension.QUEUE, Dimension.AGENT, Dimension.TENANT], ids=lambda x: x.value)
def test_repeat_callers_by_window_function_and_by_index_seek(db: Any, monkeypatch: pytest.MonkeyPatch,
                                                             seek_max: float, dimension: Dimension) -> None:
    """Both ways of finding a caller's previous call (engine.kpi_sql.calls_sql) give the reference figures."""
    import engine.kpi_sql as kpi_sql

    monkeypatch.setattr(kpi_sql, "SEEK_MAX_RANGE_S", seek_max)
    rep = tally_sqlite(db, period=Period.DAY, dimension=dimension, since=fx.SINCE, until=fx.UNTIL,
                       settings=KpiSettings(), cal=Calendar(fx.ZONE), tenants=["acme"], members=fx.MEMBERS)
    got = {(r["start_ts"], r[dimension.value]): r for r in rep.rows()}
    want = engine_report(Period.DAY, dimension, KpiSettings())
    assert sum(r["repeat_calls"] for r in want.values()) > 5  # the case is not vacuous
    assert_reports_equal(got, want, f"seek_max={seek_max}")


def test_repeat_caller_ties_outbound_calls_and_window_edge(tmp_path: pathlib.Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Same start_ts: ordered by call_id; an outbound call is no previous call; exactly 7 days apart is a
    repeat, a second more is not; another tenant's call is no previous call."""
    import engine.kpi_sql as kpi_sql

    t = fx.SINCE + 3 * 3600
    week = 7 * 86400.0
    calls = [fx._cdr("b", caller_number="+491", start_ts=t, queue="sales"),
             fx._cdr("a", caller_number="+491", start_ts=t, queue="sales"),  # tie: "a" first, "b" repeats
             fx._cdr("o", caller_number="+492", start_ts=t, queue="sales", direction="outbound"),
             fx._cdr("p", caller_number="+492", start_ts=t + 60, queue="sales"),  # outbound before: no repeat
             fx._cdr("x", caller_number="+493", start_ts=t - week, queue="sales"),
             fx._cdr("y", caller_number="+493", start_ts=t, queue="sales"),  # exactly 7 days: repeat
             fx._cdr("u", caller_number="+494", start_ts=t - week - 1, queue="sales"),
             fx._cdr("v", caller_number="+494", start_ts=t, queue="sales"),  # 7 days + 1 s: no repeat
             fx._cdr("w", caller_number="+495", start_ts=t - 60, queue="sales", tenant="other"),
             fx._cdr("z", caller_number="+495", start_ts=t, queue="sales")]  # other tenant: no repeat
    path = tmp_path / "ties.db"
    store = SqliteStore(str(path))
    for r in calls:
        store.append("cdr", r)
    store.close()
    import sqlite3

    conn = sqlite3.connect(str(path))
    want = tally_rows(period=Period.DAY, dimension=Dimension.QUEUE, since=fx.SINCE, until=fx.UNTIL,
                      settings=KpiSettings(), cal=Calendar(fx.ZONE), cdr=[c for c in calls if c["tenant"] == "acme"])
    assert [r["repeat_calls"] for r in want.rows()] == [2]  # "b" and "y"
    try:
        for seek_max in (0.0, 1e9):
            monkeypatch.setattr(kpi_sql, "SEEK_MAX_RANGE_S", seek_max)
            rep = tally_sqlite(conn, period=Period.DAY, dimension=Dimension.QUEUE, since=fx.SINCE, until=fx.UNTIL,
                               settings=KpiSettings(), cal=Calendar(fx.ZONE), tenants=["acme"])
            assert [(r["received"], r["repeat_calls"]) for r in rep.rows()] == [(6, 2)], seek_max
    finally:
        conn.close()


def test_long_span_closed_after_the_range_counts_in_it(tmp_path: pathlib.Path) -> None:
    """The span look-ahead is the longest staffed span logged (engine.kpi_sql.span_lookahead, an index
    seek): a 9-day not_ready span closed 5 days after the range still counts its hours inside it, and a
    long logged_out span does not stretch the look-ahead."""
    import sqlite3

    from engine.kpi_sql import span_lookahead

    end = fx.UNTIL + 5 * 86400
    states = [{"ts": end, "tenant": "acme", "agent": "1001", "state": "ready", "previous_state": "not_ready",
               "duration_s": 9 * 86400.0, "call_id": ""},
              {"ts": fx.SINCE + 3600, "tenant": "acme", "agent": "1002", "state": "ready",
               "previous_state": "ready", "duration_s": 600.0, "call_id": ""},
              {"ts": fx.UNTIL + 86400, "tenant": "acme", "agent": "1003", "state": "ready",
               "previous_state": "logged_out", "duration_s": 40 * 86400.0, "call_id": ""}]
    path = tmp_path / "spans.db"
    store = SqliteStore(str(path))
    for r in states:
        store.append("agent_state_log", r)
    store.close()
    conn = sqlite3.connect(str(path))
    try:
        assert span_lookahead(conn) == 9 * 86400.0 + 1
        plan = " ".join(r[3] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT MAX(duration_s) FROM agent_state_log WHERE previous_state IN "
            "('not_ready', 'ready', 'reserved', 'busy', 'wrapup')"))
        assert "agent_state_log_staffed_duration" in plan
        rep = tally_sqlite(conn, period=Period.DAY, dimension=Dimension.AGENT, since=fx.SINCE, until=fx.UNTIL,
                           settings=KpiSettings(), cal=Calendar(fx.ZONE), tenants=["acme"], members=fx.MEMBERS)
        want = tally_rows(period=Period.DAY, dimension=Dimension.AGENT, since=fx.SINCE, until=fx.UNTIL,
                          settings=KpiSettings(), cal=Calendar(fx.ZONE), agent_states=states, members=fx.MEMBERS)
        got = {(r["start_ts"], r["agent"]): r for r in rep.rows()}
        assert_reports_equal(got, {(r["start_ts"], r["agent"]): r for r in want.rows()}, "long span")
        assert sum(r["staffed_s"] for r in got.values() if r["agent"] == "1001") == fx.UNTIL - fx.SINCE
    finally:
        conn.close()
