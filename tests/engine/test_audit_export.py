"""Audit export: filters and formats (`engine.audit_export`), `ctiengine audit`,
and the `audit.export` control op on a running engine (admin only, tenant
scoped, audited itself)."""
from __future__ import annotations

import csv
import io
import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from engine.audit_export import AuditFilter, export_chunk, export_file, parse_time, write_rows
from engine.errors import StoreError
from engine.store import AuditEntry, SqliteStore
from foundation_helpers import RawConn, run, running_engine

ROOT = pathlib.Path(__file__).resolve().parents[2]
T0 = 1795430600.0  # 2026-11-23T10:43:20Z

ROWS = [  # (offset s, tenant, user, op, result)
    (0, "default", "admin", "auth", "ok"),
    (10, "default", "admin", "engine.log_level", "ok"),
    (20, "acme", "acme_admin", "auth", "ok"),
    (30, "default", "mallory", "auth", "error:unauthorized"),
    (40, "acme", "acme_admin", "agent.logout", "error:forbidden"),
    (50, "default", "admin", "auth", "ok"),
]


def seed(db: pathlib.Path) -> None:
    store = SqliteStore(str(db))
    for off, tenant, user, op, result in ROWS:
        store.audit(AuditEntry(ts=T0 + off, user=user, role="admin", tenant=tenant, op=op,
                               args='{"note": "comma, \\"quote\\"\\nnewline"}', result=result,
                               peer="127.0.0.1:4000"))
    store.close()


def export(db: pathlib.Path, fmt: str = "jsonl", **flt: Any) -> str:
    out = io.StringIO()
    export_file(str(db), out, AuditFilter(**flt), fmt)
    return out.getvalue()


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_filters(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "store.db"
    seed(db)
    everything = jsonl(export(db))
    assert [r["id"] for r in everything] == [1, 2, 3, 4, 5, 6]  # oldest first
    assert everything[0]["time"] == "2026-11-23T10:43:20.000Z"
    assert list(everything[0]) == ["id", "ts", "time", "tenant", "user", "role", "op", "args", "result", "peer"]
    assert [r["id"] for r in jsonl(export(db, since=T0 + 10, until=T0 + 40))] == [2, 3, 4]  # until exclusive
    assert [r["id"] for r in jsonl(export(db, user="admin"))] == [1, 2, 6]
    assert [r["id"] for r in jsonl(export(db, op="auth", tenant="default"))] == [1, 4, 6]
    assert [r["id"] for r in jsonl(export(db, tenant="acme", since=T0 + 25))] == [5]
    assert export(db, user="nobody") == ""
    assert export(db, user="x' OR '1'='1") == ""  # bound parameters, never SQL text


def test_csv_format_round_trips_awkward_values(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "store.db"
    seed(db)
    text = export(db, "csv", op="auth")
    assert text.startswith("id,ts,time,tenant,user,role,op,args,result,peer\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["user"] for r in rows] == ["admin", "acme_admin", "mallory", "admin"]
    assert json.loads(rows[0]["args"]) == {"note": 'comma, "quote"\nnewline'}
    assert float(rows[2]["ts"]) == T0 + 30 and rows[2]["result"] == "error:unauthorized"
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        write_rows([], io.StringIO(), "xml")


def test_chunks_page_through_everything(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "store.db"
    seed(db)
    pages, offset = [], 0
    while offset is not None:
        chunk = export_chunk(str(db), AuditFilter(), "csv", offset=offset, limit=4)
        pages.append(chunk)
        offset = chunk["next_offset"]
    assert [p["rows"] for p in pages] == [4, 2] and pages[0]["next_offset"] == 4
    assert pages[0]["data"].startswith("id,") and not pages[1]["data"].startswith("id,")
    joined = "".join(p["data"] for p in pages)
    assert [r["id"] for r in csv.DictReader(io.StringIO(joined, newline=""))] == [str(i) for i in range(1, 7)]
    last = export_chunk(str(db), AuditFilter(), "jsonl", offset=0, limit=6)
    assert last["next_offset"] is None and len(jsonl(last["data"])) == 6


def test_parse_time_forms() -> None:
    assert parse_time("1795430600") == T0
    assert parse_time("2026-11-23T10:43:20Z") == T0
    assert parse_time("2026-11-23T11:43:20+01:00") == T0
    assert parse_time("2026-11-23T10:43:20") == T0  # no zone: UTC
    assert parse_time("2026-11-23") == T0 - (10 * 3600 + 43 * 60 + 20)
    with pytest.raises(ValueError, match="neither Unix seconds nor an ISO 8601"):
        parse_time("yesterday")


def test_missing_or_foreign_database(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="no store database"):
        export(tmp_path / "none.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot read the database"):
        export(tmp_path / "junk.db")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_cli_audit(tmp_path: pathlib.Path) -> None:
    seed(tmp_path / "store.db")
    config = tmp_path / "engine.toml"
    config.write_text('[store]\npath = "store.db"\n')
    r = cli("audit", str(config), "--since", "2026-11-23T10:43:30Z", "--user", "admin", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    assert [row["id"] for row in jsonl(r.stdout)] == [2, 6]
    out = tmp_path / "audit.csv"
    r = cli("audit", str(config), "--tenant", "acme", "-o", str(out))
    assert r.returncode == 0 and "2 audit row(s)" in r.stderr
    assert [row["op"] for row in csv.DictReader(out.open(newline=""))] == ["auth", "agent.logout"]
    r = cli("audit", str(config), "--since", "last week")
    assert r.returncode == 2 and "neither Unix seconds nor an ISO 8601" in r.stderr
    config.write_text('[store]\npath = "missing.db"\n')
    r = cli("audit", str(config))
    assert r.returncode == 1 and "no store database" in r.stderr


def test_audit_export_op(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            for off, tenant, user, op, result in ROWS:
                engine.audit(user=user, role="admin", tenant=tenant, op=op, args="{}", result=result,
                             peer="test", ts=T0 + off)
            c = await RawConn.open(engine)
            await c.auth("admin")  # tenant "default"
            r = await c.call("audit.export", format="jsonl", op="auth")
            assert r["ok"], r
            rows = jsonl(r["result"]["data"])
            assert {row["tenant"] for row in rows} == {"default"}
            assert [row["user"] for row in rows] == ["admin", "mallory", "admin", "admin"]  # + this login
            r = await c.call("audit.export", tenant="acme")
            assert r["error"]["code"] == "forbidden"
            r = await c.call("audit.export", since="2026-11-23T10:43:30Z", until=T0 + 55, limit=1)
            assert r["result"]["rows"] == 1 and r["result"]["next_offset"] == 1
            assert r["result"]["data"].startswith("id,ts,time,")
            r = await c.call("audit.export", since="soon")
            assert r["error"]["code"] == "invalid_args" and "'since'" in r["error"]["message"]
            r = await c.call("audit.export", limit=0)
            assert r["error"]["code"] == "invalid_args"

            root = await RawConn.open(engine)
            await root.auth("root")  # global administrator: every tenant, or one
            r = await root.call("audit.export", tenant="acme", format="jsonl")
            assert [row["op"] for row in jsonl(r["result"]["data"])] == ["auth", "agent.logout"]

            sup = await RawConn.open(engine)
            await sup.auth("sup")
            r = await sup.call("audit.export")
            assert r["error"]["code"] == "forbidden"

            # Every export, allowed or refused, is in the audit log itself.
            await engine.store.aflush()
            audited = [(row["user"], row["result"]) for row in engine.store.select("audit_log", {"op": "audit.export"})]
            assert audited == [("admin", "ok"), ("admin", "error:forbidden"), ("admin", "ok"),
                               ("admin", "error:invalid_args"), ("admin", "error:invalid_args"),
                               ("root", "ok"), ("sup", "error:forbidden")]
            for conn in (c, root, sup):
                await conn.close()
    run(main())


def test_op_doc_lists_every_argument() -> None:
    from engine.ops import registry

    spec = registry.get("audit.export")
    assert spec is not None and spec.roles == {"admin"} and spec.changes_state
    text = (ROOT / "docs" / "control-audit-ops.md").read_text()
    assert "### `audit.export`" in text
    for arg in spec.args:
        assert f"| `{arg.name}` |" in text, f"argument {arg.name} is not documented"
