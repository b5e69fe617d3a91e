"""SIPp call-rate ladder against the full stack, a thin responder and Kamailio.

    python -m bench.sip_ladder [--rates 1000,2000,...] [--rung-s 10] [--targets stack,thin,kamailio]

For each target, rungs of ``--rung-s`` seconds at increasing call rates run
SIPp's built-in ``uac`` (INVITE, 200, ACK, BYE, 200) with
``-nostdin -buff_size 4194304 -recv_timeout 5000 -l 10000``; a rung is clean
when SIPp exits 0 with zero failed calls and zero retransmissions; the ladder
stops at the first unclean rung.  The target's CPU time (utime+stime from
``/proc/PID/stat``, all of its threads) over the rung gives CPU-µs per call.

Targets (started by this script, on free ports, killed by PID):

* ``stack``: ``python -m sip.uas`` — transactions, dialogs, 2xx-until-ACK,
  SDP answer, uvloop;
* ``thin``: ``python -m bench.sip_thin_responder`` — uvloop + regex copying,
  no transactions (the interpreter floor);
* ``kamailio``: ``/usr/sbin/kamailio`` with ``bench/kamailio_stateless.cfg``
  (sl_send_reply, one UDP worker) — the C reference.

Results: ``bench/results/sip_ladder.json`` and a table on stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# 250 and 500 first so a slow target still gets a figure; then the issue-4 rungs.
DEFAULT_RATES = [250, 500, 1000, 2000, 4000, 6000, 8000, 10000, 12000]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime+stime of every process in ``pid``'s session (Kamailio forks workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[3] = session (proc(5) field 6); utime, stime = fields[11], fields[12]
        if int(fields[3]) == pid or int(entry) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def wait_bound(port: int, proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"target exited with {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound UDP port {port}")


def start_target(name: str, port: int, workdir: pathlib.Path) -> subprocess.Popen:
    log = open(workdir / f"{name}.log", "wb")
    if name == "stack":
        argv = [sys.executable, "-m", "sip.uas", "--port", str(port)]
    elif name == "thin":
        argv = [sys.executable, "-m", "bench.sip_thin_responder", "--port", str(port)]
    elif name == "kamailio":
        argv = ["/usr/sbin/kamailio", "-f", str(ROOT / "bench" / "kamailio_stateless.cfg"), "-DD", "-E",
                "-n", "1", "-m", "64", "-M", "8", "-l", f"udp:127.0.0.1:{port}", "-Y", str(workdir),
                "-P", str(workdir / "kam.pid")]
    else:
        raise ValueError(f"unknown target {name!r}")
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_bound(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rung(target_port: int, rate: int, seconds: float, workdir: pathlib.Path, pid: int) -> dict:
    calls = int(rate * seconds)
    stat = workdir / f"rung_{rate}.csv"
    argv = ["sipp", "-sn", "uac", f"127.0.0.1:{target_port}", "-i", "127.0.0.1", "-p", str(free_port()),
            "-nostdin", "-buff_size", "4194304", "-recv_timeout", "5000", "-l", "10000",
            "-r", str(rate), "-rp", "1000", "-m", str(calls), "-timeout", str(int(seconds * 3 + 20)),
            "-timeout_error", "-trace_stat", "-stf", str(stat), "-fd", "1"]
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = proc.wait(seconds * 3 + 30)
    finally:
        stop(proc)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    rows = list(csv.DictReader(open(stat), delimiter=";")) if stat.exists() else []
    row = rows[-1] if rows else {}
    ok = int(row.get("SuccessfulCall(C)", 0) or 0)
    failed = int(row.get("FailedCall(C)", 0) or 0)
    retrans = int(row.get("Retransmissions(C)", 0) or 0)
    clean = rc == 0 and failed == 0 and retrans == 0 and ok == calls
    return {"rate": rate, "calls": calls, "successful": ok, "failed": failed, "retransmissions": retrans,
            "sipp_rc": rc, "wall_s": round(wall, 2), "cpu_s": round(cpu, 3),
            "cpu_us_per_call": round(cpu / max(ok, 1) * 1e6, 1), "clean": clean}


def ladder(name: str, rates: list[int], seconds: float) -> dict:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"ladder_{name}_"))
    port = free_port()
    proc = start_target(name, port, workdir)
    rungs = []
    try:
        for rate in rates:
            r = rung(port, rate, seconds, workdir, proc.pid)
            rungs.append(r)
            print(f"{name:9s} {rate:6d}/s  ok={r['successful']:6d} failed={r['failed']:5d} "
                  f"retrans={r['retransmissions']:5d} cpu/call={r['cpu_us_per_call']:7.1f} us  "
                  f"{'clean' if r['clean'] else 'NOT CLEAN'}", flush=True)
            if not r["clean"]:
                break
            time.sleep(1.0)
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    clean = [r for r in rungs if r["clean"]]
    best = clean[-1] if clean else None
    return {"target": name, "rungs": rungs, "max_clean_rate": best["rate"] if best else 0,
            "cpu_us_per_call_at_max": best["cpu_us_per_call"] if best else None}


def main() -> None:
    p = argparse.ArgumentParser(description="SIPp call-rate ladder")
    p.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    p.add_argument("--rung-s", type=float, default=10.0)
    p.add_argument("--targets", default="stack,thin,kamailio")
    a = p.parse_args()
    rates = [int(x) for x in a.rates.split(",")]
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "rung_s": a.rung_s,
               "loadavg_before": os.getloadavg(), "cpus": os.cpu_count(), "targets": []}
    for name in a.targets.split(","):
        results["targets"].append(ladder(name, rates, a.rung_s))
    results["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "sip_ladder.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{'target':9s} {'max clean calls/s':>18s} {'CPU us/call':>12s}")
    for t in results["targets"]:
        print(f"{t['target']:9s} {t['max_clean_rate']:18d} {t['cpu_us_per_call_at_max'] or 0:12.1f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
