"""bench.report renders same-run ratios and rewrites only its own doc block."""
from __future__ import annotations

import pathlib

from bench.report import BEGIN, END, render, update_doc


def _bench(name: str, group: str, mean: float) -> dict:
    return {"name": name, "group": group, "fullname": f"bench/x.py::{name}", "stats": {"mean": mean}}


def test_ratio_against_same_group_baseline() -> None:
    data = {"benchmarks": [_bench("test_baseline_parse", "parse", 2e-5), _bench("test_parse", "parse", 1e-5),
                           _bench("test_other", "solo", 1e-3)], "datetime": "2026-11-23T10:00:00"}
    table = render(data)
    assert "| parse | test_parse | 10 µs | 100,000 | 2.00 |" in table
    assert "| parse | test_baseline_parse | 20 µs | 50,000 | 1.00 |" in table
    assert "| solo | test_other | 1 ms | 1,000 | n/a |" in table


def test_update_doc_keeps_hand_written_text(tmp_path: pathlib.Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nhand written\n")
    update_doc("T1", doc)
    update_doc("T2", doc)
    text = doc.read_text()
    assert "hand written" in text and "T2" in text and "T1" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
