"""The SQLite store: WAL mode, migrations of an old file, batched writes off
the caller's thread, flush and close semantics, bad rows."""
from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import threading
import time

import pytest

from engine.errors import StoreError
from engine.store import LATEST_VERSION, MIGRATIONS, AuditEntry, SqliteStore, current_version, migrate


def entry(i: int, tenant: str = "default") -> AuditEntry:
    return AuditEntry(ts=1000.0 + i, user=f"u{i % 3}", role="admin", tenant=tenant, op="agent.ready",
                      args='{"agent": "1001"}', result="ok", peer="127.0.0.1:1")


def test_new_database_is_wal_and_latest(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "a.db"))
    try:
        assert store.schema_version() == LATEST_VERSION
        mode = sqlite3.connect(tmp_path / "a.db").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        tables = {r[0] for r in sqlite3.connect(tmp_path / "a.db").execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"audit_log", "cdr", "queue_log", "agent_state_log", "recordings", "voicemail", "callbacks",
                "surveys", "schema_version"} <= tables
        for table in tables - {"schema_version"}:
            cols = {r[1] for r in sqlite3.connect(tmp_path / "a.db").execute(f"PRAGMA table_info({table})")}
            assert "tenant" in cols, table
    finally:
        store.close()


def test_old_database_file_is_upgraded_in_place(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.db"
    # An engine of schema version 1 wrote this file, with one audit row.
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == [1]
    conn.execute("INSERT INTO audit_log (ts, tenant, user, role, op, args, result, peer) "
                 "VALUES (1.0, 'default', 'old', 'admin', 'auth', '{}', 'ok', 'p')")
    conn.close()
    store = SqliteStore(str(path))
    try:
        assert store.schema_version() == LATEST_VERSION
        assert store.select("audit_log")[0]["user"] == "old"  # data kept
        versions = [r[0] for r in sqlite3.connect(path).execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == [m[0] for m in MIGRATIONS]
        store.append("cdr", {"call_id": "c1", "start_ts": 5.0, "caller_number": "+491"})
        store.flush(5)
        assert store.select("cdr", {"call_id": "c1"})[0]["caller_number"] == "+491"
    finally:
        store.close()


def test_newer_database_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(str(path)).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (LATEST_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {LATEST_VERSION + 1} is newer"):
        SqliteStore(str(path))


def test_failed_migration_leaves_previous_version(tmp_path: pathlib.Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    steps = [(1, "ok", "CREATE TABLE a (x INTEGER)"), (2, "broken", "CREATE TABLE b (x INTEGER); CREATE TABLE a (y)")]
    with pytest.raises(StoreError, match="migration 2 \\(broken\\) failed"):
        migrate(conn, migrations=steps)
    assert current_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'b'").fetchone() is None


def test_not_a_database_is_a_store_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        SqliteStore(str(path))


def test_writes_are_batched_on_the_writer_thread(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "b.db"), batch_max_rows=100, batch_interval_ms=5000)
    try:
        caller = threading.get_ident()
        start = time.monotonic()
        for i in range(250):
            store.audit(entry(i))
        assert time.monotonic() - start < 5  # append never waited for a commit
        store.flush(10)
        assert store.count("audit_log") == 250
        assert store.rows_written == 250
        assert 3 <= store.batches_written <= 4  # 100 + 100 + 50 (+ the flush boundary)
        assert store._writer.ident != caller
    finally:
        store.close()


def test_flush_commits_rows_queued_before_it(tmp_path: pathlib.Path) -> None:
    # A long interval: without flush the rows would sit in the batch.
    store = SqliteStore(str(tmp_path / "f.db"), batch_max_rows=10000, batch_interval_ms=60000)
    try:
        for i in range(10):
            store.audit(entry(i))
        store.flush(10)
        other = sqlite3.connect(tmp_path / "f.db")
        assert other.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 10
        other.close()
    finally:
        store.close()


def test_close_flushes_everything(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "c.db"), batch_max_rows=7, batch_interval_ms=60000)
    for i in range(1000):
        store.append("queue_log", {"ts": float(i), "call_id": f"c{i}", "queue": "sales", "event": "joined",
                                   "data": {"position": i}})
    store.close()
    conn = sqlite3.connect(tmp_path / "c.db")
    assert conn.execute("SELECT COUNT(*) FROM queue_log").fetchone()[0] == 1000
    assert conn.execute("SELECT data FROM queue_log WHERE call_id = 'c5'").fetchone()[0] == '{"position": 5}'
    with pytest.raises(StoreError, match="closed"):
        store.append("queue_log", {"ts": 1.0, "call_id": "x", "queue": "q", "event": "e"})


def test_back_pressure_when_queue_full(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "p.db"), batch_max_rows=5, batch_interval_ms=1, queue_max_rows=10)
    try:
        for i in range(500):  # 50x the queue: append waits, nothing is lost
            store.audit(entry(i))
        store.flush(10)
        assert store.count("audit_log") == 500
    finally:
        store.close()


def test_bad_rows_rejected_at_append(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "r.db"))
    try:
        with pytest.raises(ValueError, match="unknown table 'nope'"):
            store.append("nope", {})
        with pytest.raises(ValueError, match="has no column\\(s\\) colour"):
            store.append("audit_log", {"colour": 1})
        with pytest.raises(ValueError, match="unknown table 'schema_version'"):
            store.append("schema_version", {"version": 99})
    finally:
        store.close()


def test_constraint_violation_loses_only_that_row(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "v.db"))
    try:
        store.append("cdr", {"call_id": "dup", "start_ts": 1.0})
        store.append("cdr", {"call_id": "dup", "start_ts": 2.0})  # UNIQUE call_id
        store.append("cdr", {"call_id": "ok", "start_ts": 3.0})
        store.flush(10)
        assert sorted(r["call_id"] for r in store.select("cdr")) == ["dup", "ok"]
        assert store.write_errors == 1 and "UNIQUE" in store.last_error
    finally:
        store.close()


def test_select_filters_orders_and_pages(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    try:
        for i in range(20):
            store.audit(entry(i, tenant="acme" if i % 2 else "default"))
        store.flush(10)
        rows = store.select("audit_log", {"tenant": "acme"}, order_by="ts", descending=True, limit=3, offset=1)
        assert [r["ts"] for r in rows] == [1017.0, 1015.0, 1013.0]
        with pytest.raises(ValueError, match="no column 'nope'"):
            store.select("audit_log", {"nope": 1})

        async def from_loop() -> list[dict]:
            await store.aflush()
            return await store.aselect("audit_log", {"user": "u0"}, limit=100)

        assert len(asyncio.run(from_loop())) == 7
        status = store.status()
        assert status["schema_version"] == LATEST_VERSION and status["queued_rows"] == 0
    finally:
        store.close()


def test_unstorable_value_does_not_kill_the_writer(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    try:
        store.append("queue_log", {"ts": 1.0, "call_id": "a", "queue": "q", "event": "joined",
                                   "position": object()})  # sqlite cannot bind this
        store.append("queue_log", {"ts": 2.0, "call_id": "b", "queue": "q", "event": "joined"})
        store.flush(10)
        assert [r["call_id"] for r in store.select("queue_log")] == ["b"]
        assert store.write_errors >= 1
        asyncio.run(store.aflush(timeout=10))  # the writer is still alive
    finally:
        store.close()
