"""``ctiengine report``: interval KPIs and CDRs to CSV / XLSX, plus PNG charts.

Reads the store file named by the config (offline, or beside a running
engine: WAL readers never block the writer) with the same code as the
``kpi.report`` and ``cdr.query`` ops (:mod:`engine.reporting`,
:mod:`engine.cdr_query`), so a file and a control-socket answer agree.

Writes into ``--out`` (created if needed):

* ``kpi_<period>_<dimension>.csv`` and/or ``.xlsx``: one row per
  (interval, key) with every figure of docs/kpis.md;
* ``cdr.csv`` / a ``cdr`` sheet with ``--cdr``: the CDRs of the range;
* with ``--charts``: ``volume.png`` (offered, answered, abandoned calls by
  interval), ``service_level.png`` (service level by interval against the
  target line) and ``abandon_rate.png`` (abandon and short-abandon rate by
  interval), over the tenant totals, sized for a slide (matplotlib, Agg).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from engine.errors import ConfigError, StoreError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def kpi_columns(dimension: str) -> list[str]:
    from engine.kpi import FIGURES
    return ["start", "start_ts", "end_ts", dimension, *FIGURES]


def write_charts(rows: Sequence[dict[str, Any]], out_dir: str, *, title: str, target: float,
                 period: str) -> list[str]:
    """The three PNG charts from tenant-dimension KPI rows; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [lab for _, lab in sorted({(r["start_ts"], r["start"]) for r in rows})]
    by_label: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    for r in rows:  # add tenants up: counts are additive, rates are recomputed from counts
        agg = by_label[r["start"]]
        for k in ("offered", "answered", "abandoned", "short_abandoned", "answered_within_threshold"):
            agg[k] = agg.get(k, 0) + (r[k] or 0)
        agg["sl_base"] = agg.get("sl_base", 0) + (r["service_level_base"] or 0)
    short = [_short_label(lab, period) for lab in labels]
    x = list(range(len(labels)))
    width = max(8.0, min(20.0, len(labels) * 0.25))
    paths = []

    def finish(fig: Any, ax: Any, name: str, ylabel: str) -> None:
        ax.set_ylabel(ylabel)
        step = max(1, len(x) // 24)
        ax.set_xticks(x[::step])
        ax.set_xticklabels(short[::step], rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(x, [by_label[lab].get("answered", 0) for lab in labels], label="answered", color="#4c8c4a")
    ax.bar(x, [by_label[lab].get("abandoned", 0) for lab in labels],
           bottom=[by_label[lab].get("answered", 0) for lab in labels], label="abandoned", color="#c0504d")
    ax.plot(x, [by_label[lab].get("offered", 0) for lab in labels], color="#333333", marker=".", label="offered")
    ax.set_title(f"{title}: call volume by {period}")
    finish(fig, ax, "volume.png", "calls")

    fig, ax = plt.subplots(figsize=(width, 4.5))
    sl = [_div(by_label[lab].get("answered_within_threshold", 0), by_label[lab].get("sl_base", 0)) for lab in labels]
    ax.plot(x, [v * 100 if v is not None else float("nan") for v in sl], marker="o", label="service level")
    ax.axhline(target * 100, color="#c0504d", linestyle="--", label=f"target {target:.0%}")
    ax.set_ylim(0, 105)
    ax.set_title(f"{title}: service level by {period}")
    finish(fig, ax, "service_level.png", "% answered within threshold")

    fig, ax = plt.subplots(figsize=(width, 4.5))
    ab = [_div(by_label[lab].get("abandoned", 0), by_label[lab].get("offered", 0)) for lab in labels]
    sab = [_div(by_label[lab].get("short_abandoned", 0), by_label[lab].get("offered", 0)) for lab in labels]
    ax.plot(x, [v * 100 if v is not None else float("nan") for v in ab], marker="o", label="abandoned (all)")
    ax.plot(x, [v * 100 if v is not None else float("nan") for v in sab], marker=".", label="short abandons")
    ax.set_title(f"{title}: abandon rate by {period}")
    finish(fig, ax, "abandon_rate.png", "% of offered calls")
    return paths


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def _short_label(label: str, period: str) -> str:
    # "2026-11-23T08:30:00+01:00" -> "23 08:30" (intervals), "2026-11-23" (days), "2026-11" (months)
    if period in ("30min", "hour"):
        return f"{label[8:10]} {label[11:16]}"
    if period == "month":
        return label[:7]
    return label[:10]


def cmd_report(args: argparse.Namespace) -> int:
    from engine.cdr_query import CDR_COLUMNS, CdrFilter, ReadScope, iter_rows, write_csv, write_xlsx
    from engine.config import load_config
    from engine.kpi import Dimension, Period
    from engine.reporting import build_report, open_reader, parse_local_time

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    zone = cfg.engine.time_zone
    try:
        since = parse_local_time(args.since, zone)
        until = parse_local_time(args.until, zone)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    formats = [f for f in args.format.split(",") if f]
    bad = [f for f in formats if f not in ("csv", "xlsx")]
    if bad or not formats:
        print(f"report: --format takes csv, xlsx or csv,xlsx (got {args.format!r})", file=sys.stderr)
        return EXIT_USAGE
    tenants = (args.tenant,) if args.tenant else None
    period, dim = Period(args.period), Dimension(args.dimension)
    os.makedirs(args.out, exist_ok=True)
    written: list[str] = []
    try:
        conn = open_reader(cfg.resolve_path(cfg.store.path))
        try:
            rows = build_report(conn, cfg, period=period, dimension=dim, since=since, until=until,
                                tenants=tenants).rows()
            cols = kpi_columns(dim.value)
            base = os.path.join(args.out, f"kpi_{period.value}_{dim.value}")
            if "csv" in formats:
                with open(base + ".csv", "w", encoding="utf-8", newline="") as f:
                    write_csv(rows, f, cols)
                written.append(base + ".csv")
            def cdr_rows() -> Any:  # streamed from the store each time: memory stays flat
                return iter_rows(conn, CdrFilter(since=since, until=until), ReadScope(tenants=tenants))

            if args.cdr and "csv" in formats:
                path = os.path.join(args.out, "cdr.csv")
                with open(path, "w", encoding="utf-8", newline="") as f:
                    write_csv(cdr_rows(), f)
                written.append(path)
            if "xlsx" in formats:
                sheets = [(f"kpi {period.value} {dim.value}", cols, rows)]
                if args.cdr:
                    sheets.append(("cdr", CDR_COLUMNS, cdr_rows()))
                write_xlsx(sheets, base + ".xlsx")
                written.append(base + ".xlsx")
            if args.charts:
                totals = rows if dim is Dimension.TENANT else build_report(
                    conn, cfg, period=period, dimension=Dimension.TENANT, since=since, until=until,
                    tenants=tenants).rows()
                written += write_charts(totals, args.out, title=args.title or cfg.engine.name,
                                        target=cfg.reporting.service_level_target, period=period.value)
        finally:
            conn.close()
    except (StoreError, OSError, ValueError) as exc:
        print(f"report failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ImportError as exc:
        print(f"report failed: {exc} (install openpyxl and matplotlib)", file=sys.stderr)
        return EXIT_FAILURE
    for path in written:
        print(path)
    print(f"{len(rows)} KPI row(s) ({period.value} x {dim.value}, {zone})", file=sys.stderr)
    return EXIT_OK


def configure(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``ctiengine`` parser."""
    p = sub.add_parser("report", help="interval KPIs and CDRs as CSV/XLSX, with PNG charts (reads the store)")
    p.add_argument("config")
    p.add_argument("--since", required=True, help="Unix seconds or ISO 8601 (no offset: the centre's time zone)")
    p.add_argument("--until", required=True, help="exclusive end, same forms")
    p.add_argument("--period", default="30min", choices=("30min", "hour", "day", "week", "month"))
    p.add_argument("--dimension", default="queue", choices=("tenant", "queue", "group", "agent", "dialed_number"))
    p.add_argument("--tenant", default="", help="one tenant (default: all)")
    p.add_argument("--format", default="csv,xlsx", help="csv, xlsx or csv,xlsx")
    p.add_argument("--cdr", action="store_true", help="also write the range's CDRs")
    p.add_argument("--charts", action="store_true", help="draw volume, service level and abandon rate PNGs")
    p.add_argument("--title", default="", help="chart title (default: [engine] name)")
    p.add_argument("-o", "--out", default=".", help="output directory")
    p.set_defaults(func=cmd_report)


__all__ = ["cmd_report", "configure", "kpi_columns", "write_charts"]
