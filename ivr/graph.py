"""Drawing a flow: Graphviz DOT text, and SVG/PNG through ``dot`` when installed.

Each node becomes a DOT node labelled with its id, type and a short summary
(the first prompt, the queue, the variable collected); each edge carries its
label (the menu digit, ``timeout``, ``failure``, the branch rule's
conditions).  Shapes tell kinds apart at a glance: menus and input nodes are
boxes, branches diamonds, queues and transfers hexagons, ends double octagons.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

from ivr.errors import IvrError
from ivr.flow import Flow
from ivr.nodes import Node

SHAPES = {
    "play": "note", "menu": "box", "collect": "box", "survey": "box", "callback": "box",
    "set": "component", "branch": "diamond", "goto": "circle", "language": "tab",
    "lookup": "cylinder", "queue": "hexagon", "transfer": "hexagon", "voicemail": "folder",
    "hangup": "doubleoctagon",
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _summary(node: Node) -> str:
    p = node.params
    prompts = p.get("prompts")
    if node.type == "collect":
        return f"→ {p['variable']}"
    if node.type == "queue":
        return f"queue {p['queue']}"
    if node.type == "lookup":
        return f"{p['csv'] or p['table']}.{p['column']} = {p['key']}"
    if node.type == "transfer":
        for key in ("agent", "queue", "flow"):
            if p[key]:
                return f"{key} {p[key]}"
        return " then ".join(p["numbers"])
    if node.type == "voicemail":
        return f"mailbox {p['mailbox']}"
    if node.type == "language":
        return p["language"]
    if node.type == "survey":
        return f"{p['survey']}/{p['question']} [{p['digits']}]"
    if prompts:
        first = prompts[0]
        text = first.value if first.kind in ("file", "tts") else f"say {first.kind} {first.value}"
        return text if len(text) <= 40 else text[:37] + "..."
    return ""


def to_dot(flow: Flow) -> str:
    """The flow as a DOT digraph (deterministic: nodes in file order)."""
    lines = [f"digraph {_quote(flow.name)} {{",
             "  graph [rankdir=TB, fontname=Helvetica];",
             "  node [fontname=Helvetica, fontsize=10];",
             "  edge [fontname=Helvetica, fontsize=9];",
             '  "__start__" [shape=point, width=0.15];',
             f"  \"__start__\" -> {_quote(flow.start)};"]
    for node in flow.nodes.values():
        label = f"{node.id}\n({node.type})"
        summary = _summary(node)
        if summary:
            label += f"\n{summary}"
        if node.params.get("description"):
            label += f"\n{node.params['description']}"
        lines.append(f"  {_quote(node.id)} [shape={SHAPES[node.type]}, label={_quote(label)}];")
    for node in flow.nodes.values():
        for label, target in node.edges:
            attrs = f" [label={_quote(label)}]" if label else ""
            lines.append(f"  {_quote(node.id)} -> {_quote(target)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(dot_text: str, output: pathlib.Path, fmt: str, timeout_s: float = 30.0) -> pathlib.Path:
    """Run Graphviz ``dot -T<fmt>``; raises :class:`IvrError` when it is missing or fails."""
    if fmt not in ("svg", "png", "pdf"):
        raise IvrError(f"cannot draw format {fmt!r} (use dot, svg, png or pdf)")
    exe = shutil.which("dot")
    if exe is None:
        raise IvrError("Graphviz 'dot' is not installed (apt-get install graphviz); write .dot instead")
    try:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(output)], input=dot_text.encode(),
                              capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise IvrError(f"dot took longer than {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise IvrError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return output
