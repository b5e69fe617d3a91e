"""Reporting benchmark: a month of a busy centre in the SQLite store.

``python -m bench.reporting_month [--calls 1000000] [--db bench/results/reporting_month.db]``

1. Generates (once; the file is reused when it already holds the same
   number of calls) a month of data with the engine's own schema
   (``engine.store.migrate``, every index of the migrations): ``--calls``
   CDRs over November 2026 in Europe/Berlin with a daytime profile, 2
   tenants, 8 queues, 160 agents in 6 groups, 12 dialled numbers, 400,000
   caller numbers (repeat callers), 85 % answered, 9 % abandoned, 3 %
   voicemail, 3 % blocked; per answered call 3 queue-log rows (enqueued,
   offered, answered) and 4 agent-state rows (reserved, busy, wrapup,
   ready), per abandoned call 2 queue-log rows, 4 % ring-no-answer rows:
   about 3 queue-log and 3.4 agent-state rows per CDR.
2. Seals the month into KPI buckets through the engine's own code path
   (:func:`engine.kpi_buckets.seal_all`, a week per step; a no-op when the
   file is already sealed), then times, best of ``--repeat`` runs each
   (a new query-only connection each), in the same run:
   * baseline ``full_scan``: ``SELECT COUNT(*), SUM(wait_s) FROM cdr``;
   * ``week_interval_report_raw``: the first week by 30 minutes and queue
     from raw rows (:func:`engine.kpi_sql.tally_sqlite`, once: the raw
     month takes over a minute here; ``--raw-month`` adds it) and the same
     week through ``build_report`` (buckets), checked equal;
   * ``kpi.report``'s computation (:func:`engine.reporting.build_report`)
     for the month: 30 minutes by queue, group and agent; day by agent;
     month by agent, group, queue, dialled number and tenant;
   * ``python_rollup_*``: the previous Python roll-up of the bucket rows
     (the "before" of the SQL roll-up);
   * ``month_interval_report_live_tail``: the month with its last 2.5 hours
     unsealed (raw tail), checked equal to the sealed report;
   * ``filtered_cdr_query`` (with and without the total count) and
     ``caller_history_query`` (:func:`engine.cdr_query.query`);
   and records ``EXPLAIN QUERY PLAN`` of each query (the indexes used).
3. Writes everything to ``bench/results/reporting_month.json``.

Bounded: generation is linear in ``--calls`` (bulk-load pragmas, 200,000
calls per transaction; 15 minutes per million on this shared VM at load
9-23), sealing a week per step, each measurement a handful of runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sqlite3
import time
import zoneinfo
from typing import Any, Callable, Iterator

ROOT = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(ROOT, "results")
ZONE = "Europe/Berlin"
MONTH_START = dt.datetime(2026, 11, 1, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp()
MONTH_END = dt.datetime(2026, 12, 1, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp()
QUEUES = [f"q{i}" for i in range(8)]
GROUPS = [f"g{i}" for i in range(6)]
AGENTS = [f"{1000 + i}" for i in range(160)]
DIALED = [f"8001{i:02d}" for i in range(12)]
# relative call volume per local hour (a daytime centre, quiet at night)
HOURLY = [1, 1, 1, 1, 1, 2, 4, 8, 14, 16, 16, 15, 13, 14, 15, 15, 14, 12, 9, 7, 5, 4, 3, 2]

def config_toml() -> str:
    """The benchmark centre's config (agents need a real hash; a cheap one)."""
    from engine.passwords import hash_password

    pw = hash_password("bench", n=1024)
    return f"""
[engine]
name = "reporting-bench"
time_zone = "{ZONE}"
[groups.g0]
[groups.g1]
[groups.g2]
[groups.g3]
[groups.g4]
[groups.g5]
""" + "".join(f'[queues.q{i}]\ngroups = ["g{i % 6}", "g{(i + 1) % 6}"]\n' for i in range(8)) + "".join(
        f'[agents.{a}]\nname = "A{a}"\npassword = "{pw}"\ngroups = ["g{i % 6}", "g{(i + 2) % 6}"]\n'
        for i, a in enumerate(AGENTS))


def _starts(rnd: random.Random, n: int) -> list[float]:
    days = int((MONTH_END - MONTH_START) // 86400) + 1
    hours = [h for h, w in enumerate(HOURLY) for _ in range(w)]
    out = []
    zone = zoneinfo.ZoneInfo(ZONE)
    base = dt.datetime(2026, 11, 1, tzinfo=zone)
    day_starts = [(base + dt.timedelta(days=d)).timestamp() for d in range(days)]
    for _ in range(n):
        d = rnd.randrange(30)
        t = day_starts[d] + rnd.choice(hours) * 3600 + rnd.random() * 3600
        out.append(min(t, MONTH_END - 1))
    out.sort()
    return out


def generate(path: str, calls: int, seed: int = 2026) -> dict[str, int]:
    """Write the month into a new store file at ``path``; returns row counts."""
    from engine.store import migrate

    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path, isolation_level=None)
    # Bulk load: no rollback journal, no fsync, and a page cache large enough
    # (2 GiB) that the random-order index inserts (caller number, call id)
    # stay in memory; the engine's WAL mode is set once the file is written.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-2097152")
    conn.execute("PRAGMA temp_store=MEMORY")
    migrate(conn)
    rnd = random.Random(seed)
    counts = {"cdr": 0, "queue_log": 0, "agent_state_log": 0}
    cdr_sql = ("INSERT INTO cdr (call_id, tenant, direction, caller_number, dialed_number, trunk, queue, grp, agent, "
               "start_ts, queued_ts, answered_ts, end_ts, wait_s, ring_s, talk_s, hold_s, wrapup_s, disposition, "
               "end_reason, transferred, recorded, ring_no_answer_count, survey_score) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    ql_sql = "INSERT INTO queue_log (ts, tenant, call_id, queue, event, agent, wait_s) VALUES (?,?,?,?,?,?,?)"
    as_sql = ("INSERT INTO agent_state_log (ts, tenant, agent, state, previous_state, duration_s, call_id) "
              "VALUES (?,?,?,?,?,?,?)")
    starts = _starts(rnd, calls)
    chunk = 200000  # rows of one transaction (executemany)
    for lo in range(0, calls, chunk):
        cdr_rows, ql_rows, as_rows = [], [], []
        for i in range(lo, min(calls, lo + chunk)):
            start = starts[i]
            tenant = "acme" if rnd.random() < 0.1 else "default"
            cid = f"c{i:08d}"
            caller = f"+49{rnd.randrange(30, 99)}{rnd.randrange(400000):07d}"
            dialed = rnd.choice(DIALED)
            queue = rnd.choice(QUEUES)
            r = rnd.random()
            if r < 0.03:
                cdr_rows.append((cid, tenant, "inbound", caller, dialed, "t1", "", "", "", start, None, None,
                                 start, 0.0, 0.0, 0.0, 0.0, 0.0, "blocked", "blacklist", 0, 0, 0, None))
                continue
            queued = start + rnd.uniform(5, 40)
            wait = rnd.expovariate(1 / 25)
            ql_rows.append((queued, tenant, cid, queue, "enqueued", "", None))
            rna = 1 if rnd.random() < 0.04 else 0
            if rna:
                ql_rows.append((queued + 1, tenant, cid, queue, "ring_no_answer", rnd.choice(AGENTS), None))
            if r < 0.88:
                agent = rnd.choice(AGENTS)
                grp = f"g{int(agent) % 6}"
                ans = queued + wait
                talk = rnd.expovariate(1 / 200)
                hold = rnd.expovariate(1 / 40) if rnd.random() < 0.2 else 0.0
                wrap = rnd.uniform(5, 40)
                end = ans + talk + hold
                cdr_rows.append((cid, tenant, "inbound", caller, dialed, "t1", queue, grp, agent, start, queued, ans,
                                 end, wait, rnd.uniform(1, 8), talk, hold, wrap, "answered", "caller_hangup",
                                 int(rnd.random() < 0.06), int(rnd.random() < 0.7), rna,
                                 rnd.choice((None, None, None, 1, 2, 3))))
                ql_rows.append((ans - 3, tenant, cid, queue, "offered", agent, None))
                ql_rows.append((ans, tenant, cid, queue, "answered", agent, wait))
                as_rows += [(ans - 3, tenant, agent, "reserved", "ready", rnd.uniform(10, 300), cid),
                            (ans, tenant, agent, "busy", "reserved", 3.0, cid),
                            (end, tenant, agent, "wrapup", "busy", talk + hold, cid),
                            (end + wrap, tenant, agent, "ready", "wrapup", wrap, cid)]
            elif r < 0.97:
                cdr_rows.append((cid, tenant, "inbound", caller, dialed, "t1", queue, "", "", start, queued, None,
                                 queued + wait, wait, 0.0, 0.0, 0.0, 0.0, "abandoned", "caller_hangup", 0, 0, rna,
                                 None))
                ql_rows.append((queued + wait, tenant, cid, queue, "abandoned", "", wait))
            else:
                cdr_rows.append((cid, tenant, "inbound", caller, dialed, "t1", queue, "", "", start, queued, None,
                                 queued + 60 + wait, wait, 0.0, 0.0, 0.0, 0.0, "voicemail", "voicemail", 0, 0,
                                 rna, None))
        conn.execute("BEGIN")
        conn.executemany(cdr_sql, cdr_rows)
        conn.executemany(ql_sql, ql_rows)
        conn.executemany(as_sql, as_rows)
        conn.execute("COMMIT")
        counts["cdr"] += len(cdr_rows)
        counts["queue_log"] += len(ql_rows)
        counts["agent_state_log"] += len(as_rows)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return counts


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def plan(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[str]:
    return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    return len(got) == len(want) and all(same(x[k], y[k]) for x, y in zip(got, want) for k in y)


def measure(path: str, repeat: int, raw_month: bool) -> dict[str, Any]:
    from engine.cdr_query import CdrFilter, ReadScope, query, query_sql
    from engine.config import parse_config
    from engine.kpi import Dimension
    from engine.kpi_buckets import rollup_sql
    from engine.kpi_sql import calls_sql
    from engine.reporting import open_reader

    cfg = parse_config(config_toml(), "bench.toml")
    out: dict[str, Any] = {}

    def with_conn(fn: Callable[[sqlite3.Connection], Any]) -> Callable[[], Any]:
        def run() -> Any:
            conn = open_reader(path)
            try:
                return fn(conn)
            finally:
                conn.close()
        return run

    t, n = best_of(with_conn(lambda c: c.execute("SELECT COUNT(*), SUM(wait_s) FROM cdr").fetchone()), repeat)
    out["full_scan"] = {"seconds": t, "rows": n[0], "load": os.getloadavg()}
    print("full_scan", out["full_scan"], flush=True)
    out.update(measure_buckets(path, cfg, with_conn, repeat, raw_month))
    flt = CdrFilter(since=MONTH_START, until=MONTH_END, queue="q3", disposition="abandoned", min_wait_s=30,
                    caller_prefix="+4930")
    scope = ReadScope(tenants=("default",))
    t, res = best_of(with_conn(lambda c: query(c, flt, scope, limit=100, descending=True, count=False)), repeat)
    out["filtered_cdr_query"] = {"seconds": t, "page_rows": len(res["rows"]), "load": os.getloadavg()}
    t, res = best_of(with_conn(lambda c: query(c, flt, scope, limit=100, descending=True, count=True)), repeat)
    out["filtered_cdr_query_with_count"] = {"seconds": t, "page_rows": len(res["rows"]), "total": res["total"],
                                            "load": os.getloadavg()}
    print("filtered_cdr_query", out["filtered_cdr_query"], out["filtered_cdr_query_with_count"], flush=True)
    conn = open_reader(path)
    caller = conn.execute("SELECT caller_number FROM cdr WHERE tenant = 'default' LIMIT 1 OFFSET 12345").fetchone()[0]
    hist = CdrFilter(since=MONTH_START, until=MONTH_END, caller_number=caller)
    t, res = best_of(with_conn(lambda c: query(c, hist, scope, limit=100)), repeat)
    out["caller_history_query"] = {"seconds": t, "page_rows": len(res["rows"])}
    sql, params = query_sql(flt, scope, descending=True)
    hsql, hparams = query_sql(hist, scope)
    out["plans"] = {
        "filtered_cdr_query": plan(conn, sql, [*params, 101, 0]),
        "caller_history_query": plan(conn, hsql, [*hparams, 101, 0]),
        "bucket_rollup": plan(conn, rollup_sql(("default",)), [3600, 86400, "agent", MONTH_START, MONTH_END,
                                                               "default"]),
        "raw_report_calls_window": plan(conn, calls_sql(Dimension.QUEUE, ("default",)),
                                        ["default", MONTH_START - 86400 * 8, MONTH_END, 3600, 1800, 20, 20,
                                         7 * 86400, MONTH_START, MONTH_END]),
        "raw_tail_calls_seek": plan(conn, calls_sql(Dimension.QUEUE, ("default",), seek=True),
                                    ["default", MONTH_END - 86400 - 9000, MONTH_END, 3600, 1800, 20, 20,
                                     7 * 86400, MONTH_END - 9000, MONTH_END]),
    }
    conn.close()
    return out


def python_rollup(conn: sqlite3.Connection, period: Any, dimension: Any, cal: Any) -> int:
    """The previous roll-up (baseline): every bucket row of the month summed in Python lists."""
    from engine.kpi_buckets import STATE_COLUMNS, SUM_FIELDS

    cols = ", ".join((*SUM_FIELDS, *STATE_COLUMNS))
    longest = SUM_FIELDS.index("longest_wait_s")
    acc: dict[tuple[float, str], list[float]] = {}
    starts: dict[int, float] = {}
    for row in conn.execute(f"SELECT bucket_start, key, {cols} FROM kpi_bucket WHERE dimension = ? "
                            "AND bucket_start >= ? AND bucket_start < ? AND tenant IN (?)",
                            [dimension.value, MONTH_START, MONTH_END, "default"]):
        bs = row[0]
        start = starts.get(bs)
        if start is None:
            start = starts[bs] = cal.period_start(float(bs), period)
        k = (start, row[1])
        cur = acc.get(k)
        if cur is None:
            acc[k] = list(row[2:])
        else:
            lw = max(cur[longest], row[2 + longest])
            acc[k] = cur = [x + y for x, y in zip(cur, row[2:])]
            cur[longest] = lw
    return len(acc)


def measure_buckets(path: str, cfg: Any, with_conn: Callable[[Callable[[sqlite3.Connection], Any]], Callable[[], Any]],
                    repeat: int, raw_month: bool) -> dict[str, Any]:
    """Month reports from sealed buckets (:mod:`engine.kpi_buckets`) beside the raw-row path
    (:func:`engine.kpi_sql.tally_sqlite`) on the same file in one run; checks they agree."""
    from engine.kpi import Calendar, Dimension, Period, memberships_from_config
    from engine.kpi_buckets import SEAL_LAG_S, report_from_buckets, seal_all, seal_state
    from engine.kpi_sql import tally_sqlite
    from engine.reporting import build_report, settings_from_config
    from engine.store import migrate

    out: dict[str, Any] = {}
    settings, members = settings_from_config(cfg), memberships_from_config(cfg)
    cal = Calendar(cfg.engine.time_zone)
    week_end = MONTH_START + 7 * 86400

    def raw(until: float, period: Period = Period.INTERVAL_30, dim: Dimension = Dimension.QUEUE) -> Callable:
        def run(c: sqlite3.Connection) -> list[dict[str, Any]]:
            return tally_sqlite(c, period=period, dimension=dim, since=MONTH_START, until=until, settings=settings,
                                cal=cal, tenants=("default",), members=members).rows()
        return run

    # Seal the month as the engine's SealService would once the month is over
    # (the data is synthetic: "now" is the month's end plus the sealing lag).
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    migrate(conn)
    t0 = time.perf_counter()
    runs = seal_all(conn, settings=settings, members=members, now=MONTH_END + SEAL_LAG_S, max_buckets=48 * 7)
    out["sealing"] = {"seconds": time.perf_counter() - t0, "runs": runs, "max_buckets_per_run": 48 * 7,
                      "bucket_rows": conn.execute("SELECT COUNT(*) FROM kpi_bucket").fetchone()[0],
                      "sealed_until": seal_state(conn)["sealed_until"], "load": os.getloadavg()}  # type: ignore[index]
    conn.close()
    print("sealing", out["sealing"], flush=True)

    # The raw-row baseline: the first week (a quarter of the month), and the
    # whole month only when asked (--raw-month; about a minute or more here).
    t, raw_week = best_of(with_conn(raw(week_end)), 1)
    out["week_interval_report_raw"] = {"seconds": t, "report_rows": len(raw_week), "load": os.getloadavg()}
    print("week_interval_report_raw", out["week_interval_report_raw"], flush=True)
    t, rows = best_of(with_conn(lambda c: build_report(c, cfg, period=Period.INTERVAL_30, dimension=Dimension.QUEUE,
                                                       since=MONTH_START, until=week_end,
                                                       tenants=("default",)).rows()), repeat)
    out["week_interval_report"] = {"seconds": t, "report_rows": len(rows),
                                   "equals_raw_path": rows_equal(rows, raw_week),
                                   "speedup_vs_raw": out["week_interval_report_raw"]["seconds"] / t}
    print("week_interval_report", out["week_interval_report"], flush=True)
    if raw_month:
        t, raw_rows = best_of(with_conn(raw(MONTH_END)), 1)
        out["month_interval_report_raw"] = {"seconds": t, "report_rows": len(raw_rows), "load": os.getloadavg()}
        print("month_interval_report_raw", out["month_interval_report_raw"], flush=True)
    cases = [("month_interval_report", Period.INTERVAL_30, Dimension.QUEUE),
             ("month_interval_report_by_group", Period.INTERVAL_30, Dimension.GROUP),
             ("month_interval_report_by_agent", Period.INTERVAL_30, Dimension.AGENT),
             ("month_daily_agent_report", Period.DAY, Dimension.AGENT),
             ("month_agent_report", Period.MONTH, Dimension.AGENT),
             ("month_group_report", Period.MONTH, Dimension.GROUP),
             ("month_queue_report", Period.MONTH, Dimension.QUEUE),
             ("month_dialed_number_report", Period.MONTH, Dimension.DIALED_NUMBER),
             ("month_tenant_report", Period.MONTH, Dimension.TENANT)]
    for name, period, dim in cases:
        t, rows = best_of(with_conn(lambda c: build_report(c, cfg, period=period, dimension=dim, since=MONTH_START,
                                                           until=MONTH_END, tenants=("default",)).rows()), repeat)
        out[name] = {"seconds": t, "report_rows": len(rows), "calls_counted": sum(r["received"] for r in rows),
                     "load": os.getloadavg()}
        if name == "month_interval_report" and raw_month:
            out[name]["equals_raw_path"] = rows_equal(rows, raw_rows)
            out[name]["speedup_vs_raw"] = out["month_interval_report_raw"]["seconds"] / t
        print(name, out[name], flush=True)
    for name, period, dim in (("python_rollup_month_agent", Period.MONTH, Dimension.AGENT),
                              ("python_rollup_day_agent", Period.DAY, Dimension.AGENT)):
        t, n = best_of(with_conn(lambda c: python_rollup(c, period, dim, cal)), repeat)
        out[name] = {"seconds": t, "keys": n, "load": os.getloadavg(), "what": "previous Python roll-up only"}
        print(name, out[name], flush=True)
    # Month to date while the engine runs: the last 2.5 hours are not sealed yet
    # and come from raw rows (the SealService lag plus one interval).
    tail_from = float(int(MONTH_END - 9000) // 1800 * 1800)

    def live(c: sqlite3.Connection) -> list[dict[str, Any]]:
        st = dict(seal_state(c) or {})
        st["sealed_until"] = tail_from
        return report_from_buckets(c, st, period=Period.INTERVAL_30, dimension=Dimension.QUEUE, since=MONTH_START,
                                   until=MONTH_END, settings=settings, cal=cal, tenants=("default",),
                                   members=members).rows()
    t, rows = best_of(with_conn(live), repeat)
    full = with_conn(lambda c: build_report(c, cfg, period=Period.INTERVAL_30, dimension=Dimension.QUEUE,
                                            since=MONTH_START, until=MONTH_END, tenants=("default",)).rows())()
    out["month_interval_report_live_tail"] = {"seconds": t, "raw_tail_s": MONTH_END - tail_from,
                                              "equals_sealed": rows_equal(rows, full), "load": os.getloadavg()}
    print("month_interval_report_live_tail", out["month_interval_report_live_tail"], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--db", default=os.path.join(RESULTS, "reporting_month.db"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--raw-month", action="store_true", help="also time the whole month from raw rows (slow)")
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    counts = None
    if not args.regenerate and os.path.exists(args.db):
        conn = sqlite3.connect(args.db)
        have = conn.execute("SELECT COUNT(*) FROM cdr").fetchone()[0]
        conn.close()
        if have == args.calls:
            counts = {"cdr": have, "reused": 1}
    if counts is None:
        t = time.perf_counter()
        counts = generate(args.db, args.calls)
        counts["generate_seconds"] = round(time.perf_counter() - t, 1)
        print("generated", counts, flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "calls": args.calls,
              "db_bytes": os.path.getsize(args.db), "load_average": os.getloadavg(), "rows": counts,
              "cpu_count": os.cpu_count()}
    result.update(measure(args.db, args.repeat, args.raw_month))
    result["load_average_after"] = os.getloadavg()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "reporting_month.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
