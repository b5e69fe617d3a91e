"""`ctiengine check` validates the IVR flows a config names, and `ctiengine
ivr draw|check` reach the IVR tools (real subprocesses, real files)."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "engine.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _config_with_flow(tmp_path: pathlib.Path, flow_text: str) -> pathlib.Path:
    cfg = tmp_path / "centre.toml"
    demo = (ROOT / "examples" / "demo.toml").read_text()
    demo = demo.replace('path = "flows/', f'path = "{ROOT}/examples/flows/')  # the demo's own flows, by absolute path
    cfg.write_text(demo + '\n[flows.survey]\npath = "survey.toml"\n')
    (tmp_path / "survey.toml").write_text(flow_text)
    return cfg


def test_check_accepts_config_with_valid_flow(tmp_path: pathlib.Path) -> None:
    flow = (ROOT / "examples" / "flows" / "survey.toml").read_text()
    proc = _run("check", str(_config_with_flow(tmp_path, flow)))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_check_refuses_config_whose_flow_is_broken(tmp_path: pathlib.Path) -> None:
    flow = (ROOT / "examples" / "flows" / "survey.toml").read_text()
    broken = flow.replace('next = "thanks"', 'next = "nowhere"')
    cfg = _config_with_flow(tmp_path, broken)
    proc = _run("check", str(cfg))
    assert proc.returncode == 2
    line = broken.splitlines().index('next = "nowhere"') + 1
    assert f"{tmp_path / 'survey.toml'}:{line}:" in proc.stderr
    assert "nowhere" in proc.stderr


def test_ivr_draw_writes_dot_and_svg(tmp_path: pathlib.Path) -> None:
    src = ROOT / "examples" / "flows" / "survey.toml"
    out = tmp_path / "survey.dot"
    proc = _run("ivr", "draw", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("digraph") and "overall" in text and "resolved" in text
    if shutil.which("dot"):
        svg = tmp_path / "survey.svg"
        assert _run("ivr", "draw", str(src), "-o", str(svg)).returncode == 0
        assert "<svg" in svg.read_text()


def test_ivr_check_reports_file_line_reason(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[flow]\nname = "x"\nstart = "a"\n\n[nodes.a]\ntype = "teleport"\n')
    proc = _run("ivr", "check", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:6:" in proc.stderr
