"""Turn ``bench/results/micro.json`` (pytest-benchmark) into the table in
``docs/performance.md``.

Machines here are shared and noisy, so every figure is reported as a ratio
against a baseline measured in the same run: within each benchmark group the
benchmark whose name contains ``baseline`` is the reference (ratio = baseline
mean / this mean, so > 1 means faster than the baseline).  Absolute means are
shown too, with the date and machine, for orientation only.
"""
from __future__ import annotations

import datetime as _dt
import json
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench:micro:begin -->"
END = "<!-- bench:micro:end -->"


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def render(data: dict) -> str:
    """Markdown table: one row per benchmark, grouped, with same-run ratios."""
    groups: dict[str, list[dict]] = {}
    for bench in data.get("benchmarks", []):
        groups.setdefault(bench.get("group") or bench["fullname"].split("::")[0], []).append(bench)
    when = data.get("datetime", _dt.datetime.now(_dt.timezone.utc).isoformat())
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.processor())
    lines = [
        f"Run {when[:19]} on {cpu or 'unknown CPU'} ({data.get('machine_info', {}).get('node', '')}).",
        "",
        "| group | benchmark | mean | ops/s | × baseline |",
        "|---|---|---|---|---|",
    ]
    for group in sorted(groups):
        rows = groups[group]
        base = next((b for b in rows if "baseline" in b["name"]), None)
        for b in sorted(rows, key=lambda b: b["stats"]["mean"]):
            mean = b["stats"]["mean"]
            ratio = f"{base['stats']['mean'] / mean:.2f}" if base else "n/a"
            lines.append(f"| {group} | {b['name']} | {_fmt_time(mean)} | {1 / mean:,.0f} | {ratio} |")
    return "\n".join(lines)


def update_doc(table: str, doc: pathlib.Path = ROOT / "docs" / "performance.md") -> None:
    """Replace the generated block in the doc, keeping the hand-written text."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Micro-benchmarks (latest `make bench`)\n\n" + block + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = pathlib.Path(argv[0]) if argv else ROOT / "bench" / "results" / "micro.json"
    if not src.exists():
        print(f"bench.report: {src} not found; run `make bench` first", file=sys.stderr)
        return 1
    table = render(json.loads(src.read_text()))
    (src.parent / "summary.md").write_text(table + "\n")
    update_doc(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
