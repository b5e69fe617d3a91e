"""Reporting micro benchmarks, each beside a baseline from the same run.

A store with 150,000 CDRs over November (bench.reporting_month's generator:
about 5,000 calls and 17,000 agent-state rows a day); one day is reported:

* the day's KPI report by 30-minute interval and queue (SQL path,
  engine.kpi_sql) against the baseline of one full read of the ``cdr``
  table (``COUNT(*), SUM(wait_s)``): the ratio says how many table reads a
  report costs;
* the reference path (engine.kpi.tally_rows over the rows read in Python)
  for the same report, against the SQL path.

The month benchmark (1,000,000 CDRs) is the driver ``python -m
bench.reporting_month``; see docs/performance/reporting.md.
"""
from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import pytest

from bench.reporting_month import MONTH_START, config_toml, generate
from engine.config import parse_config
from engine.kpi import Calendar, Dimension, KpiSettings, Period, memberships_from_config
from engine.kpi_sql import tally_sqlite
from engine.reporting import _reference, open_reader

DAY = (MONTH_START + 2 * 86400, MONTH_START + 3 * 86400)


@pytest.fixture(scope="module")
def day_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    db = tmp_path_factory.mktemp("kpibench") / "store.db"
    generate(str(db), 150_000)  # ~5,000 calls a day over the month
    return str(db), parse_config(config_toml(), "bench.toml")


@pytest.mark.benchmark(group="reporting-day")
def test_baseline_full_read(benchmark: Any, day_store: tuple[str, Any]) -> None:
    conn = open_reader(day_store[0])
    benchmark(lambda: conn.execute("SELECT COUNT(*), SUM(wait_s) FROM cdr").fetchone())
    conn.close()


@pytest.mark.benchmark(group="reporting-day")
def test_day_report_sql(benchmark: Any, day_store: tuple[str, Any]) -> None:
    path, cfg = day_store
    conn = open_reader(path)
    members = memberships_from_config(cfg)
    rep = benchmark(lambda: tally_sqlite(conn, period=Period.INTERVAL_30, dimension=Dimension.QUEUE, since=DAY[0],
                                         until=DAY[1], settings=KpiSettings(), cal=Calendar(cfg.engine.time_zone),
                                         tenants=("default",), members=members))
    assert len(rep.rows()) > 100
    conn.close()


@pytest.mark.benchmark(group="reporting-day")
def test_day_report_reference(benchmark: Any, day_store: tuple[str, Any]) -> None:
    path, cfg = day_store
    conn = open_reader(path)
    members = memberships_from_config(cfg)
    rep = benchmark.pedantic(lambda: _reference(conn, Calendar(cfg.engine.time_zone), KpiSettings(), members,
                                                Period.INTERVAL_30, Dimension.QUEUE, DAY[0], DAY[1], ("default",)),
                             rounds=2, iterations=1)
    assert len(rep.rows()) > 100
    conn.close()
