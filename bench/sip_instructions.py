"""Instructions per sans-IO SIP call, counted by valgrind (load-independent).

    python -m bench.sip_instructions [--calls 400]

Wall-clock and CPU-time figures on a shared machine move by ±30 % between
identical runs; an instruction count does not.  This runs
``bench.sip_callflow``'s call (INVITE → 200 + SDP answer, ACK, BYE → 200
through ``SipStack``, no sockets) ``--calls`` times under ``valgrind
--tool=callgrind`` and once with 0 calls, and reports the difference per
call.  Needs valgrind (Debian ``valgrind``); takes about a minute.
Results: ``bench/results/sip_instructions.json``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCRIPT = ("import gc, sys; sys.path.insert(0, {root!r}); from bench.sip_callflow import CallFlow; "
          "gc.set_threshold(50000, 20, 20); f = CallFlow(); [f.call() for _ in range({n})]")


def instructions(calls: int) -> int:
    """Instructions executed by a Python process running ``calls`` calls (startup included)."""
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          "-c", SCRIPT.format(root=str(ROOT), n=calls)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=400)
    a = p.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    base, total = instructions(0), instructions(a.calls)
    per_call = (total - base) / a.calls
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "calls": a.calls,
              "instructions_startup": base, "instructions_total": total, "instructions_per_call": round(per_call)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sip_instructions.json").write_text(json.dumps(result, indent=2))
    print(f"{per_call:,.0f} instructions per call ({a.calls} calls)")


if __name__ == "__main__":
    main()
