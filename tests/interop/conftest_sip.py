"""sipcore interop helpers: run SIPp bounded, on free ports, killed by PID."""
from __future__ import annotations

import asyncio
import csv
import os
import pathlib
import shutil
import signal
import socket

import pytest

HERE = pathlib.Path(__file__).resolve().parent
# Third-party scenarios are read in place from ../shared (never copied).
SHARED_SIPP = HERE.parent.parent.parent / "shared" / "testpeers" / "sipp"
SIPP = shutil.which("sipp")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_sipp() -> str:
    if SIPP is None:
        pytest.fail("sipp not installed (apt-get install sip-tester)")
    return SIPP


async def run_sipp(args: list[str], cwd: pathlib.Path, timeout_s: float) -> tuple[int, dict, str]:
    """Run SIPp to completion (bounded); returns (exit code, last CSV row, log text)."""
    sipp = require_sipp()
    log = cwd / "sipp.log"
    stat = cwd / "stat.csv"
    argv = [sipp, *args, "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
            "-trace_err", "-timeout", str(int(timeout_s)), "-timeout_error"]
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=out, stderr=asyncio.subprocess.STDOUT,
                                                    start_new_session=True)
        try:
            rc = await asyncio.wait_for(proc.wait(), timeout_s + 5)
        finally:
            await stop_process(proc)
    rows = list(csv.DictReader(open(stat), delimiter=";")) if stat.exists() else []
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in cwd.glob("*_errors.log"))
    return rc, (rows[-1] if rows else {}), log.read_text(errors="replace")[-3000:] + errors


async def start_sipp(args: list[str], cwd: pathlib.Path) -> asyncio.subprocess.Process:
    """Start a long-running SIPp (UAS); stop it with :func:`stop_process`."""
    sipp = require_sipp()
    out = open(cwd / "sipp-uas.log", "wb")
    proc = await asyncio.create_subprocess_exec(sipp, *args, "-nostdin", cwd=cwd,
                                                stdin=asyncio.subprocess.DEVNULL, stdout=out,
                                                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    out.close()
    return proc


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """terminate, wait, then SIGKILL the process group (our own session only)."""
    if proc.returncode is not None:
        return
    try:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 3)
    except (ProcessLookupError, asyncio.TimeoutError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()


async def wait_udp_bound(port: int, proc: asyncio.subprocess.Process, timeout_s: float = 5.0) -> None:
    """Wait until something binds 127.0.0.1:port/udp (SIPp ready)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"SIPp exited early with {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"SIPp did not bind UDP port {port}")
