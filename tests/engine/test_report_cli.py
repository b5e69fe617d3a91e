"""``ctiengine report`` end to end: a real store file, CSV/XLSX files whose
figures equal the KPI engine's, and three PNG charts."""
from __future__ import annotations

import csv
import pathlib
from typing import Any

from engine.cli import main
from engine.kpi import Dimension, Period
from engine.reporting import build_report, open_reader
from engine.store import SqliteStore
import kpi_fixtures as fx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_csv_xlsx_and_charts(make_config: Any, tmp_path: pathlib.Path, capsys: Any) -> None:
    cfg = make_config()
    body = pathlib.Path(cfg.source).read_text().replace('name = "test"', 'name = "test"\ntime_zone = "Europe/Berlin"')
    pathlib.Path(cfg.source).write_text(body)
    store = SqliteStore(cfg.resolve_path(cfg.store.path))
    calls = [dict(r, tenant="default") for r in fx.edge_cases() + fx.random_calls(120, seed=3)]
    for r in calls:
        store.append("cdr", r)
    store.close()
    out = tmp_path / "out"
    rc = main(["report", cfg.source, "--since", "2026-10-24", "--until", "2026-10-27", "--period", "hour",
               "--dimension", "queue", "--cdr", "--charts", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.iterdir())
    assert files == ["abandon_rate.png", "cdr.csv", "kpi_hour_queue.csv", "kpi_hour_queue.xlsx", "service_level.png",
                     "volume.png"]
    for name in ("abandon_rate.png", "service_level.png", "volume.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10000
    with open(out / "kpi_hour_queue.csv", newline="") as f:
        got = list(csv.DictReader(f))
    conn = open_reader(cfg.resolve_path(cfg.store.path))
    want = build_report(conn, _loaded(cfg.source), period=Period.HOUR, dimension=Dimension.QUEUE,
                        since=fx.SINCE, until=fx.UNTIL, tenants=None).rows()
    conn.close()
    assert len(got) == len(want) > 50
    for g, w in zip(got, want):
        assert g["start"] == w["start"] and g["queue"] == w["queue"]
        assert int(g["offered"]) == w["offered"] and g["service_level"] == ("" if w["service_level"] is None
                                                                              else repr(w["service_level"]))
    with open(out / "cdr.csv", newline="") as f:
        cdr_rows = list(csv.DictReader(f))
    assert len(cdr_rows) == sum(1 for r in calls if fx.SINCE <= r["start_ts"] < fx.UNTIL)
    from openpyxl import load_workbook
    wb = load_workbook(out / "kpi_hour_queue.xlsx", read_only=True)
    assert wb.sheetnames == ["kpi hour queue", "cdr"]
    assert sum(1 for _ in wb["kpi hour queue"].iter_rows()) == len(want) + 1
    assert "+01:00" in got[-1]["start"] and "+02:00" in got[0]["start"]


def _loaded(path: str) -> Any:
    from engine.config import load_config
    return load_config(path)


def test_report_bad_arguments_are_usage_errors(make_config: Any, capsys: Any) -> None:
    cfg = make_config()
    assert main(["report", cfg.source, "--since", "last week", "--until", "2026-10-27"]) == 2
    assert "neither Unix seconds nor an ISO 8601" in capsys.readouterr().err
    assert main(["report", cfg.source, "--since", "2026-10-24", "--until", "2026-10-27", "--format", "pdf"]) == 2
    assert main(["report", cfg.source, "--since", "2026-10-24", "--until", "2026-10-27"]) == 1  # no store yet
    assert "no store database" in capsys.readouterr().err
