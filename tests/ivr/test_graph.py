"""DOT export and Graphviz rendering through the CLI functions."""
from __future__ import annotations

import pathlib
import shutil

import pytest

from ivr.cli import draw, main
from ivr.errors import FlowError
from ivr.flow import load_flow
from ivr.graph import to_dot
from ivr_helpers import write_flow

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "flows"


def test_dot_has_every_node_and_labelled_edge():
    flow = load_flow(EXAMPLES / "main_menu.toml")
    dot = to_dot(flow)
    assert dot.startswith('digraph "main_menu" {') and dot.rstrip().endswith("}")
    for node_id in flow.nodes:
        assert f'"{node_id}" [shape=' in dot
    assert '"__start__" -> "welcome";' in dot
    assert '"main" -> "sales" [label="1"];' in dot
    assert '"main" -> "goodbye" [label="failure"];' in dot
    assert 'label="main\\n(menu)\\nmain_menu\\ntop level"' in dot
    after = to_dot(load_flow(EXAMPLES / "after_hours.toml"))
    assert '"route" -> "open" [label="time 08:30-18:00, days mon-fri"];' in after


def test_draw_writes_dot_and_svg(tmp_path):
    src = tmp_path / "f.toml"
    shutil.copy(EXAMPLES / "survey.toml", src)
    written = draw(src)
    assert written[0] == tmp_path / "f.dot" and "digraph" in written[0].read_text()
    if shutil.which("dot"):
        assert written[1] == tmp_path / "f.svg"
        assert "<svg" in written[1].read_text()
        png = draw(src, tmp_path / "f.png")[0]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert len(written) == 1


def test_draw_refuses_an_invalid_flow(tmp_path, capsys):
    path = write_flow(tmp_path, '[flow]\nstart = "x"\n[nodes.a]\ntype = "hangup"\n')
    with pytest.raises(FlowError):
        draw(path)
    assert main(["draw", str(path)]) == 1
    assert f"{path}:2: [flow]: start node 'x' does not exist" in capsys.readouterr().err


def test_check_cli_exit_codes(tmp_path, capsys):
    assert main(["check", str(EXAMPLES)]) == 0
    bad = write_flow(tmp_path, '[flow]\nstart = "a"\n[nodes.a]\ntype = "hangup"\nfoo = 1\n')
    assert main(["check", str(EXAMPLES), str(bad)]) == 1
    assert capsys.readouterr().err.strip() == f"{bad}:5: node 'a' (hangup): unknown key 'foo'"


def test_check_cross_flow_transfer_targets_and_duplicate_names(tmp_path):
    from ivr.cli import check
    (tmp_path / "a.toml").write_text('[flow]\nname = "front"\nstart = "t"\n\n[nodes.t]\ntype = "transfer"\n'
                                     'flow = "billing"\non_failure = "bye"\n\n[nodes.bye]\ntype = "hangup"\n')
    (tmp_path / "b.toml").write_text('[flow]\nname = "front"\nstart = "x"\n[nodes.x]\ntype = "hangup"\n')
    errors, warnings = check([tmp_path])
    assert [str(e) for e in errors] == [
        f"{tmp_path}/a.toml:5: node 't' (transfer): flow 'billing' is not among the checked flows (front)",
        f"{tmp_path}/b.toml:1: flow name 'front' is also used by {tmp_path}/a.toml",
    ]
    (tmp_path / "b.toml").write_text('[flow]\nname = "billing"\nstart = "x"\n[nodes.x]\ntype = "hangup"\n')
    assert check([tmp_path]) == ([], [])
