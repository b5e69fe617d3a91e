"""CDR streaming for exports (engine/cdr_query.py): ``iter_rows`` reads one cursor
(no OFFSET re-scans) in order, ``write_xlsx`` continues a full worksheet on a
new one and keeps memory flat however many rows it writes."""
from __future__ import annotations

import io
import pathlib
import sqlite3
import tracemalloc
from typing import Any, Iterator

import pytest

import kpi_fixtures as fx
from engine.cdr_query import CDR_COLUMNS, CdrFilter, ReadScope, iter_rows, query, write_csv, write_xlsx
from engine.reporting import open_reader
from engine.store import SqliteStore

N = 7000


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cdrq") / "store.db")
    store = SqliteStore(path)
    for i in range(N):  # a few equal start_ts: the id breaks the tie
        store.append("cdr", fx._cdr(f"c{i:05d}", tenant="default" if i % 7 else "other",
                                    caller_number=f"+4930{i % 50:04d}", start_ts=fx.SINCE + (i // 3) * 10.0,
                                    queue="sales"))
    store.close()
    return path


def test_iter_rows_streams_one_cursor_in_order(store_path: str) -> None:
    conn = open_reader(store_path)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        flt, scope = CdrFilter(since=fx.SINCE, until=fx.UNTIL), ReadScope(tenants=("default",))
        rows = iter_rows(conn, flt, scope, page=500)
        first = next(rows)
        assert first["call_id"] == "c00001"  # c00000 is tenant "other"
        got = [first, *rows]
        selects = [q for q in seen if q.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1 and "LIMIT -1 OFFSET 0" in selects[0]
        conn.set_trace_callback(None)
        want: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = query(conn, flt, scope, offset=offset, limit=1000)
            want += page["rows"]
            offset = page["next_offset"]
        assert got == want and len(got) == N - len(range(0, N, 7))
        assert [r["start_ts"] for r in got] == sorted(r["start_ts"] for r in got)
    finally:
        conn.close()


def test_csv_and_xlsx_from_the_stream_hold_every_row(store_path: str, tmp_path: pathlib.Path) -> None:
    from openpyxl import load_workbook

    conn = open_reader(store_path)
    try:
        flt, scope = CdrFilter(since=fx.SINCE, until=fx.UNTIL, queue="sales"), ReadScope(tenants=None)
        buf = io.StringIO()
        assert write_csv(iter_rows(conn, flt, scope), buf) == N
        assert buf.getvalue().count("\r\n") == N + 1
        assert write_xlsx([("cdr", CDR_COLUMNS, iter_rows(conn, flt, scope))], str(tmp_path / "c.xlsx")) == N
    finally:
        conn.close()
    wb = load_workbook(tmp_path / "c.xlsx", read_only=True)
    rows = list(wb["cdr"].iter_rows(values_only=True))
    assert list(rows[0]) == list(CDR_COLUMNS) and len(rows) == N + 1
    assert rows[-1][CDR_COLUMNS.index("call_id")] == f"c{N - 1:05d}"


def test_a_full_worksheet_continues_on_the_next(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    import engine.cdr_query as cq
    from openpyxl import load_workbook

    monkeypatch.setattr(cq, "XLSX_MAX_ROWS", 100)  # the real limit is 1,048,576 rows
    rows = [{"n": i, "text": f"=cmd{i}"} for i in range(250)]
    assert write_xlsx([("a very long sheet title for calls", ["n", "text"], iter(rows))], str(tmp_path / "w.xlsx")) \
        == 250
    wb = load_workbook(tmp_path / "w.xlsx", read_only=True)
    names = wb.sheetnames
    assert names == ["a very long sheet title for cal", "a very long sheet title for (2)",
                     "a very long sheet title for (3)"]
    got = [list(wb[n].iter_rows(values_only=True)) for n in names]
    assert [len(g) for g in got] == [100, 100, 53]  # header + 99, header + 99, header + 52
    assert all(g[0] == ("n", "text") for g in got)
    assert [r[0] for g in got for r in g[1:]] == list(range(250))
    assert got[0][1][1] == "'=cmd0"  # formula injection is still quoted


def _rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"call_id": f"c{i:08d}", "start_ts": 1.8e9 + i, "caller_number": f"+49301234{i:05d}",
               "queue": "sales", "wait_s": i % 97 * 1.5, "disposition": "answered"}


def _peak_bytes(n: int, tmp: pathlib.Path) -> int:
    cols = ["call_id", "start_ts", "caller_number", "queue", "wait_s", "disposition"]
    tracemalloc.start()
    try:
        write_xlsx([("cdr", cols, _rows(n))], str(tmp / f"m{n}.xlsx"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_xlsx_memory_stays_flat_as_rows_grow(tmp_path: pathlib.Path) -> None:
    small, large = _peak_bytes(300, tmp_path), _peak_bytes(3000, tmp_path)
    # Ten times the rows: held in memory (about 1.5 kB a row as openpyxl
    # cells), the peak would grow by about 4 MB; streamed (write-only mode)
    # it barely moves.
    assert large < small + 1_000_000, (small, large)


def test_stream_survives_a_writer_committing_meanwhile(store_path: str, tmp_path: pathlib.Path) -> None:
    """The reader's snapshot (WAL) holds while the engine appends: the export sees the rows of its start."""
    import shutil

    path = str(tmp_path / "copy.db")
    shutil.copy(store_path, path)
    conn = open_reader(path)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        rows = iter_rows(conn, CdrFilter(since=fx.SINCE, until=fx.UNTIL), ReadScope(tenants=None), page=100)
        next(rows)
        writer.execute("INSERT INTO cdr (call_id, tenant, start_ts) VALUES ('late', 'default', ?)", (fx.SINCE,))
        assert sum(1 for _ in rows) == N - 1
    finally:
        writer.close()
        conn.close()
