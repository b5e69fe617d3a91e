"""The engine-side CSV lookup helper."""
from __future__ import annotations

import os

from ivr.actions import RequestLookup
from ivr.csvlookup import CsvLookup


def _req(path, column="code", key="1", source="csv") -> RequestLookup:
    return RequestLookup(7, source, str(path), column, key, "default")


def test_found_missing_and_reload(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("code,label\n1,one\n2,two\n1,duplicate\n", encoding="utf-8")
    tables = CsvLookup()
    assert tables.lookup(_req(path)).row == {"code": "1", "label": "one"}   # first row wins
    assert tables.lookup(_req(path, key=" 2 ")).row == {"code": "2", "label": "two"}
    hit = tables.lookup(_req(path, key="3"))
    assert hit.row is None and hit.error is None and hit.request_id == 7
    path.write_text("code,label\n3,three\n", encoding="utf-8")
    os.utime(path, ns=(1, 10**18))                     # a new modification time
    assert tables.lookup(_req(path, key="3")).row == {"code": "3", "label": "three"}


def test_errors_are_answers_not_exceptions(tmp_path):
    tables = CsvLookup()
    assert "cannot read" in tables.lookup(_req(tmp_path / "none.csv")).error
    path = tmp_path / "t.csv"
    path.write_text("code\n1\n")
    assert tables.lookup(_req(path, column="nope")).error == f"{path} has no column 'nope'"
    assert tables.lookup(_req(path, source="store")).error == "CsvLookup cannot answer source 'store'"
