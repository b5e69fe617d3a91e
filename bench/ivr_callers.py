"""Load driver: hundreds of concurrent callers walking IVR menus with real SIP and RTP.

    python -m bench.ivr_callers [--calls 500] [--baseline 50] [--measure-s 12] [--ramp-per-s 50]

The engine (``engine.app.Engine`` with the call path: SIP, the 20 ms media
clock, the IVR runner, the ACD) runs in this process on uvloop.  The
callers run in a child process (``--role callers``) on the project's own
stack (:mod:`engine.sim`: one SIP socket for all calls, one RTP socket per
caller, one batched 20 ms RTP pump): each dials the IVR number, and every
1.5-3 s presses a key as RFC 4733 DTMF, so it walks a loop of two menus and
an information prompt (barge-in stops the prompt, the next prompt starts),
for as long as the phase lasts.  Every caller therefore has a prompt
playing, a DTMF receiver busy and an interpreter stepping.

Phases, same engine, same run:

1. ``idle``: no call (the media clock ticking with no leg);
2. ``baseline``: ``--baseline`` callers (default 50);
3. ``load``: ``--calls`` callers (default 500).

For each phase, once every caller is answered and after a short settling
time, the media engine's tick statistics are reset and measured for
``--measure-s``: start lateness of the 20 ms ticks (p50/p99/max), ticks
that ran late by a whole period (``MediaClock.late_ticks``) or were skipped,
tick CPU time, and the engine process's CPU time (all threads: TTS/prompt
loading off the loop included) per caller.  The load generator reports its
own tick lateness too, so a starved generator is visible.  Raw JSON goes to
``bench/results/ivr_callers-<date>.json``.  Bounded: every phase ends after
its duration, the child is killed after ``--timeout-s``.

``--slow-events`` puts RFC 4733 event packets back on the media engine's
per-packet slow path (the code before the batch path), so before and after
can be compared with the same code in the same conditions.

``--compare-prompts`` runs the load phase twice in the same engine: first
with every prompt player read one by one (``source.read()`` per leg and
tick, the code before :mod:`media.prompttable`), then with the batched
prompt table; ``--per-player-prompts`` uses the per-player path throughout.
Every measured phase also reports the tick's CPU time split by stage
(receive, playout, players, mix, record, send, housekeeping, events).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import random
import socket
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DIALED = "+4930555700"

FLOW = """
[flow]
name = "bench"
start = "main"

[nodes.main]
type = "menu"
prompts = [{ tts = "For sales, press 1. For support, press 2." }]
choices = { "1" = "sub", "2" = "sub" }
timeout_s = 8
retries = 5
on_failure = "bye"

[nodes.sub]
type = "menu"
prompts = [{ tts = "For a new contract, press 1. To upgrade your plan, press 2." }]
choices = { "1" = "info", "2" = "info" }
timeout_s = 8
retries = 5
on_failure = "bye"

[nodes.info]
type = "play"
prompts = [{ tts = "Our opening hours are eight to six, Monday to Friday." }]
barge_in = true
next = "main"

[nodes.bye]
type = "hangup"
"""


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def engine_config(tmp: pathlib.Path, sip_port: int, ctl_port: int, legs: int) -> str:
    (tmp / "bench.toml").write_text(FLOW)
    rtp = 30000 + (sip_port % 10) * 1500
    return f"""
[engine]
name = "bench-ivr"
log_level = "WARNING"

[sip]
domain = "bench.test"
listen = [ {{ transport = "udp", host = "127.0.0.1", port = {sip_port} }} ]

[media]
host = "127.0.0.1"
rtp_port_min = {rtp}
rtp_port_max = {rtp + max(2 * legs + 100, 200)}

[store]
path = "{tmp}/bench.db"

[control]
listen = [ {{ transport = "tcp", host = "127.0.0.1", port = {ctl_port} }} ]

[recording]
mode = "none"

[trunks.carrier]
host = "127.0.0.1"
accept_networks = ["127.0.0.0/8"]

[flows.bench]
path = "{tmp}/bench.toml"

[[routes]]
dialed_number = "{DIALED}"
destination = "flow:bench"
"""


# --------------------------------------------------------------------------- the callers (child)


async def run_callers(args: argparse.Namespace) -> None:
    from engine.sim import RtpPump, SimTrunk

    rng = random.Random(args.seed)
    pump = RtpPump(capacity=args.calls + 8, max_seconds=args.seconds + 20)
    trunk = SimTrunk(("127.0.0.1", args.sip_port), pump)
    await trunk.start()
    pump.start()
    loop = asyncio.get_running_loop()
    # Callers stay until --hold-s after the last one was answered (the engine may answer slower
    # than the ramp under load), bounded by --seconds overall.
    end = {"at": loop.time() + args.seconds}
    stats = {"placed": 0, "answered": 0, "failed": 0, "digits": 0, "ended_by_engine": 0}
    connected = asyncio.Event()

    async def caller(i: int) -> None:
        await asyncio.sleep(i / args.ramp_per_s)
        call = trunk.call(DIALED, caller_number=f"+49170{i:07d}")
        stats["placed"] += 1
        try:
            await call.wait_answered(20)
        except Exception:
            stats["failed"] += 1
            call.hangup()
            return
        stats["answered"] += 1
        if stats["answered"] == args.calls:
            end["at"] = min(end["at"], loop.time() + args.hold_s)
            connected.set()
        while loop.time() < end["at"]:
            await asyncio.sleep(min(rng.uniform(1.5, 3.0), max(0.0, end["at"] - loop.time())))
            if not call.up:
                stats["ended_by_engine"] += 1
                return
            if loop.time() < end["at"]:
                call.party.send_digits(rng.choice("12"))
                stats["digits"] += 1
        call.hangup()

    tasks = [loop.create_task(caller(i)) for i in range(args.calls)]

    async def announce() -> None:
        await connected.wait()
        print(f"CONNECTED {stats['answered']}", flush=True)

    announcer = loop.create_task(announce())
    await asyncio.gather(*tasks)
    announcer.cancel()
    result = {**stats, "pump_ticks": pump.ticks, "pump_late_ticks": pump.late_ticks,
              "pump_max_lateness_ms": round(pump.max_lateness_s * 1000, 1),
              "pump_mean_lateness_ms": round(pump.lateness_sum_s / max(1, pump.ticks) * 1000, 2),
              "packets_sent": pump.packets_sent, "packets_received": pump.packets_received,
              "cpu_s": round(time.process_time(), 2)}
    await trunk.stop()
    await pump.stop()
    print("DONE " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- the engine (parent)


STAGES = ("_receive", "_playout", "_read_players", "mix", "_record", "_send", "_housekeeping", "_deliver",
          "_transmit")
"""The tick's stages (methods of MediaEngine, ``mix`` of its Mixer); ``_transmit`` (sendmmsg) is part of ``_send``."""


def instrument_stages(media: Any) -> dict[str, float]:
    """Wrap the tick's stage methods on ``media`` to add up their thread CPU time (seconds) per stage."""
    totals = {name: 0.0 for name in STAGES}

    def wrap(owner: Any, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def timed(*a: Any, **kw: Any) -> Any:
            c0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                totals[key] += time.thread_time() - c0
        setattr(owner, name, timed)

    for name in STAGES:
        wrap(media._mixer if name == "mix" else media, name, name)
    return totals


async def measure(centre: Any, seconds: float) -> dict[str, Any]:
    media = centre.media
    clock = media.clock
    legs_at_start = len(media.legs)
    media.tick_stats.reset()
    stages = getattr(media, "_bench_stage_cpu", None)
    stages0 = dict(stages) if stages else {}
    late0, skipped0 = clock.late_ticks, clock.skipped_ticks
    cpu0, wall0 = time.process_time(), time.monotonic()
    load0 = os.getloadavg()[0]
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    ts = media.tick_stats
    stage_ms = ({k.lstrip("_"): round((stages[k] - stages0[k]) * 1000 / max(1, ts.count), 3) for k in stages}
                if stages else {})
    where: dict[str, int] = {}
    for call in centre.calls.values():
        ivr = call.ivr[0].interpreter if call.ivr else None
        key = f"{call.state.value}/{ivr.phase.value if ivr else '-'}/{ivr.node.id if ivr and ivr.node else '-'}"
        where[key] = where.get(key, 0) + 1
    return {
        "call_states": where,
        "legs_at_start": legs_at_start, "legs": len(media.legs), "calls": len(centre.calls), "players": len(media.players),
        "measure_s": round(wall, 2), "ticks": ts.count,
        "tick_lateness_ms": {"p50": round(ts.percentile_ms(50, "lateness"), 2),
                             "p99": round(ts.percentile_ms(99, "lateness"), 2),
                             "max": round(ts.max_ms("lateness"), 2)},
        "tick_duration_ms": {"p50": round(ts.percentile_ms(50), 3), "p99": round(ts.percentile_ms(99), 3),
                             "max": round(ts.max_ms(), 2)},
        "tick_cpu_ms": {"p50": round(ts.percentile_ms(50, "cpu"), 3), "p99": round(ts.percentile_ms(99, "cpu"), 3)},
        "stage_cpu_ms_per_tick": stage_ms,
        "prompt_path": "batched" if media._batch_prompts else "per-player",
        "table_players": len(media._table_players),
        "late_ticks": clock.late_ticks - late0, "skipped_ticks": clock.skipped_ticks - skipped0,
        "engine_cpu_s": round(cpu, 3), "engine_cpu_share": round(cpu / wall, 3),
        "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


async def phase(centre: Any, sip_port: int, calls: int, args: argparse.Namespace) -> dict[str, Any]:
    if calls == 0:
        await asyncio.sleep(1.0)
        return {"callers": 0, **await measure(centre, min(args.measure_s, 5.0))}
    ramp_s = calls / args.ramp_per_s
    since = time.time()
    seconds = ramp_s + args.settle_s + args.measure_s + 60.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.ivr_callers", "--role", "callers", "--sip-port", str(sip_port),
        "--calls", str(calls), "--ramp-per-s", str(args.ramp_per_s), "--seconds", str(seconds),
        "--hold-s", str(args.settle_s + args.measure_s + 15.0), "--seed", str(args.seed), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    result: dict[str, Any] = {"callers": calls}
    try:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), ramp_s + 60)
        except asyncio.TimeoutError:  # the engine did not answer every caller: measure what it carries
            line = b"CONNECTED (not all)"
            result["connected_all"] = False
        if not line.startswith(b"CONNECTED"):
            raise RuntimeError(f"callers did not connect: {line!r}")
        await asyncio.sleep(args.settle_s)
        result.update(await measure(centre, args.measure_s))
        async for raw in proc.stdout:
            if raw.startswith(b"DONE "):
                result["generator"] = json.loads(raw[5:])
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    for _ in range(300):  # let the engine finish the hang-ups
        if not centre.calls:
            break
        await asyncio.sleep(0.1)
    result["calls_left_after_drain"] = len(centre.calls)
    await centre.engine.store.aflush()  # the CDRs are written in batches
    result["cdr_end_reasons"] = end_reasons(centre, since)
    return result


def end_reasons(centre: Any, since: float) -> dict[str, int]:
    """How the phase's calls ended, from the engine's CDR rows (a call the engine dropped shows here)."""
    import sqlite3

    path = centre.engine.config.resolve_path(centre.engine.config.store.path)
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT end_reason, COUNT(*) FROM cdr WHERE start_ts >= ? GROUP BY end_reason",
                          (since,)).fetchall()
    finally:
        db.close()
    return {reason: n for reason, n in rows}


async def run_engine_phases(args: argparse.Namespace) -> dict[str, Any]:
    from engine.app import Engine
    from engine.callpath import CallCentre
    from engine.config import parse_config

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ivr-callers-"))
    os.environ.setdefault("CTIENGINE_TTS_CACHE", str(tmp / "tts"))
    sip_port, ctl_port = free_port(), free_port()
    cfg_path = tmp / "engine.toml"
    cfg_path.write_text(engine_config(tmp, sip_port, ctl_port, max(args.calls, args.baseline)))
    config = parse_config(cfg_path.read_text(), str(cfg_path))
    centre = CallCentre()
    engine = Engine(config, services=[centre])
    await engine.start()
    if args.slow_events:
        centre.media._batch_events = False  # the per-packet path for RFC 4733 events, for comparison
    if args.per_player_prompts or args.compare_prompts:
        centre.media._batch_prompts = False  # one source.read() per player per tick, for comparison
    centre.media._bench_stage_cpu = instrument_stages(centre.media)
    phases: dict[str, Any] = {}
    try:
        # Warm the TTS cache (espeak-ng runs once per prompt) outside the measurement.
        from engine.ivrbridge import prompt_audio
        from ivr.actions import PromptItem
        for text in ("For sales, press 1. For support, press 2.",
                     "For a new contract, press 1. To upgrade your plan, press 2.",
                     "Our opening hours are eight to six, Monday to Friday."):
            await asyncio.get_running_loop().run_in_executor(None, prompt_audio, (PromptItem("tts", text, "en"),))
        phases["idle"] = await phase(centre, sip_port, 0, args)
        print("idle", json.dumps(phases["idle"]), flush=True)
        phases["baseline"] = await phase(centre, sip_port, args.baseline, args)
        print("baseline", json.dumps(phases["baseline"]), flush=True)
        if args.compare_prompts:
            phases["load_per_player"] = await phase(centre, sip_port, args.calls, args)
            print("load_per_player", json.dumps(phases["load_per_player"]), flush=True)
            centre.media._batch_prompts = True
        phases["load"] = await phase(centre, sip_port, args.calls, args)
        print("load", json.dumps(phases["load"]), flush=True)
    finally:
        await engine.stop()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("engine", "callers"), default="engine")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--baseline", type=int, default=50)
    parser.add_argument("--measure-s", type=float, default=12.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--ramp-per-s", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="(callers role) how long callers stay")
    parser.add_argument("--sip-port", type=int, default=0, help="(callers role) the engine's SIP port")
    parser.add_argument("--hold-s", type=float, default=15.0,
                        help="(callers role) seconds the callers stay after the last one was answered")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--slow-events", action="store_true",
                        help="handle RFC 4733 events on the media engine's per-packet slow path (the code before "
                             "the batch path), to compare in the same conditions")
    parser.add_argument("--per-player-prompts", action="store_true",
                        help="read every prompt player one by one (the code before the batched prompt table)")
    parser.add_argument("--compare-prompts", action="store_true",
                        help="run the load phase per-player first, then batched, in the same engine")
    parser.add_argument("--log", help="write the engine's INFO log to this file (diagnosis; costs CPU)")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.role == "callers":
        asyncio.run(asyncio.wait_for(run_callers(args), args.seconds + 60))
        return
    import logging
    logging.basicConfig(level=logging.INFO if args.log else logging.WARNING, filename=args.log or None,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = datetime.datetime.now(datetime.timezone.utc)
    phases = asyncio.run(asyncio.wait_for(run_engine_phases(args), args.timeout_s))
    out = {"date": started.isoformat(timespec="seconds"), "python": sys.version.split()[0],
           "cpus": os.cpu_count(), "args": {k: v for k, v in vars(args).items() if k != "role"}, "phases": phases}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ivr_callers-{started:%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
