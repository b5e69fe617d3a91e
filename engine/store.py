"""The store: one narrow interface, SQLite (WAL) behind it.

Theory of operation
-------------------
Everything the engine persists goes through :class:`Store` (a Protocol) so a
PostgreSQL implementation can replace :class:`SqliteStore` when several
engines share data.  The interface is deliberately small:

* ``append(table, row)`` queues one row for a *batched* insert.  It never
  touches the disk on the caller's thread: rows go to a bounded
  :class:`queue.Queue` that one writer thread drains, inserting up to
  ``batch_max_rows`` rows per transaction, at least every
  ``batch_interval_ms``.  When the queue is full the caller waits (back
  pressure, logged) rather than losing a CDR.
* ``flush()`` blocks until every row queued before the call is committed;
  ``aflush()`` does the same from the event loop without blocking it.
* ``select(table, where, ...)`` reads on a separate connection (WAL lets
  readers run beside the writer); ``aselect`` runs it in a thread.
* ``close()`` flushes, stops the writer and closes both connections.

Schema versions
---------------
:data:`MIGRATIONS` is an ordered list of ``(version, description, sql)``.
The ``schema_version`` table records each applied version with its time;
opening a database applies the missing ones in order, each in its own
transaction, so an older file is upgraded in place.  A database whose
version is newer than the code refuses to open (``StoreError``) rather
than writing rows an older engine does not understand.

Every table has a ``tenant`` column (issue 12) and times are Unix seconds
(``REAL``, UTC).  Column sets follow the call-centre vocabulary of
STYLE.md §8; later issues fill the CDR, queue log and agent state log.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from engine.config import DEFAULT_TENANT, StoreSection
from engine.errors import StoreError

logger = logging.getLogger(__name__)

# (version, description, SQL script).  Append only: never edit a released step.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "audit log", """
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    user TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    op TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL,
    peer TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_ts ON audit_log (tenant, ts);
CREATE INDEX audit_log_user ON audit_log (user, ts);
"""),
    (2, "calls: cdr, queue log, agent state log", """
CREATE TABLE cdr (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL DEFAULT 'default',
    direction TEXT NOT NULL DEFAULT 'inbound',
    caller_number TEXT NOT NULL DEFAULT '',
    dialed_number TEXT NOT NULL DEFAULT '',
    trunk TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL DEFAULT '',
    flow TEXT NOT NULL DEFAULT '',
    queue TEXT NOT NULL DEFAULT '',
    grp TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT '',
    start_ts REAL NOT NULL,
    queued_ts REAL,
    answered_ts REAL,
    end_ts REAL,
    wait_s REAL NOT NULL DEFAULT 0,
    ring_s REAL NOT NULL DEFAULT 0,
    talk_s REAL NOT NULL DEFAULT 0,
    hold_s REAL NOT NULL DEFAULT 0,
    wrapup_s REAL NOT NULL DEFAULT 0,
    disposition TEXT NOT NULL DEFAULT '',
    end_reason TEXT NOT NULL DEFAULT '',
    reason_code TEXT NOT NULL DEFAULT '',
    transferred INTEGER NOT NULL DEFAULT 0,
    recorded INTEGER NOT NULL DEFAULT 0,
    ring_no_answer_count INTEGER NOT NULL DEFAULT 0,
    survey_score INTEGER,
    callback_of TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX cdr_start ON cdr (tenant, start_ts);
CREATE INDEX cdr_caller ON cdr (tenant, caller_number, start_ts);
CREATE INDEX cdr_dialed ON cdr (tenant, dialed_number, start_ts);
CREATE INDEX cdr_agent ON cdr (tenant, agent, start_ts);
CREATE INDEX cdr_queue ON cdr (tenant, queue, start_ts);
CREATE TABLE queue_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    call_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    event TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    position INTEGER,
    wait_s REAL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX queue_log_ts ON queue_log (tenant, queue, ts);
CREATE INDEX queue_log_call ON queue_log (call_id);
CREATE TABLE agent_state_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    previous_state TEXT NOT NULL DEFAULT '',
    duration_s REAL NOT NULL DEFAULT 0,
    reason_code TEXT NOT NULL DEFAULT '',
    call_id TEXT NOT NULL DEFAULT '',
    extension TEXT NOT NULL DEFAULT ''
);
CREATE INDEX agent_state_log_ts ON agent_state_log (tenant, agent, ts);
"""),
    (3, "recordings, voicemail, callbacks, surveys", """
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    path TEXT NOT NULL,
    start_ts REAL NOT NULL,
    duration_s REAL NOT NULL DEFAULT 0,
    agent TEXT NOT NULL DEFAULT '',
    grp TEXT NOT NULL DEFAULT '',
    queue TEXT NOT NULL DEFAULT '',
    caller_number TEXT NOT NULL DEFAULT '',
    format TEXT NOT NULL DEFAULT 'wav',
    channels INTEGER NOT NULL DEFAULT 2,
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_ts ON recordings (tenant, start_ts);
CREATE INDEX recordings_agent ON recordings (tenant, agent, start_ts);
CREATE TABLE voicemail (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    mailbox TEXT NOT NULL,
    caller_number TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL,
    duration_s REAL NOT NULL DEFAULT 0,
    path TEXT NOT NULL,
    heard INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX voicemail_mailbox ON voicemail (tenant, mailbox, ts);
CREATE TABLE callbacks (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    call_id TEXT NOT NULL DEFAULT '',
    caller_number TEXT NOT NULL,
    queue TEXT NOT NULL DEFAULT '',
    requested_ts REAL NOT NULL,
    scheduled_ts REAL,
    assigned_agent TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'open',
    attempts INTEGER NOT NULL DEFAULT 0,
    completed_ts REAL,
    result_call_id TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT ''
);
CREATE INDEX callbacks_state ON callbacks (tenant, state, scheduled_ts);
CREATE TABLE surveys (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    ts REAL NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    queue TEXT NOT NULL DEFAULT '',
    question TEXT NOT NULL DEFAULT '',
    score INTEGER NOT NULL
);
CREATE INDEX surveys_ts ON surveys (tenant, ts);
CREATE INDEX surveys_agent ON surveys (tenant, agent, ts);
"""),
    (4, "call control events (hold, transfers, consult, conference, dial)", """
CREATE TABLE call_events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    call_id TEXT NOT NULL,
    event TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    party TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX call_events_call ON call_events (call_id, ts);
CREATE INDEX call_events_ts ON call_events (tenant, ts);
CREATE INDEX call_events_agent ON call_events (tenant, agent, ts);
"""),
    (5, "screening list changes (engine/screening.py replays them)", """
CREATE TABLE screening_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    list TEXT NOT NULL,
    number TEXT NOT NULL,
    action TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX screening_log_list ON screening_log (tenant, list, id);
"""),
    (6, "reporting indexes", """
CREATE INDEX cdr_grp ON cdr (tenant, grp, start_ts);
CREATE INDEX cdr_trunk ON cdr (tenant, trunk, start_ts);
CREATE INDEX cdr_callback_of ON cdr (callback_of) WHERE callback_of != '';
CREATE INDEX agent_state_log_tenant_ts ON agent_state_log (tenant, ts);
CREATE INDEX queue_log_event ON queue_log (tenant, event, ts);
CREATE INDEX callbacks_agent ON callbacks (tenant, assigned_agent, state);
CREATE INDEX recordings_grp ON recordings (tenant, grp, start_ts);
"""),
    (7, "outbound campaigns: definitions, records, attempt log, do-not-call list", """
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    name TEXT NOT NULL,
    ts REAL NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'runtime',
    user TEXT NOT NULL DEFAULT '',
    definition TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX campaigns_name ON campaigns (tenant, name, id);
CREATE TABLE campaign_records (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    campaign TEXT NOT NULL,
    record_id TEXT NOT NULL,
    number TEXT NOT NULL,
    time_zone TEXT NOT NULL DEFAULT '',
    fields TEXT NOT NULL DEFAULT '{}',
    import_ts REAL NOT NULL,
    batch TEXT NOT NULL DEFAULT ''
);
CREATE INDEX campaign_records_campaign ON campaign_records (tenant, campaign, id);
CREATE TABLE campaign_log (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    campaign TEXT NOT NULL,
    record_id TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    call_id TEXT NOT NULL DEFAULT '',
    number TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '',
    amd TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT '',
    next_ts REAL,
    wait_s REAL,
    talk_s REAL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX campaign_log_campaign ON campaign_log (tenant, campaign, id);
CREATE INDEX campaign_log_ts ON campaign_log (tenant, campaign, ts);
CREATE INDEX campaign_log_call ON campaign_log (call_id);
CREATE TABLE dnc (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    number TEXT NOT NULL,
    ts REAL NOT NULL,
    action TEXT NOT NULL DEFAULT 'add',
    campaign TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX dnc_number ON dnc (tenant, number, id);
"""),
    (8, "call journal: calls in progress, for crash recovery (engine/recovery.py)", """
CREATE TABLE call_journal (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    direction TEXT NOT NULL DEFAULT 'inbound',
    caller_number TEXT NOT NULL DEFAULT '',
    dialed_number TEXT NOT NULL DEFAULT '',
    trunk TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL DEFAULT '',
    queue TEXT NOT NULL DEFAULT '',
    start_ts REAL NOT NULL
);
CREATE INDEX call_journal_call ON call_journal (call_id);
"""),
    (9, "kpi buckets: sealed 30-minute UTC KPI tallies (engine/kpi_buckets.py)", """
CREATE TABLE kpi_bucket (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    dimension TEXT NOT NULL,
    key TEXT NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    offered INTEGER NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0,
    answered_within_threshold INTEGER NOT NULL DEFAULT 0,
    abandoned INTEGER NOT NULL DEFAULT 0,
    short_abandoned INTEGER NOT NULL DEFAULT 0,
    abandon_wait_s REAL NOT NULL DEFAULT 0,
    answer_wait_s REAL NOT NULL DEFAULT 0,
    longest_wait_s REAL NOT NULL DEFAULT 0,
    talk_s REAL NOT NULL DEFAULT 0,
    hold_s REAL NOT NULL DEFAULT 0,
    wrapup_s REAL NOT NULL DEFAULT 0,
    transferred INTEGER NOT NULL DEFAULT 0,
    blocked INTEGER NOT NULL DEFAULT 0,
    voicemails INTEGER NOT NULL DEFAULT 0,
    ring_no_answer INTEGER NOT NULL DEFAULT 0,
    with_caller_number INTEGER NOT NULL DEFAULT 0,
    repeat_calls INTEGER NOT NULL DEFAULT 0,
    survey_count INTEGER NOT NULL DEFAULT 0,
    survey_score_sum REAL NOT NULL DEFAULT 0,
    state_not_ready_s REAL NOT NULL DEFAULT 0,
    state_ready_s REAL NOT NULL DEFAULT 0,
    state_reserved_s REAL NOT NULL DEFAULT 0,
    state_busy_s REAL NOT NULL DEFAULT 0,
    state_wrapup_s REAL NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX kpi_bucket_key ON kpi_bucket (dimension, bucket_start, tenant, key);
CREATE TABLE kpi_dirty (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    bucket_start INTEGER NOT NULL
);
CREATE UNIQUE INDEX kpi_dirty_bucket ON kpi_dirty (tenant, bucket_start);
CREATE TABLE kpi_seal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tenant TEXT NOT NULL DEFAULT '*',
    sealed_from REAL NOT NULL,
    sealed_until REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    cdr_id INTEGER NOT NULL,
    agent_state_log_id INTEGER NOT NULL,
    queue_log_id INTEGER NOT NULL,
    updated_ts REAL NOT NULL
);
"""),
    (10, "longest staffed agent span by index seek (engine/kpi_sql.py span look-ahead)", """
CREATE INDEX agent_state_log_staffed_duration ON agent_state_log (duration_s)
    WHERE previous_state IN ('not_ready', 'ready', 'reserved', 'busy', 'wrapup')
"""),
]

LATEST_VERSION = MIGRATIONS[-1][0]
FLUSH_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One state-changing control op (or login attempt): who, what, when, from where."""

    ts: float
    user: str
    role: str
    tenant: str
    op: str
    args: str
    result: str
    peer: str


class Store(Protocol):
    """What the engine needs from persistence (SQLite now, PostgreSQL later)."""

    def append(self, table: str, row: dict[str, Any]) -> None: ...
    def audit(self, entry: AuditEntry) -> None: ...
    def flush(self, timeout: float | None = None) -> None: ...
    async def aflush(self) -> None: ...
    def select(self, table: str, where: dict[str, Any] | None = None, *, order_by: str = "id",
               descending: bool = False, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]: ...
    async def aselect(self, table: str, where: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]: ...
    def count(self, table: str) -> int: ...
    def schema_version(self) -> int: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


_FLUSH = object()
_STOP = object()


class SqliteStore:
    """:class:`Store` on one SQLite file in WAL mode, writes batched on a thread."""

    def __init__(self, path: str, *, batch_max_rows: int = 500, batch_interval_ms: int = 200,
                 queue_max_rows: int = 20000) -> None:
        """Open (creating and migrating) the database at ``path``.

        Raises :class:`StoreError` when the file is not a usable database or
        its schema is newer than this code.
        """
        self.path = path
        self.batch_max_rows = batch_max_rows
        self.batch_interval_s = batch_interval_ms / 1000.0
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._wconn = self._connect()
            migrate(self._wconn)
            self._rconn = self._connect()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None
        self._columns: dict[str, tuple[str, ...]] = {}
        for (name,) in self._wconn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cols = tuple(r[1] for r in self._wconn.execute(f"PRAGMA table_info({name})"))
            self._columns[name] = cols
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max_rows)
        self._rlock = threading.Lock()
        self.rows_written = 0
        self.batches_written = 0
        self.write_errors = 0
        self.last_error = ""
        self._closed = False
        self._writer = threading.Thread(target=self._run_writer, name="store-writer", daemon=True)
        self._writer.start()

    @classmethod
    def from_config(cls, section: StoreSection, path: str) -> "SqliteStore":
        return cls(path, batch_max_rows=section.batch_max_rows, batch_interval_ms=section.batch_interval_ms,
                   queue_max_rows=section.queue_max_rows)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    # ------------------------------------------------------------ writes

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Queue ``row`` for a batched insert into ``table``.

        Raises ``ValueError`` at once for an unknown table or column (a bug in
        the caller, not a disk problem) and ``StoreError`` after ``close()``.
        Dict and list values are stored as JSON text.  Blocks only when the
        queue is full (the writer is behind): back pressure, not loss.
        """
        if self._closed:
            raise StoreError("store is closed")
        cols = self._columns.get(table)
        if cols is None or table == "schema_version":
            raise ValueError(f"unknown table {table!r}")
        unknown = [k for k in row if k not in cols]
        if unknown:
            raise ValueError(f"table {table!r} has no column(s) {', '.join(unknown)}")
        clean = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
        item = (table, clean)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            logger.warning("store writer is behind (%d rows queued); caller waits", self._queue.qsize())
            self._queue.put(item)

    def audit(self, entry: AuditEntry) -> None:
        """Queue one audit row."""
        self.append("audit_log", {"ts": entry.ts, "user": entry.user, "role": entry.role,
                                  "tenant": entry.tenant, "op": entry.op, "args": entry.args,
                                  "result": entry.result, "peer": entry.peer})

    def flush(self, timeout: float | None = None) -> None:
        """Block until every row appended before this call is committed."""
        if self._closed:
            return
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        if not done.wait(timeout):
            raise StoreError(f"store flush did not finish within {timeout} s")

    async def aflush(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """:meth:`flush` without blocking the event loop; ``StoreError`` after ``timeout``."""
        await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def _run_writer(self) -> None:
        pending: list[tuple[str, dict[str, Any]]] = []
        waiters: list[threading.Event] = []
        stop = False
        while not stop:
            deadline = time.monotonic() + self.batch_interval_s
            while len(pending) < self.batch_max_rows:
                timeout = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(timeout, 0)) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                if item[0] is _FLUSH:
                    waiters.append(item[1])
                    break
                pending.append(item)
            if pending:
                try:
                    self._write_batch(pending)
                except Exception as exc:  # a bug must not kill the writer and hang every flush
                    self.write_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    logger.exception("store writer failed on a batch of %d rows", len(pending))
                pending = []
            for w in waiters:
                w.set()
            waiters = []

    def _write_batch(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            self._wconn.execute("BEGIN IMMEDIATE")
            for table, row in rows:
                cols = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                self._wconn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))
            self._wconn.execute("COMMIT")
            self.rows_written += len(rows)
            self.batches_written += 1
        except sqlite3.Error as exc:
            self._wconn.execute("ROLLBACK") if self._wconn.in_transaction else None
            # One bad row must not lose its batch: retry row by row.
            self.write_errors += 1
            self.last_error = str(exc)
            logger.error("store batch of %d rows failed (%s); retrying row by row", len(rows), exc)
            for table, row in rows:
                try:
                    cols = ", ".join(row)
                    marks = ", ".join("?" for _ in row)
                    self._wconn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))
                    self.rows_written += 1
                except sqlite3.Error as row_exc:
                    logger.error("store dropped a %s row: %s: %r", table, row_exc, row)

    # ------------------------------------------------------------ reads

    def select(self, table: str, where: dict[str, Any] | None = None, *, order_by: str = "id",
               descending: bool = False, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        """Rows of ``table`` whose columns equal ``where``'s values, as dicts."""
        cols = self._columns.get(table)
        if cols is None:
            raise ValueError(f"unknown table {table!r}")
        where = where or {}
        for k in list(where) + [order_by]:
            if k not in cols:
                raise ValueError(f"table {table!r} has no column {k!r}")
        clause = " AND ".join(f"{k} = ?" for k in where)
        sql = (f"SELECT * FROM {table}" + (f" WHERE {clause}" if clause else "")
               + f" ORDER BY {order_by} {'DESC' if descending else 'ASC'} LIMIT ? OFFSET ?")
        with self._rlock:
            cur = self._rconn.execute(sql, (*where.values(), int(limit), int(offset)))
            return [dict(r) for r in cur.fetchall()]

    async def aselect(self, table: str, where: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        """:meth:`select` in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.select(table, where, **kw))

    def count(self, table: str) -> int:
        if table not in self._columns:
            raise ValueError(f"unknown table {table!r}")
        with self._rlock:
            return int(self._rconn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def schema_version(self) -> int:
        with self._rlock:
            return current_version(self._rconn)

    def status(self) -> dict[str, Any]:
        """For ``engine.status``: backend, path, schema, backlog, counters."""
        return {"backend": "sqlite", "path": self.path, "schema_version": self.schema_version(),
                "queued_rows": self._queue.qsize(), "rows_written": self.rows_written,
                "batches_written": self.batches_written, "write_errors": self.write_errors,
                "last_error": self.last_error, "open": not self._closed}

    def close(self) -> None:
        """Flush every queued row, stop the writer, close the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        try:
            self._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # a reader holding the WAL is not fatal
            logger.warning("store checkpoint on close failed: %s", exc)
        self._wconn.close()
        self._rconn.close()


# ---------------------------------------------------------------- migrations


def current_version(conn: sqlite3.Connection) -> int:
    """Highest applied schema version (0 for an empty database)."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    v = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    return int(v or 0)


def migrate(conn: sqlite3.Connection, target: int | None = None,
            migrations: Sequence[tuple[int, str, str]] = MIGRATIONS) -> list[int]:
    """Apply missing migrations up to ``target`` (default: latest); returns the versions applied.

    Each step runs in its own transaction with its ``schema_version`` row,
    so a failure leaves the database at the previous version.  Raises
    :class:`StoreError` when the database is newer than ``migrations``.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                 "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ts REAL NOT NULL)")
    have = current_version(conn)
    latest = migrations[-1][0]
    target = latest if target is None else target
    if have > latest:
        raise StoreError(f"database schema version {have} is newer than this engine's {latest}; "
                         "upgrade the engine or restore a matching backup")
    applied = []
    for version, description, sql in migrations:
        if version <= have or version > target:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, description, applied_ts) VALUES (?, ?, ?)",
                         (version, description, time.time()))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"migration {version} ({description}) failed: {exc}") from None
        logger.info("store schema migrated to version %d (%s)", version, description)
        applied.append(version)
    return applied


def _statements(sql: str) -> Iterable[str]:
    # The scripts hold no ';' inside literals, so splitting is exact.
    for part in sql.split(";"):
        if part.strip():
            yield part.strip()


def open_store(section: StoreSection, path: str) -> Store:
    """The store named by the config's ``[store]`` section (``path`` already resolved)."""
    if section.backend != "sqlite":  # pragma: no cover - the schema allows only sqlite today
        raise StoreError(f"unsupported store backend {section.backend!r}")
    return SqliteStore.from_config(section, path)


def open_query_only(db_path: str, table: str) -> sqlite3.Connection:
    """A query-only reader of an existing store file that has ``table`` (``StoreError`` otherwise).

    For reports, queries and exports beside the running engine (WAL:
    readers never block its writer): rows as :class:`sqlite3.Row`, usable
    from a worker thread, temporary B-trees in memory and a 64 MiB page
    cache (reports sort and group hundreds of thousands of rows).
    """
    if not db_path or db_path == ":memory:" or not os.path.isfile(db_path):
        raise StoreError(f"{db_path or '(none)'}: no store database there")
    conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{db_path}: cannot read the database: {exc}") from None
    if found is None:
        conn.close()
        raise StoreError(f"{db_path}: has no {table} table (not a ctiengine store?)")
    return conn


__all__ = ["AuditEntry", "LATEST_VERSION", "MIGRATIONS", "SqliteStore", "Store", "current_version",
           "migrate", "open_store", "DEFAULT_TENANT"]
