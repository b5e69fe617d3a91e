"""Command-line surface of the IVR: ``draw`` and ``check``.

The engine's CLI wires these as ``ctiengine ivr draw FLOW`` and into
``ctiengine check`` (call :func:`draw`, :func:`check` or :func:`main`);
``python -m ivr draw|check ...`` runs them stand-alone.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from ivr.errors import FlowError, IvrError, Problem
from ivr.flow import Flow, load_flow
from ivr.graph import dot_available, render, to_dot


def draw(flow_path: str | pathlib.Path, output: str | pathlib.Path | None = None,
         prompt_root: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """Draw a flow; returns the files written.

    ``output`` ending in ``.dot`` writes DOT; ``.svg``/``.png``/``.pdf`` runs
    Graphviz.  Without ``output``: ``FLOW.dot`` beside the flow, plus
    ``FLOW.svg`` when Graphviz is installed.

    Raises:
        FlowError: the flow does not validate (it is not drawn).
        IvrError: Graphviz is needed but missing or failed.
    """
    flow_path = pathlib.Path(flow_path)
    flow = load_flow(flow_path, prompt_root)
    dot_text = to_dot(flow)
    if output is not None:
        out = pathlib.Path(output)
        fmt = out.suffix.lstrip(".").lower()
        if fmt in ("dot", "gv"):
            out.write_text(dot_text, encoding="utf-8")
            return [out]
        return [render(dot_text, out, fmt)]
    dot_path = flow_path.with_suffix(".dot")
    dot_path.write_text(dot_text, encoding="utf-8")
    written = [dot_path]
    if dot_available():
        written.append(render(dot_text, flow_path.with_suffix(".svg"), "svg"))
    return written


def flow_files(paths: list[str | pathlib.Path]) -> list[pathlib.Path]:
    """Files to check: each file as given, each directory's ``*.toml`` recursively."""
    out: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw)
        out.extend(sorted(path.rglob("*.toml")) if path.is_dir() else [path])
    return out


def check(paths: list[str | pathlib.Path], prompt_root: str | pathlib.Path | None = None
          ) -> tuple[list[Problem], list[Problem]]:
    """Validate flow files and directories; returns ``(errors, warnings)``, all of them.

    Besides each file's own checks, a ``transfer`` to another flow must name
    a flow among those checked (by ``[flow] name``), and two files must not
    share a flow name.
    """
    errors: list[Problem] = []
    warnings: list[Problem] = []
    flows: dict[str, Flow] = {}
    for path in flow_files(paths):
        try:
            flow = load_flow(path, prompt_root)
        except FlowError as exc:
            errors += exc.problems
            continue
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(Problem(str(path), 1, f"cannot read flow file: {exc}"))
            continue
        warnings += flow.warnings
        if flow.name in flows:
            errors.append(Problem(flow.file, 1, f"flow name {flow.name!r} is also used by {flows[flow.name].file}"))
        else:
            flows[flow.name] = flow
    for flow in flows.values():
        for node in flow.nodes.values():
            target = node.params.get("flow") if node.type == "transfer" else None
            if isinstance(target, str) and "{" not in target and target not in flows:
                errors.append(Problem(flow.file, node.line, f"node {node.id!r} (transfer): flow {target!r} is "
                                      f"not among the checked flows ({', '.join(sorted(flows))})"))
    return sorted(errors), sorted(warnings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``draw`` and ``check`` sub-commands (for ``ctiengine ivr``)."""
    sub = parser.add_subparsers(dest="ivr_command", required=True)
    d = sub.add_parser("draw", help="draw a flow as DOT (and SVG/PNG with Graphviz)")
    d.add_argument("flow")
    d.add_argument("-o", "--output", help="output file (.dot, .svg, .png, .pdf)")
    d.add_argument("--prompt-root", help="prompt directory (one sub-directory per language)")
    c = sub.add_parser("check", help="validate flows (files or directories)")
    c.add_argument("paths", nargs="+")
    c.add_argument("--prompt-root", help="prompt directory (one sub-directory per language)")


def run(args: argparse.Namespace) -> int:
    """Run parsed ``draw``/``check`` arguments; prints ``file:line: reason`` lines."""
    if args.ivr_command == "draw":
        try:
            for path in draw(args.flow, args.output, args.prompt_root):
                print(path)
        except FlowError as exc:
            print(exc, file=sys.stderr)
            return 1
        except (IvrError, OSError) as exc:
            print(f"{args.flow}: {exc}", file=sys.stderr)
            return 1
        return 0
    errors, warnings = check(args.paths, args.prompt_root)
    print_problems(errors, warnings)
    return 1 if errors else 0


def print_problems(errors: list[Problem], warnings: list[Problem]) -> None:
    """Warnings (marked) then errors, one ``file:line: reason`` line each, on stderr."""
    for w in warnings:
        print(f"{w} (warning)", file=sys.stderr)
    for e in errors:
        print(e, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivr", description="IVR flow tools")
    add_arguments(parser)
    return run(parser.parse_args(argv))
