"""`engine.backup` and `ctiengine backup|restore` on real SQLite files.

The consistency test writes in transactions with an invariant (one CDR and
exactly three queue-log rows per call, ids without gaps) from a writer
thread while backups run, with the engine's own store open beside it.
"""
from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import tarfile
import threading
from typing import Any

import pytest

from engine.backup import (DB_NAME, MANIFEST_NAME, create_backup, restore_backup, sha256_file,
                           store_in_use, verify_backup)
from engine.errors import BackupError
from engine.store import LATEST_VERSION, MIGRATIONS, AuditEntry, SqliteStore, current_version, migrate

ROOT = pathlib.Path(__file__).resolve().parents[2]


def audit_entry(i: int, tenant: str = "default") -> AuditEntry:
    return AuditEntry(ts=1795430600.0 + i, user=f"u{i % 3}", role="admin", tenant=tenant, op="auth",
                      args="{}", result="ok", peer="127.0.0.1:1")


def seeded_store(tmp: pathlib.Path, rec_dir: pathlib.Path) -> pathlib.Path:
    """A store with audit rows in two tenants, two recordings (one file missing) and a voicemail."""
    db = tmp / "live" / "store.db"
    store = SqliteStore(str(db))
    for i in range(7):
        store.audit(audit_entry(i, "acme" if i % 2 else "default"))
    (rec_dir / "2026-11-23").mkdir(parents=True)
    (rec_dir / "2026-11-23" / "c1.wav").write_bytes(b"RIFF" + bytes(range(256)) * 40)
    (rec_dir / "vm").mkdir()
    (rec_dir / "vm" / "m1.wav").write_bytes(b"RIFF-voicemail" * 10)
    store.append("recordings", {"call_id": "c1", "path": "2026-11-23/c1.wav", "start_ts": 1.0, "tenant": "acme"})
    store.append("recordings", {"call_id": "c2", "path": "2026-11-23/c2.wav", "start_ts": 2.0})
    store.append("voicemail", {"call_id": "c3", "mailbox": "100", "ts": 3.0, "path": str(rec_dir / "vm" / "m1.wav")})
    store.append("cdr", {"call_id": "c1", "start_ts": 1.0, "tenant": "acme", "data": {"k": "v"}})
    store.close()
    return db


def dump(db: pathlib.Path | str) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(str(db))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name != "
                                              "'schema_version' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in tables}
    finally:
        conn.close()


def test_backup_during_concurrent_writes_is_a_consistent_snapshot(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "store.db"
    engine_store = SqliteStore(str(db))  # the engine's connections stay open throughout
    conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # durability is not under test; speed is welcome
    committed = [0]  # set after COMMIT returns: a lower bound of what is committed
    started = [0]  # set before BEGIN: an upper bound
    stop = threading.Event()

    def write_call(n: int) -> None:
        started[0] = n
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO cdr (id, call_id, start_ts, data) VALUES (?, ?, ?, ?)",
                     (n, f"call-{n}", float(n), "x" * 200))
        for event in ("joined", "offered", "answered"):
            conn.execute("INSERT INTO queue_log (ts, call_id, queue, event) VALUES (?, ?, 'sales', ?)",
                         (float(n), f"call-{n}", event))
        conn.execute("COMMIT")
        committed[0] = n

    for n in range(1, 3001):  # some volume so a backup takes a while
        write_call(n)

    def writer() -> None:
        n = committed[0]
        while not stop.is_set() and n < 200000:
            n += 1
            write_call(n)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    seen = []
    try:
        for i in range(6):
            before = committed[0]
            result = create_backup(str(db), str(tmp_path / f"b{i}"), recordings_dir=str(tmp_path / "rec"))
            after = started[0]
            seen.append((before, result, after))
    finally:
        stop.set()
        t.join(10)
        conn.close()
        engine_store.close()
    assert committed[0] > seen[0][0], "the writer made no progress during the backups"
    for before, result, after in seen:
        copy = sqlite3.connect(os.path.join(result.path, DB_NAME))
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # self-contained file
        calls = copy.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM cdr").fetchone()
        events = copy.execute("SELECT COUNT(*) FROM queue_log").fetchone()[0]
        per_call = copy.execute("SELECT COUNT(*) FROM (SELECT call_id FROM queue_log GROUP BY call_id "
                                "HAVING COUNT(*) != 3)").fetchone()[0]
        copy.close()
        n = calls[0]
        # A committed prefix: no gap, no half transaction, at a point between start and end.
        assert (calls[1], calls[2]) == (1, n)
        assert events == 3 * n and per_call == 0
        assert before <= n <= after
        assert result.manifest["tables"]["cdr"] == n and result.manifest["tables"]["queue_log"] == 3 * n
        assert result.manifest["tenants"]["default"]["cdr"] == n


def test_round_trip_directory_and_archive_with_recordings(tmp_path: pathlib.Path) -> None:
    rec = tmp_path / "rec"
    db = seeded_store(tmp_path, rec)
    original = dump(db)
    for name in ("bk", "bk.tar.gz"):
        result = create_backup(str(db), str(tmp_path / name), recordings_dir=str(rec), with_recordings=True,
                               full_check=name == "bk", now=1795430000.0)
        m = result.manifest
        assert m["check"] == ("integrity_check" if name == "bk" else "quick_check")
        assert m["schema_version"] == LATEST_VERSION and m["engine_version"]
        assert m["created"] == "2026-11-23T10:33:20Z"
        assert m["tenants"]["acme"] == {"audit_log": 3, "cdr": 1, "recordings": 1}
        assert set(m["files"]) == {DB_NAME, "recordings/2026-11-23/c1.wav", "recordings/vm/m1.wav"}
        target_db = tmp_path / f"restored-{name}" / "store.db"
        target_rec = tmp_path / f"rec-{name}"
        r = restore_backup(str(tmp_path / name), str(target_db), recordings_dir=str(target_rec))
        assert r.migrated_to == [] and r.recordings_restored == 2 and not r.replaced_existing
        assert dump(target_db) == original
        assert (target_rec / "2026-11-23" / "c1.wav").read_bytes() == (rec / "2026-11-23" / "c1.wav").read_bytes()
        assert (target_rec / "vm" / "m1.wav").read_bytes() == (rec / "vm" / "m1.wav").read_bytes()
        store = SqliteStore(str(target_db))  # the engine opens it
        assert store.count("audit_log") == 7
        store.close()
    with tarfile.open(tmp_path / "bk.tar.gz") as tar:
        assert sorted(tar.getnames())[:2] == [MANIFEST_NAME, "recordings"]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".ctiengine-backup-*"))


def test_recordings_manifest_flags_a_missing_file(tmp_path: pathlib.Path) -> None:
    rec = tmp_path / "rec"
    db = seeded_store(tmp_path, rec)
    result = create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(rec))
    by_call = {e["call_id"]: e for e in result.manifest["recordings"]}
    assert by_call["c2"]["exists"] is False and by_call["c2"]["sha256"] is None
    assert by_call["c1"]["exists"] is True and by_call["c1"]["stored_as"] is None  # not copied by default
    assert (by_call["c1"]["bytes"], by_call["c1"]["sha256"]) == sha256_file(str(rec / "2026-11-23" / "c1.wav"))
    assert by_call["c3"]["table"] == "voicemail" and by_call["c3"]["exists"]
    assert result.manifest["missing_recordings"] == 1
    assert [e["call_id"] for e in result.missing_files] == ["c2"]
    on_disk = json.loads((tmp_path / "bk" / MANIFEST_NAME).read_text())
    assert on_disk == result.manifest
    assert not (tmp_path / "bk" / "recordings").exists()


def test_old_schema_backup_is_migrated_on_restore(tmp_path: pathlib.Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(str(old), isolation_level=None)
    migrate(conn, target=1)
    conn.execute("INSERT INTO audit_log (ts, user, op, result) VALUES (1.0, 'admin', 'auth', 'ok')")
    conn.close()
    result = create_backup(str(old), str(tmp_path / "bk.tgz"), recordings_dir=str(tmp_path / "rec"))
    assert result.manifest["schema_version"] == 1
    target = tmp_path / "new" / "store.db"
    r = restore_backup(str(tmp_path / "bk.tgz"), str(target), recordings_dir=str(tmp_path / "rec2"))
    assert r.schema_version_backup == 1 and r.migrated_to == list(range(2, LATEST_VERSION + 1))
    conn = sqlite3.connect(str(target))
    assert current_version(conn) == LATEST_VERSION
    assert conn.execute("SELECT user, op FROM audit_log").fetchall() == [("admin", "auth")]
    conn.close()


def test_newer_schema_is_refused(tmp_path: pathlib.Path) -> None:
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(str(newer), isolation_level=None)
    future = LATEST_VERSION + 1
    migrate(conn, migrations=[*MIGRATIONS, (future, "from the future", "CREATE TABLE later (x INTEGER)")])
    conn.close()
    create_backup(str(newer), str(tmp_path / "bk"), recordings_dir=str(tmp_path / "rec"))
    target = tmp_path / "t" / "store.db"
    with pytest.raises(BackupError, match=f"backup schema version {future} is newer than this engine's "
                                          f"{LATEST_VERSION}"):
        restore_backup(str(tmp_path / "bk"), str(target), recordings_dir=str(tmp_path / "rec"))
    assert not target.exists() and not target.parent.exists()


def test_checksum_mismatch_is_refused_and_nothing_changes(tmp_path: pathlib.Path) -> None:
    rec = tmp_path / "rec"
    db = seeded_store(tmp_path, rec)
    create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(rec), with_recordings=True)
    target = tmp_path / "t" / "store.db"
    # One flipped byte in the database copy.
    data = bytearray((tmp_path / "bk" / DB_NAME).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "bk" / DB_NAME).write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"store\.db: checksum mismatch"):
        restore_backup(str(tmp_path / "bk"), str(target), recordings_dir=str(tmp_path / "rec2"))
    assert not target.exists() and not (tmp_path / "rec2").exists()
    # A recording file removed from the backup.
    create_backup(str(db), str(tmp_path / "bk2"), recordings_dir=str(rec), with_recordings=True)
    os.unlink(tmp_path / "bk2" / "recordings" / "vm" / "m1.wav")
    with pytest.raises(BackupError, match=r"recordings/vm/m1\.wav: missing"):
        verify_backup(str(tmp_path / "bk2"))
    # A manifest that is not one.
    (tmp_path / "bk3").mkdir()
    (tmp_path / "bk3" / MANIFEST_NAME).write_text("{}")
    with pytest.raises(BackupError, match="not a ctiengine backup manifest"):
        verify_backup(str(tmp_path / "bk3"))
    with pytest.raises(BackupError, match="not a readable backup archive"):
        (tmp_path / "junk.tar.gz").write_bytes(b"not gzip")
        verify_backup(str(tmp_path / "junk.tar.gz"))


def test_existing_store_needs_force_and_a_store_in_use_is_refused(tmp_path: pathlib.Path) -> None:
    rec = tmp_path / "rec"
    db = seeded_store(tmp_path, rec)
    create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(rec), with_recordings=True)
    other = tmp_path / "other" / "store.db"
    s = SqliteStore(str(other))
    s.audit(audit_entry(99))
    s.flush(5)
    assert store_in_use(str(other))
    with pytest.raises(BackupError, match="in use"):
        restore_backup(str(tmp_path / "bk"), str(other), recordings_dir=str(rec), force=True)
    s.close()
    assert not store_in_use(str(other))
    before = other.read_bytes()
    with pytest.raises(BackupError, match="a store exists already; use --force"):
        restore_backup(str(tmp_path / "bk"), str(other), recordings_dir=str(rec))
    assert other.read_bytes() == before
    # A recording that differs from the backup's is not silently overwritten either.
    (rec / "vm" / "m1.wav").write_bytes(b"changed")
    with pytest.raises(BackupError, match="1 recording file"):
        restore_backup(str(tmp_path / "bk"), str(tmp_path / "fresh.db"), recordings_dir=str(rec))
    assert not (tmp_path / "fresh.db").exists()
    # A stale WAL beside the replaced store must not be replayed into the restored one.
    (other.parent / "store.db-wal").write_bytes(b"stale")
    r = restore_backup(str(tmp_path / "bk"), str(other), recordings_dir=str(rec), force=True)
    assert r.replaced_existing and r.recordings_restored == 1 and r.recordings_unchanged == 1
    assert not (other.parent / "store.db-wal").exists()
    assert dump(other) == dump(db)
    assert (rec / "vm" / "m1.wav").read_bytes() == b"RIFF-voicemail" * 10


def test_backup_refuses_an_existing_destination_or_missing_store(tmp_path: pathlib.Path) -> None:
    db = seeded_store(tmp_path, tmp_path / "rec")
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "keep.txt").write_text("x")
    with pytest.raises(BackupError, match="already exists"):
        create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(tmp_path / "rec"))
    assert os.listdir(tmp_path / "bk") == ["keep.txt"]
    with pytest.raises(BackupError, match="no store database"):
        create_backup(str(tmp_path / "nope.db"), str(tmp_path / "bk9"), recordings_dir=str(tmp_path / "rec"))
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    assert create_backup(str(db), str(tmp_path / "empty"), recordings_dir=str(tmp_path / "rec")).manifest


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_cli_backup_and_restore_exit_codes(tmp_path: pathlib.Path) -> None:
    rec = tmp_path / "rec"
    seeded_store(tmp_path, rec)
    config = tmp_path / "engine.toml"
    config.write_text('[store]\npath = "live/store.db"\n[recording]\npath = "rec"\n')
    r = cli("backup", str(config), str(tmp_path / "out.tar.gz"), "--with-recordings", "--full-check")
    assert r.returncode == 0, r.stderr
    assert f"schema {LATEST_VERSION}" in r.stdout and "1 missing" in r.stdout and "2 copied" in r.stdout
    assert "file missing: 2026-11-23/c2.wav" in r.stderr
    r = cli("restore", str(config), str(tmp_path / "out.tar.gz"))
    assert r.returncode == 1 and "use --force" in r.stderr
    r = cli("restore", str(config), str(tmp_path / "out.tar.gz"), "--verify-only")
    assert r.returncode == 0 and "3 file(s) verified" in r.stdout
    r = cli("restore", str(config), str(tmp_path / "out.tar.gz"), "--force")
    assert r.returncode == 0, r.stderr
    assert "2 unchanged" in r.stdout
    new_config = tmp_path / "new" / "engine.toml"
    new_config.parent.mkdir()
    new_config.write_text('[store]\npath = "var/ctiengine.db"\n')
    r = cli("restore", str(new_config), str(tmp_path / "out.tar.gz"))
    assert r.returncode == 0, r.stderr
    assert "2 recording file(s) written" in r.stdout
    assert (tmp_path / "new" / "var" / "recordings" / "vm" / "m1.wav").exists()
    assert dump(tmp_path / "new" / "var" / "ctiengine.db") == dump(tmp_path / "live" / "store.db")
    r = cli("restore", str(new_config), str(tmp_path / "nothing-here"))
    assert r.returncode == 1 and "no backup there" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nbackend = "oracle"\n')
    assert cli("restore", str(bad), str(tmp_path / "out.tar.gz")).returncode == 2


def test_store_open_in_another_process_is_in_use(tmp_path: pathlib.Path) -> None:
    db = seeded_store(tmp_path, tmp_path / "rec")
    create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(tmp_path / "rec"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from engine.store import SqliteStore; s = SqliteStore(sys.argv[1]); "
         "print('open', flush=True); sys.stdin.read(); s.close()", str(db)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert store_in_use(str(db))
        with pytest.raises(BackupError, match="in use"):
            restore_backup(str(tmp_path / "bk"), str(db), recordings_dir=str(tmp_path / "rec"), force=True)
        # Backing up a store another process has open is the normal case.
        assert create_backup(str(db), str(tmp_path / "bk2"), recordings_dir=str(tmp_path / "rec")).manifest
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
    assert not store_in_use(str(db))


def test_docs_cover_every_option() -> None:
    import argparse

    from engine.store_cli import configure

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    configure(sub)
    cli_md = (ROOT / "docs" / "cli.md").read_text()
    backup_md = (ROOT / "docs" / "backup.md").read_text()
    for name, p in sub.choices.items():
        assert f"## `{name}`" in cli_md
        for action in p._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in cli_md, f"{name} {flag} is not documented in docs/cli.md"
    for key in ("format_version", "engine_version", "schema_version", "created_ts", "tables", "tenants",
                "files", "recordings", "missing_recordings", "with_recordings", "stored_as", "check"):
        assert f"`{key}`" in backup_md, f"manifest key {key} is not documented in docs/backup.md"


def test_manifest_cannot_point_outside_the_backup(tmp_path: pathlib.Path) -> None:
    rec = tmp_path / "rec"
    db = seeded_store(tmp_path, rec)
    create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(rec), with_recordings=True)
    manifest_path = tmp_path / "bk" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["recordings"] if e["stored_as"])
    entry["stored_as"] = "recordings/../../../outside.wav"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="is not a verified file of this backup"):
        restore_backup(str(tmp_path / "bk"), str(tmp_path / "t.db"), recordings_dir=str(tmp_path / "r2"))
    assert not (tmp_path / "t.db").exists()
    manifest["files"]["../escape"] = {"bytes": 1, "sha256": "0"}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="unsafe path"):
        verify_backup(str(tmp_path / "bk"))


def test_a_corrupt_store_gives_no_backup(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "store.db"
    store = SqliteStore(str(db))
    for i in range(2000):
        store.audit(audit_entry(i))
    store.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for p in range(3, len(data) // page - 1):  # leave the header page and schema intact, scramble the rest
        data[p * page + 100: p * page + 140] = b"\xff" * 40
    db.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="integrity check failed|backup failed|malformed"):
        create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(tmp_path / "rec"))
    assert not (tmp_path / "bk").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ctiengine")] == []


def test_a_junk_file_at_the_store_path_is_replaced_only_with_force(tmp_path: pathlib.Path) -> None:
    db = seeded_store(tmp_path, tmp_path / "rec")
    create_backup(str(db), str(tmp_path / "bk"), recordings_dir=str(tmp_path / "rec"))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 300)
    assert not store_in_use(str(junk))
    with pytest.raises(BackupError, match="use --force"):
        restore_backup(str(tmp_path / "bk"), str(junk), recordings_dir=str(tmp_path / "r2"))
    restore_backup(str(tmp_path / "bk"), str(junk), recordings_dir=str(tmp_path / "r2"), force=True)
    assert dump(junk) == dump(db)


def test_with_a_running_engine_process(tmp_path: pathlib.Path, sock_dir: str) -> None:
    """`ctiengine run` up: backup and audit work beside it, restore is refused until it stops."""
    import time

    from foundation_helpers import PASSWORDS
    from test_app_cli import ctl, free_tcp_port, start_engine, stop, wait_ready, write_config

    port = free_tcp_port()
    config = write_config(tmp_path, sock_dir, port)
    proc = start_engine(config)
    try:
        wait_ready(proc, port)
        r = ctl("--port", str(port), "--user", "admin", "--password", PASSWORDS["admin"],
                "engine.log_level", "level=INFO")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        while True:  # the audit row is committed by the engine's writer thread within its batch interval
            r = cli("audit", str(config), "--op", "engine.log_level", "--format", "jsonl")
            assert r.returncode == 0, r.stderr
            if r.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert json.loads(r.stdout)["args"] == '{"level": "INFO"}'
        r = cli("backup", str(config), str(tmp_path / "live.tar.gz"))
        assert r.returncode == 0, r.stderr
        with tarfile.open(tmp_path / "live.tar.gz") as tar:
            manifest = json.load(tar.extractfile(MANIFEST_NAME))  # type: ignore[arg-type]
        assert manifest["tables"]["audit_log"] >= 2  # the login and the op
        r = cli("restore", str(config), str(tmp_path / "live.tar.gz"), "--force")
        assert r.returncode == 1 and "in use (is the engine running?)" in r.stderr
    finally:
        code, out = stop(proc)
    assert code == 0, out
    r = cli("restore", str(config), str(tmp_path / "live.tar.gz"), "--force")
    assert r.returncode == 0, r.stderr
