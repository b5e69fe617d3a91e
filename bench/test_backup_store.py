"""Backup benchmarks, each beside a baseline from the same run.

* ``create_backup`` of a store with 100,000 CDRs (directory form: online
  backup API copy, integrity check, counts, SHA-256, manifest, fsync) against
  the least any backup must do: ``shutil.copyfile`` of the database file plus
  its SHA-256 (which is not even consistent while the engine writes).
* The ``.tar.gz`` form of the same backup against the directory form.
"""
from __future__ import annotations

import itertools
import pathlib
import shutil
import sqlite3

import pytest

from engine.backup import create_backup, sha256_file
from engine.store import SqliteStore

CALLS = 100_000
_counter = itertools.count()


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    db = tmp_path_factory.mktemp("bkbench") / "store.db"
    SqliteStore(str(db)).close()
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO cdr (call_id, tenant, caller_number, dialed_number, queue, agent, start_ts, "
                     "talk_s, disposition, data) VALUES (?, ?, '+4930555100', '+4930555200', 'sales', '1001', "
                     "?, 62.5, 'answered', '{\"order\": \"A-1\"}')",
                     ((f"call-{i}", "acme" if i % 3 else "default", 1795430600.0 + i) for i in range(CALLS)))
    conn.execute("COMMIT")
    conn.close()
    return db


@pytest.mark.benchmark(group="backup-100k-cdr")
def test_bench_backup_directory(benchmark, big_store: pathlib.Path, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        create_backup(str(big_store), str(tmp_path / f"b{next(_counter)}"), recordings_dir=str(tmp_path / "rec"))
    benchmark.pedantic(run, rounds=5, iterations=1)


@pytest.mark.benchmark(group="backup-100k-cdr")
def test_bench_backup_baseline_copyfile_sha256(benchmark, big_store: pathlib.Path, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        target = tmp_path / f"c{next(_counter)}.db"
        shutil.copyfile(big_store, target)
        sha256_file(str(target))
    benchmark.pedantic(run, rounds=5, iterations=1)


@pytest.mark.benchmark(group="backup-100k-cdr")
def test_bench_backup_targz(benchmark, big_store: pathlib.Path, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        create_backup(str(big_store), str(tmp_path / f"b{next(_counter)}.tar.gz"),
                      recordings_dir=str(tmp_path / "rec"))
    benchmark.pedantic(run, rounds=3, iterations=1)
