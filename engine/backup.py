"""Online backup and restore of the store, with the recordings manifest.

Theory of operation
-------------------
**Backup** copies the SQLite database with SQLite's online backup API
(``sqlite3.Connection.backup``) in one step: the copy is taken inside one
read transaction of a separate connection, so in WAL mode it is a consistent
snapshot of the last committed state while the engine keeps writing (WAL
readers never block the writer, https://sqlite.org/wal.html §2.2).  The
copy is switched to ``journal_mode=DELETE`` (a single self-contained file),
checked with ``PRAGMA quick_check`` (``integrity_check`` on request) and
described by ``MANIFEST.json``:

* engine version, schema version, creation time, row counts per table and
  per tenant;
* the *recordings manifest*: every ``recordings`` and ``voicemail`` row of
  the snapshot with its file's path, size and SHA-256 and whether the file
  exists (a missing file is flagged, not fatal);
* ``files``: size and SHA-256 of every file in the backup (``store.db`` and,
  with ``with_recordings``, the copied media under ``recordings/``).

A backup is a directory, or a ``.tar.gz``/``.tgz`` of that directory.  Both
are first written beside their destination (``NAME.part``), fsynced, then
renamed, so a crash never leaves a half backup under the final name.

**Restore** verifies before it touches anything: every checksum of
``files``, the manifest format, and the schema version (a backup from a
*newer* schema is refused; an older one is upgraded with
:func:`engine.store.migrate`, the same steps the engine runs on open).  The
target store must not be in use (probed with an exclusive SQLite lock, which
any open connection of a running engine prevents) and must not exist unless
``force``.  The database is written beside the target, migrated, checked,
fsynced, stale ``-wal``/``-shm`` files of the old store are removed, and it
is renamed over the target (atomic on POSIX); recordings are restored the
same way file by file.

Functions here are synchronous and blocking (disk I/O): the CLI calls them
directly, a control op would run them in a worker thread.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from engine import __version__
from engine.errors import BackupError, StoreError
from engine.store import LATEST_VERSION, current_version, migrate

logger = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
DB_NAME = "store.db"
RECORDINGS_DIR = "recordings"
BACKUP_FORMAT = "ctiengine-backup"
BACKUP_FORMAT_VERSION = 1
MEDIA_TABLES = ("recordings", "voicemail")
_CHUNK = 1 << 20
_TAR_SUFFIXES = (".tar.gz", ".tgz")


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What :func:`create_backup` wrote."""

    path: str
    manifest: dict[str, Any]

    @property
    def missing_files(self) -> list[dict[str, Any]]:
        return [r for r in self.manifest["recordings"] if not r["exists"]]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What :func:`restore_backup` did."""

    db_path: str
    schema_version_backup: int
    migrated_to: list[int]
    recordings_restored: int
    recordings_unchanged: int
    replaced_existing: bool
    manifest: dict[str, Any] = field(repr=False)


# ---------------------------------------------------------------- helpers


def sha256_file(path: str) -> tuple[int, str]:
    """``(size, hex sha256)`` of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        _fsync_file(path)


def _fsync_tree(root: str) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_file(os.path.join(dirpath, name))
        _fsync_dir(dirpath)


def is_archive(path: str) -> bool:
    return path.endswith(_TAR_SUFFIXES)


def store_in_use(db_path: str) -> bool:
    """True when another connection (a running engine) has ``db_path`` open.

    Takes SQLite's own exclusive lock with no wait: in WAL mode every open
    connection holds a shared lock that makes this fail at once, in this
    process or another.  A missing file is not in use.
    """
    if not os.path.exists(db_path):
        return False
    try:
        conn = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    except sqlite3.Error:
        return True
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise BackupError(f"{db_path}: cannot probe the database: {exc}") from None
    except sqlite3.DatabaseError:  # not a database at all: nothing can have it open as one
        return False
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def table_counts(conn: sqlite3.Connection) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Rows per table, and rows per tenant per table (tables with a ``tenant`` column)."""
    rows: dict[str, int] = {}
    tenants: dict[str, dict[str, int]] = {}
    for table in _tables(conn):
        rows[table] = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        if "tenant" in _columns(conn, table):
            for tenant, n in conn.execute(f"SELECT tenant, COUNT(*) FROM {table} GROUP BY tenant ORDER BY tenant"):
                tenants.setdefault(tenant, {})[table] = int(n)
    return rows, tenants


def _integrity(conn: sqlite3.Connection, what: str, *, full: bool = True) -> None:
    # quick_check verifies the b-trees and records but not that every index
    # matches its table; about ten times faster (docs/performance/backup.md).
    result = [r[0] for r in conn.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check")]
    if result != ["ok"]:
        raise BackupError(f"{what}: integrity check failed: {'; '.join(result[:5])}")


def _media_relpath(path: str, recordings_dir: str) -> str | None:
    """Path of a media file relative to the recordings directory, or None when outside it."""
    absolute = path if os.path.isabs(path) else os.path.join(recordings_dir, path)
    rel = os.path.relpath(os.path.normpath(absolute), os.path.normpath(recordings_dir))
    if rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):
        return None
    return rel.replace(os.sep, "/")


def _resolve_media(path: str, recordings_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.join(recordings_dir, path)


# ---------------------------------------------------------------- backup


def create_backup(db_path: str, dest: str, *, recordings_dir: str, with_recordings: bool = False,
                  full_check: bool = False, now: float | None = None) -> BackupResult:
    """Write a backup of the store at ``db_path`` to ``dest`` (directory or ``.tar.gz``).

    Safe while the engine runs.  ``recordings_dir`` resolves relative media
    paths of ``recordings``/``voicemail`` rows; with ``with_recordings`` the
    files that exist inside it are copied under ``recordings/``.  Raises
    :class:`BackupError` when the store is missing or unreadable, or ``dest``
    already exists (never overwritten).  The copy is checked with
    ``PRAGMA quick_check``, or the full ``integrity_check`` with ``full_check``.
    """
    now = time.time() if now is None else now
    if not os.path.isfile(db_path):
        raise BackupError(f"{db_path}: no store database there")
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and not (os.path.isdir(dest) and not os.listdir(dest)):
        raise BackupError(f"{dest}: already exists; choose a new name (a backup never overwrites)")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".ctiengine-backup-", dir=parent)
    try:
        manifest = _write_backup_dir(db_path, work, recordings_dir=recordings_dir,
                                     with_recordings=with_recordings, full_check=full_check, now=now)
        if is_archive(dest):
            part = dest + ".part"
            with tarfile.open(part, "w:gz", compresslevel=6) as tar:  # gzip's default; 9 is ~2x slower
                for name in sorted(os.listdir(work)):
                    tar.add(os.path.join(work, name), arcname=name)
            _fsync_file(part)
            os.replace(part, dest)
        else:
            _fsync_tree(work)
            if os.path.isdir(dest):
                os.rmdir(dest)  # empty (checked above)
            os.replace(work, dest)
        _fsync_dir(parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if is_archive(dest):  # left only by a failure
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest + ".part")
    logger.info("backup of %s written to %s: schema %d, %d recording file(s), %d missing",
                db_path, dest, manifest["schema_version"], len(manifest["recordings"]),
                sum(1 for r in manifest["recordings"] if not r["exists"]))
    return BackupResult(dest, manifest)


def _snapshot_db(db_path: str, target: str, full_check: bool) -> None:
    """Consistent copy of ``db_path`` into ``target`` with the online backup API."""
    try:
        # Not mode=ro: a read-only connection cannot create the -shm file a
        # WAL database needs when no engine has it open.
        src = sqlite3.connect(db_path, timeout=30)
        src.execute("PRAGMA query_only=ON")
    except sqlite3.Error as exc:
        raise BackupError(f"{db_path}: cannot open the store: {exc}") from None
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        # The new file is fsynced as a whole once the backup is complete
        # (before its rename), so no journal or per-step sync is needed here.
        dst.execute("PRAGMA synchronous=OFF")
        dst.execute("PRAGMA journal_mode=OFF")
        # pages=-1: the whole database in one step, i.e. inside one read
        # transaction of the source: a snapshot of one committed state.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")
        _integrity(dst, f"backup copy of {db_path}", full=full_check)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # (a scrambled schema page: undecodable SQL text)
        raise BackupError(f"{db_path}: backup failed: {exc}") from None
    finally:
        dst.close()
        src.close()


def _write_backup_dir(db_path: str, work: str, *, recordings_dir: str, with_recordings: bool,
                      full_check: bool, now: float) -> dict[str, Any]:
    db_copy = os.path.join(work, DB_NAME)
    _snapshot_db(db_path, db_copy, full_check)
    conn = sqlite3.connect(db_copy)
    try:
        schema = current_version(conn)
        rows, tenants = table_counts(conn)
        media_rows: list[tuple[str, int, str, str, str]] = []
        for table in MEDIA_TABLES:
            if table in rows:
                media_rows += [(table, *r) for r in conn.execute(
                    f"SELECT id, tenant, call_id, path FROM {table} ORDER BY id")]
    finally:
        conn.close()
    files: dict[str, dict[str, Any]] = {}
    size, digest = sha256_file(db_copy)
    files[DB_NAME] = {"bytes": size, "sha256": digest}
    recordings: list[dict[str, Any]] = []
    for table, row_id, tenant, call_id, path in media_rows:
        absolute = _resolve_media(path, recordings_dir)
        rel = _media_relpath(path, recordings_dir)
        entry: dict[str, Any] = {"table": table, "id": row_id, "tenant": tenant, "call_id": call_id,
                                 "path": path, "exists": os.path.isfile(absolute), "bytes": None,
                                 "sha256": None, "stored_as": None}
        if entry["exists"]:
            try:
                entry["bytes"], entry["sha256"] = sha256_file(absolute)
            except OSError as exc:
                entry["exists"] = False
                entry["error"] = str(exc)
        if entry["exists"] and with_recordings:
            if rel is None:
                entry["note"] = "outside the recordings directory: not copied"
            else:
                stored = f"{RECORDINGS_DIR}/{rel}"
                target = os.path.join(work, *stored.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(absolute, target)
                size, digest = sha256_file(target)
                if digest != entry["sha256"]:  # changed while we copied: record what we have
                    entry["note"] = "file changed during the backup"
                files[stored] = {"bytes": size, "sha256": digest}
                entry["stored_as"] = stored
        recordings.append(entry)
    manifest = {
        "format": BACKUP_FORMAT, "format_version": BACKUP_FORMAT_VERSION,
        "engine_version": __version__, "schema_version": schema,
        "created_ts": now,
        "created": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "source": os.path.abspath(db_path), "recordings_dir": os.path.abspath(recordings_dir),
        "with_recordings": with_recordings, "check": "integrity_check" if full_check else "quick_check",
        "tables": rows, "tenants": tenants,
        "missing_recordings": sum(1 for r in recordings if not r["exists"]),
        "files": files, "recordings": recordings,
    }
    with open(os.path.join(work, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return manifest


# ---------------------------------------------------------------- verify


@contextlib.contextmanager
def open_backup(src: str) -> Iterator[str]:
    """The backup at ``src`` as a directory (a ``.tar.gz`` is unpacked to a temporary one)."""
    if os.path.isdir(src):
        yield src
        return
    if not os.path.isfile(src):
        raise BackupError(f"{src}: no backup there")
    tmp = tempfile.mkdtemp(prefix=".ctiengine-restore-")
    try:
        try:
            with tarfile.open(src, "r:*") as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths, '..', devices
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{src}: not a readable backup archive: {exc}") from None
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(backup_dir: str) -> dict[str, Any]:
    path = os.path.join(backup_dir, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise BackupError(f"{backup_dir}: no {MANIFEST_NAME}: not a ctiengine backup") from None
    except ValueError as exc:
        raise BackupError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{path}: not a ctiengine backup manifest")
    if manifest.get("format_version") != BACKUP_FORMAT_VERSION:
        raise BackupError(f"{path}: backup format version {manifest.get('format_version')!r} is not supported "
                          f"(this engine reads {BACKUP_FORMAT_VERSION})")
    for key, kind in (("schema_version", int), ("files", dict), ("recordings", list)):
        if not isinstance(manifest.get(key), kind):
            raise BackupError(f"{path}: {key!r} missing or of the wrong type")
    return manifest


def verify_backup_dir(backup_dir: str) -> dict[str, Any]:
    """Check the manifest and every file's size and SHA-256; returns the manifest.

    Raises :class:`BackupError` naming every file that is missing or differs,
    or a schema newer than this engine's.
    """
    manifest = read_manifest(backup_dir)
    if DB_NAME not in manifest["files"]:
        raise BackupError(f"{backup_dir}: the manifest lists no {DB_NAME}")
    problems = []
    for name, meta in sorted(manifest["files"].items()):
        path = os.path.join(backup_dir, *name.split("/"))
        if name.startswith("/") or ".." in name.split("/"):
            problems.append(f"{name}: unsafe path")
            continue
        if not os.path.isfile(path):
            problems.append(f"{name}: missing")
            continue
        size, digest = sha256_file(path)
        if digest != meta.get("sha256") or size != meta.get("bytes"):
            problems.append(f"{name}: checksum mismatch (expected sha256 {meta.get('sha256')}, {meta.get('bytes')} "
                            f"bytes; found {digest}, {size} bytes)")
    if problems:
        raise BackupError(f"{backup_dir}: backup is damaged: " + "; ".join(problems))
    schema = manifest["schema_version"]
    if schema > LATEST_VERSION:
        raise BackupError(f"backup schema version {schema} is newer than this engine's {LATEST_VERSION} "
                          f"(written by engine {manifest.get('engine_version', '?')}); "
                          "restore it with that engine version or newer")
    conn = sqlite3.connect(f"file:{os.path.join(backup_dir, DB_NAME)}?mode=ro", uri=True)
    try:
        actual = current_version(conn)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{backup_dir}/{DB_NAME}: not a database: {exc}") from None
    finally:
        conn.close()
    if actual != schema:
        raise BackupError(f"{backup_dir}: manifest says schema version {schema} but {DB_NAME} is at {actual}")
    return manifest


def verify_backup(src: str) -> dict[str, Any]:
    """:func:`verify_backup_dir` on a backup directory or archive."""
    with open_backup(src) as d:
        return verify_backup_dir(d)


# ---------------------------------------------------------------- restore


def restore_backup(src: str, db_path: str, *, recordings_dir: str, force: bool = False) -> RestoreResult:
    """Restore the backup at ``src`` into the store at ``db_path`` (and its recordings).

    Refuses (:class:`BackupError`, nothing changed) a damaged backup, a newer
    schema, a store in use, and without ``force`` an existing store or a
    recording file that exists with different content.
    """
    db_path = os.path.abspath(db_path)
    with open_backup(src) as d:
        manifest = verify_backup_dir(d)
        if store_in_use(db_path):
            raise BackupError(f"{db_path}: the store is in use (is the engine running?); stop the engine first")
        existed = os.path.exists(db_path)
        if existed and not force:
            raise BackupError(f"{db_path}: a store exists already; use --force to replace it")
        media = _plan_recordings(d, manifest, recordings_dir, force)
        os.makedirs(os.path.dirname(db_path), exist_ok=True)
        tmp = f"{db_path}.restore-{os.getpid()}"
        try:
            shutil.copyfile(os.path.join(d, DB_NAME), tmp)
            migrated = _migrate_copy(tmp)
            _fsync_file(tmp)
            # A stale WAL of the replaced store would be replayed into the new
            # file on the next open: remove it before the rename.
            for suffix in ("-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(db_path + suffix)
            os.replace(tmp, db_path)
            _fsync_dir(os.path.dirname(db_path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        restored = unchanged = 0
        for source, target, same in media:
            if same:
                unchanged += 1
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            part = f"{target}.restore-{os.getpid()}"
            shutil.copyfile(source, part)
            _fsync_file(part)
            os.replace(part, target)
            _fsync_dir(os.path.dirname(target))
            restored += 1
    logger.info("restored %s into %s (schema %d, migrated %s), %d recording file(s) written, %d unchanged",
                src, db_path, manifest["schema_version"], migrated or "none", restored, unchanged)
    return RestoreResult(db_path, manifest["schema_version"], migrated, restored, unchanged, existed, manifest)


def _plan_recordings(backup_dir: str, manifest: dict[str, Any], recordings_dir: str,
                     force: bool) -> list[tuple[str, str, bool]]:
    """``(source, target, already identical)`` for every recording in the backup; refuses conflicts."""
    plan = []
    conflicts = []
    for entry in manifest["recordings"]:
        stored = entry.get("stored_as")
        if not stored:
            continue
        parts = stored.split("/")
        if stored not in manifest["files"] or parts[0] != RECORDINGS_DIR or ".." in parts or "" in parts:
            raise BackupError(f"recording entry {entry.get('id')}: stored_as {stored!r} is not a verified file "
                              "of this backup")
        rel = stored[len(RECORDINGS_DIR) + 1:]
        target = os.path.join(recordings_dir, *rel.split("/"))
        source = os.path.join(backup_dir, *stored.split("/"))
        same = False
        if os.path.exists(target):
            same = sha256_file(target)[1] == manifest["files"][stored]["sha256"]
            if not same and not force:
                conflicts.append(target)
        plan.append((source, target, same))
    if conflicts:
        raise BackupError(f"{len(conflicts)} recording file(s) exist with different content "
                          f"(first: {conflicts[0]}); use --force to overwrite them")
    return plan


def _migrate_copy(path: str) -> list[int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        applied = migrate(conn)
        _integrity(conn, path)
    except StoreError as exc:
        raise BackupError(f"restored store cannot be migrated: {exc}") from None
    finally:
        conn.close()
    return applied


__all__ = ["BackupResult", "RestoreResult", "create_backup", "restore_backup", "verify_backup",
           "verify_backup_dir", "store_in_use", "sha256_file", "table_counts", "MANIFEST_NAME", "DB_NAME"]
