"""Report rows of the month by 30 minutes × agent: column-wise vs row-wise, same run.

``python -m bench.reporting_rows [--db bench/results/reporting_month.db] [--repeat 3]``

Reads an existing sealed store of :mod:`bench.reporting_month` (it does not
generate one: 15 minutes per million calls) through a query-only
connection, and times, alternating, best of ``--repeat`` each:

* ``yardstick_full_scan``: ``SELECT COUNT(*), SUM(wait_s) FROM cdr``;
* ``after``: :func:`engine.reporting.build_report` + :meth:`Report.rows`
  (bucket rows kept as rows, figures computed column-wise with numpy);
* ``before``: the same report with its bucket rows turned into
  :class:`engine.kpi.Tally` objects (:attr:`Report.tallies`, what the
  roll-up did before) and :meth:`Report.rows_by_tally` (``Tally.figures``
  per row, the previous ``Report.rows``);
* ``read_only``: ``build_report`` alone (SQLite read of the bucket rows).

Checks that both give equal rows (values and types) and writes
``bench/results/reporting_rows.json`` with the load average.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from typing import Any, Callable

from bench.reporting_month import MONTH_END, MONTH_START, RESULTS, config_toml


def main(argv: list[str] | None = None) -> int:
    from engine.config import parse_config
    from engine.kpi import Dimension, Period
    from engine.reporting import build_report, open_reader

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default=os.path.join(RESULTS, "reporting_month.db"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    cfg = parse_config(config_toml(), "bench.toml")

    def report(conn: Any) -> Any:
        return build_report(conn, cfg, period=Period.INTERVAL_30, dimension=Dimension.AGENT, since=MONTH_START,
                            until=MONTH_END, tenants=("default",))

    def before(conn: Any) -> Any:
        rep = report(conn)
        rep.tallies  # noqa: B018 (Tally objects, as the roll-up built them before)
        return rep.rows_by_tally()

    cases: dict[str, Callable[[Any], Any]] = {
        "yardstick_full_scan": lambda c: c.execute("SELECT COUNT(*), SUM(wait_s) FROM cdr").fetchone(),
        "read_only": report, "after": lambda c: report(c).rows(), "before": before}
    best = {k: float("inf") for k in cases}
    out: dict[str, Any] = {"db": args.db, "load_before": os.getloadavg(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            conn = open_reader(args.db)
            try:
                gc.collect()
                t = time.perf_counter()
                res = fn(conn)
                best[name] = min(best[name], time.perf_counter() - t)
            finally:
                conn.close()
            if name in ("after", "before"):
                results[name] = res
            del res
        print({k: round(v, 3) for k, v in best.items()}, flush=True)
    a, b = results["after"], results["before"]
    out["rows"] = len(a)
    out["equal"] = a == b and all(list(x) == list(y) and all(type(x[k]) is type(y[k]) for k in y)
                                  for x, y in zip(a, b))
    out.update({k: round(v, 3) for k, v in best.items()})
    out["speedup"] = round(best["before"] / best["after"], 2)
    out["load_after"] = os.getloadavg()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "reporting_rows.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps(out, indent=1))
    return 0 if out["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
