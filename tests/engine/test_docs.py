"""The foundation's docs are true: every config key documented, the examples
parse and run, every op and error code of the control socket described."""
from __future__ import annotations

import contextlib
import io
import pathlib
import re
from typing import Any

from engine.cli import main
from engine.config import parse_config
from engine.configdoc import reference_tables
from engine.errors import EngineError
from engine.ops import registry
from engine.passwords import verify_password
from foundation_helpers import PASSWORDS, run, running_engine, tcp_address

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def blocks(path: pathlib.Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), re.S)


def test_config_md_lists_every_key() -> None:
    assert reference_tables() in (DOCS / "config.md").read_text(), \
        "docs/config.md is out of date: paste the output of `python -m engine.configdoc`"


def test_config_md_examples_are_valid() -> None:
    (example,) = blocks(DOCS / "config.md", "toml")
    cfg = parse_config(example, "docs/config.md")
    assert cfg.routes[0].destination == "queue:sales"
    assert verify_password("pw1001", cfg.agents["1001"].password)
    assert verify_password("demo-admin", cfg.users["admin"].password)


def test_config_md_error_example_matches(tmp_path: pathlib.Path) -> None:
    shown = [line for line in (DOCS / "config.md").read_text().splitlines() if line.startswith("bad.toml:")]
    bad = tmp_path / "bad.toml"
    bad.write_text('\n[engine]\nlog_level = "LOUD"\ncolour = 1\n\n[queues.q1]\ngroups = ["nope"]\nring_timeout_s = 0\n')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["check", str(bad)]) == 2
    assert err.getvalue().replace(str(bad), "bad.toml").splitlines() == shown


def test_demo_credentials_in_docs_are_right() -> None:
    from engine.config import load_config

    cfg = load_config(str(ROOT / "examples/demo.toml"))
    text = (DOCS / "config.md").read_text()
    for user, pw in [("admin", "demo-admin"), ("supervisor", "demo-super"), ("reports", "demo-report"),
                     ("alice", "pw1001")]:
        assert f"`{user}` | `{pw}`" in text
        assert verify_password(pw, cfg.users[user].password)
    for n in ("1001", "1002", "1003", "1004"):
        assert verify_password(f"pw{n}", cfg.agents[n].password)


def test_control_md_documents_every_op_and_code() -> None:
    """Ops are documented in docs/control.md or an area page docs/control-<area>-ops.md."""
    import engine.agent_ops  # noqa: F401  (the call path's ops register at import)
    import engine.builtin_ops  # noqa: F401
    import engine.security_ops  # noqa: F401

    pages = sorted(DOCS.glob("control*.md"))
    everything = "\n".join(p.read_text() for p in pages)
    for name in registry.names():
        assert f"### `{name}`" in everything, f"op {name} is not documented in any of docs/control*.md"
    index = (DOCS / "index.md").read_text()
    for page in pages:
        assert page.name in index, f"docs/index.md does not link {page.name}"
    text = (DOCS / "control.md").read_text()
    codes = {cls.code for cls in _subclasses(EngineError)} | {"internal"}
    for code in codes:
        assert f"| `{code}` |" in text, f"error code {code} is not in docs/control.md"


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_control_md_python_example_runs(make_config: Any) -> None:
    (example,) = blocks(DOCS / "control.md", "python")[:1]
    code = example.replace('asyncio.run(main("127.0.0.1", 7070))', "")
    code = code.replace('user="admin", password="demo-admin"', f'user="admin", password="{PASSWORDS["admin"]}"')
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/control.md", "exec"), namespace)

    async def main() -> None:
        async with running_engine(make_config()) as engine:
            await namespace["main"](*tcp_address(engine))
    run(main())


def test_store_md_example_runs(tmp_path: pathlib.Path, monkeypatch: Any) -> None:
    (example,) = blocks(DOCS / "store.md", "python")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/store.md", "exec"), namespace)
    assert namespace["rows"][0]["event"] == "joined"
    assert namespace["rows"][0]["data"] == '{"position": 1}'
    assert (tmp_path / "var" / "example.db").exists()


def test_store_md_tables_match_schema(tmp_path: pathlib.Path) -> None:
    from engine.store import LATEST_VERSION, SqliteStore

    text = (DOCS / "store.md").read_text()
    assert f"## Tables (schema version {LATEST_VERSION})" in text
    store = SqliteStore(str(tmp_path / "x.db"))
    try:
        for table in store._columns:
            if table != "schema_version":
                assert f"| `{table}` |" in text, table
    finally:
        store.close()


def test_every_config_key_has_a_meaning() -> None:
    empty = [line for line in reference_tables().splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert empty == []
