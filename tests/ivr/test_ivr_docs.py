"""docs/ivr.md: every TOML example validates, the Python example runs, and the
key tables are exactly what the code accepts."""
from __future__ import annotations

import os
import pathlib
import re
import shutil

import pytest

from ivr.flow import load_flow
from ivr.nodes import FLOW_KEYS, RULE_KEYS, SCHEMAS, key_table

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ivr.md").read_text(encoding="utf-8")
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", DOC, re.S)
PY_BLOCKS = re.findall(r"```python\n(.*?)```", DOC, re.S)


def test_doc_has_an_example_per_node_type():
    assert len(TOML_BLOCKS) >= 13
    for node_type in SCHEMAS:
        assert f"### {node_type}\n" in DOC
        assert f'type = "{node_type}"' in "".join(TOML_BLOCKS)


@pytest.mark.parametrize("index", range(len(TOML_BLOCKS)))
def test_doc_toml_example_validates(tmp_path, index):
    shutil.copytree(ROOT / "examples" / "flows" / "tables", tmp_path / "tables")
    path = tmp_path / f"example{index}.toml"
    path.write_text(TOML_BLOCKS[index], encoding="utf-8")
    flow = load_flow(path, prompt_root=ROOT / "examples" / "flows" / "prompts")
    assert flow.nodes


@pytest.mark.parametrize("name", ["flow", "rules", *SCHEMAS])
def test_doc_key_tables_match_the_code(name):
    keys = FLOW_KEYS if name == "flow" else RULE_KEYS if name == "rules" else SCHEMAS[name]
    assert key_table(keys) in DOC


def test_doc_python_example_runs(capsys):
    assert PY_BLOCKS
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for block in PY_BLOCKS:
            exec(compile(block, "docs/ivr.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "PlayPrompts" in capsys.readouterr().out
