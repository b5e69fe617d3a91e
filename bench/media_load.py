"""Load driver: concurrent bridged calls over real UDP on loopback, every call recorded.

Run (bounded: at most ``--max-calls`` calls, ``--seconds`` per step)::

    .venv/bin/python -m bench.media_load --modes batched,perpacket --calls 100,250,500,750,1000,1250

Two processes:

* the **engine** (``--role engine``, started by the driver with
  ``start_new_session``): a :class:`media.engine.MediaEngine` on uvloop with
  ``N`` calls, each two legs (caller, agent) in a two-party room with a
  stereo recorder member (:class:`media.recorder.Recorder`, μ-law WAV in
  per-day folders under ``bench/results/media_load_rec``).  It reports its
  tick durations (p50/p99/max), late and skipped ticks and its CPU use over
  the measured window.
* the **driver** (this process): all ``2N`` phones in one process and one UDP
  socket.  Each 20 ms it builds every phone's PCMU packet with numpy (a 400 Hz
  tone from callers, 700 Hz from agents) and sends them in one
  ``send_batch`` (``sendmmsg``, 64 per syscall), then drains what the engine
  sent back with ``recv_batch`` (``recvmmsg``).  Per engine leg it counts
  packets, sequence gaps (lost) and packets more than ``--late-ms`` behind
  that leg's own best schedule (late).  It can generate far more than the
  engine can take (``--driver-only`` measures that ceiling).

Engine modes compared (``--modes``):

* ``batched`` -- the engine as shipped: Cython ``recvmmsg``/``sendmmsg``.
* ``pure`` -- the same engine with ``CTIENGINE_PUREPYTHON=1`` (the pure twin
  of :mod:`media.rtpio`: a Python ``recvfrom_into``/``sendto`` per packet).
* ``perpacket`` -- plain asyncio style: a ``DatagramProtocol`` per leg,
  ``datagram_received`` per packet and ``transport.sendto`` per packet, the
  same numpy tick in between.

A step passes when the engine's p99 tick time is under 10 ms and the driver
saw no lost and no late packets.  Results go to
``bench/results/media_load.json``; ``--png`` draws tick time and CPU against
calls.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FRAME = 160
PACKET = 172


# --------------------------------------------------------------------------- engine side


def _engine_main(mode: str, record_dir: str | None) -> None:
    import faulthandler
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <engine pid>`: every thread's stack on stderr
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_engine_async(mode, record_dir))


def _make_engine(mode: str):
    from media.engine import MediaConfig, MediaEngine

    cfg = MediaConfig(port_range=None, rtp_timeout_s=0, rtcp_interval_s=5.0)
    if mode != "perpacket":
        return MediaEngine(cfg)

    class PerPacketEngine(MediaEngine):
        """Same tick, but per-packet asyncio IO (DatagramProtocol + transport.sendto)."""

        def __init__(self, config) -> None:
            super().__init__(config)
            self.pending: list[tuple[int, bytes]] = []
            self.transports: dict[int, asyncio.DatagramTransport] = {}

        async def attach(self, leg) -> None:
            engine = self
            slot = leg.slot

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    engine.pending.append((slot, data))

            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Proto, sock=leg.sock)
            self.transports[leg.sock.fileno()] = transport

        def _receive(self, now: float) -> None:
            pending, self.pending = self.pending, []
            if not pending:
                return
            buf = self._recv
            index = {int(s): i for i, s in enumerate(self._rx_slots)}
            n = 0
            for slot, data in pending:
                i = index.get(slot)
                if i is None:
                    continue
                size = min(len(data), buf.slot)
                buf.data[n, :size] = np.frombuffer(data, np.uint8, size)
                buf.lengths[n] = size
                buf.owners[n] = i
                n += 1
                if n == buf.capacity:
                    self._classify(n, now)
                    n = 0
            if n:
                self._classify(n, now)

        def _transmit(self, fds, pkt, lengths, ips, ports) -> int:
            host = None
            for i in range(len(fds)):
                t = self.transports.get(int(fds[i]))
                if t is None:
                    continue
                if host is None:
                    host = socket.inet_ntoa(int(ips[i]).to_bytes(4, "big"))
                t.sendto(pkt[i, : lengths[i]].tobytes(), (host, int(ports[i])))
            return len(fds)

    return PerPacketEngine(cfg)


async def _engine_async(mode: str, record_dir: str | None) -> None:
    from media.recorder import Recorder
    from media.rtpio import IMPLEMENTATION

    loop = asyncio.get_running_loop()
    engine = _make_engine(mode)
    recorder = Recorder(record_dir, fmt="wav-ulaw", stereo=True, queue_ticks=500) if record_dir else None
    await engine.start()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    calls = 0
    cpu0 = wall0 = 0.0

    def reply(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "rtpio": IMPLEMENTATION, "loop": type(loop).__module__})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "setup":
            host, port = cmd["remote"]
            ports = []
            now = datetime.datetime.now(datetime.timezone.utc)
            for c in range(calls, calls + cmd["calls"]):
                for role in ("caller", "agent"):
                    leg = engine.create_leg(f"{role}{c}", call_id=f"load-{c}", remote=(host, port))
                    if mode == "perpacket":
                        await engine.attach(leg)
                    ports.append(leg.local_port)
                engine.create_room(f"call{c}")
                engine.join(f"call{c}", f"caller{c}")
                engine.join(f"call{c}", f"agent{c}")
                engine.apply_hear_set(f"call{c}", "two_party", caller=f"caller{c}", agent=f"agent{c}")
                if recorder is not None:
                    rid = recorder.start(f"load-{c}", now)
                    engine.record(f"call{c}", f"rec{c}", recorder, [[f"caller{c}"], [f"agent{c}"]], recording_id=rid)
            calls += cmd["calls"]
            reply({"ports": ports})
        elif op == "measure_start":
            engine.tick_stats.reset()
            c0 = engine.clock.late_ticks if engine.clock else 0
            s0 = engine.clock.skipped_ticks if engine.clock else 0
            cpu0, wall0 = time.process_time(), time.monotonic()
            reply({"ok": True})
        elif op == "measure_stop":
            cpu = time.process_time() - cpu0
            wall = time.monotonic() - wall0
            ts = engine.tick_stats
            reply({
                "ticks": ts.count,
                "tick_p50_ms": ts.percentile_ms(50),
                "tick_p99_ms": ts.percentile_ms(99),
                "tick_max_ms": ts.max_ms(),
                "tick_cpu_p50_ms": ts.percentile_ms(50, "cpu"),
                "tick_cpu_p99_ms": ts.percentile_ms(99, "cpu"),
                "lateness_p99_ms": ts.percentile_ms(99, "lateness"),
                "late_ticks": engine.clock.late_ticks - c0,
                "skipped_ticks": engine.clock.skipped_ticks - s0,
                "engine_cpu_pct": 100.0 * cpu / wall,
                "engine_cpu_ms_per_tick": 1000.0 * cpu / max(1, ts.count),
                "loadavg_1m": os.getloadavg()[0],
                "recorder_frames": recorder.frames_written if recorder else 0,
            })
        elif op == "teardown":
            # stop every recording and check the files; the legs go with the process
            futures = [engine.stop_recording(f"call{c}", f"rec{c}") for c in range(calls)] if recorder else []
            results = [f.result(timeout=30) for f in futures]
            calls = 0
            reply({"recordings": len(results), "errors": sum(1 for r in results if r.error),
                   "bytes": sum(r.path.stat().st_size for r in results if r.path and r.path.exists())})
        elif op == "quit":
            break
    await engine.stop()
    if recorder is not None:
        recorder.close()


# --------------------------------------------------------------------------- driver side


class Phones:
    """2N phones on one socket: batched sends, batched receives, per-leg accounting."""

    def __init__(self, engine_ports: list[int], late_ms: float) -> None:
        from media import g711, rtpio

        self.rtpio = rtpio
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # SO_RCVBUFFORCE (33) / SO_SNDBUFFORCE (32) pass rmem_max when root;
        # else the plain options (capped by /proc/sys/net/core/rmem_max)
        for opt, size in ((33, 64 << 20), (socket.SO_RCVBUF, 64 << 20), (32, 16 << 20), (socket.SO_SNDBUF, 16 << 20)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, size)
            except OSError:
                continue
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.late_s = late_ms / 1000
        self.set_ports(engine_ports)
        t = np.arange(8000)
        tones = []
        for f in (400.0, 700.0):
            pcm = np.round(6000 * np.sin(2 * np.pi * f * t / 8000)).astype(np.int16)
            tones.append(g711.ulaw_encode(pcm).reshape(50, FRAME))
        self.tones = tones
        self.rx = rtpio.RecvBuffers(16384, 256)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def set_ports(self, engine_ports: list[int]) -> None:
        n = len(engine_ports)
        self.n = n
        self.ports = np.array(engine_ports, np.int32)
        self.fds = np.full(n, self.sock.fileno(), np.int32)
        self.ips = np.full(n, 0x7F000001, np.uint32)
        rng = np.random.default_rng(1)
        self.ssrc = rng.integers(0, 2**32, n, dtype=np.uint32)
        self.seq = rng.integers(0, 2**16, n).astype(np.int64)
        self.ts = rng.integers(0, 2**32, n).astype(np.int64)
        self.buf = np.zeros((n, PACKET), np.uint8)
        self.lengths = np.full(n, PACKET, np.int32)
        self.lut = np.full(65536, -1, np.int64)
        self.lut[self.ports] = np.arange(n)
        self.is_agent = (np.arange(n) % 2) == 1
        self.reset_counters()

    def reset_counters(self) -> None:
        n = self.n
        self.last_seq = np.full(n, -1, np.int64)
        self.received = np.zeros(n, np.int64)
        self.lost = np.zeros(n, np.int64)
        self.late = np.zeros(n, np.int64)
        self.best = np.full(n, np.inf)
        self.first_seq_ext = np.full(n, -1, np.int64)
        self.ext = np.zeros(n, np.int64)
        self.sent = 0
        self.bad = 0

    def send(self, k: int) -> None:
        n = self.n
        frames = np.where(self.is_agent[:, None], self.tones[1][k % 50], self.tones[0][k % 50])
        hdr = np.empty((n, 3), ">u4")
        hdr[:, 0] = (0x80 << 24) | (self.seq & 0xFFFF)
        hdr[:, 1] = self.ts & 0xFFFFFFFF
        hdr[:, 2] = self.ssrc
        self.buf[:, :12] = hdr.view(np.uint8).reshape(n, 12)
        self.buf[:, 12:] = frames
        self.sent += self.rtpio.send_batch(self.fds, self.buf, self.lengths, self.ips, self.ports)
        self.seq += 1
        self.ts += FRAME

    def receive(self, now: float, count: bool) -> int:
        total = 0
        fds = np.array([self.sock.fileno()], np.int32)
        while True:
            m = self.rx.receive(fds, self.rx.capacity)
            total += m
            if m and count:
                self._account(m, now)
            if m < self.rx.capacity:
                return total

    def _account(self, m: int, now: float) -> None:
        d = self.rx.data[:m]
        leg = self.lut[self.rx.ports[:m]]
        ok = (leg >= 0) & (self.rx.lengths[:m] >= 12)
        self.bad += int((~ok).sum())
        leg = leg[ok]
        d = d[ok]
        seq = (d[:, 2].astype(np.int64) << 8) | d[:, 3]
        if not len(leg):
            return
        # the r-th packet of every leg in this batch, r = 0, 1, ... (arrival order per leg)
        order = np.argsort(leg, kind="stable")
        ls = leg[order]
        starts = np.r_[0, np.flatnonzero(ls[1:] != ls[:-1]) + 1]
        rank = np.arange(len(ls)) - np.repeat(starts, np.diff(np.r_[starts, len(ls)]))
        for r in range(int(rank.max()) + 1):
            sel = order[rank == r]
            lg = leg[sel]
            sq = seq[sel]
            prev = self.last_seq[lg]
            new = prev < 0
            diff = np.where(new, 1, (sq - prev) & 0xFFFF)
            gap = np.where((diff > 1) & (diff < 0x8000), diff - 1, 0)
            self.lost[lg] += gap
            self.ext[lg] = np.where(new, 0, self.ext[lg] + diff)
            self.last_seq[lg] = sq
            self.received[lg] += 1
            # lateness: arrival against this leg's best (earliest) schedule offset
            offset = now - self.ext[lg] * 0.020
            self.best[lg] = np.minimum(self.best[lg], offset)
            self.late[lg] += (offset - self.best[lg]) > self.late_s

    def close(self) -> None:
        self.sock.close()


def _engine_process(mode: str, record_dir: pathlib.Path | None) -> subprocess.Popen:
    env = dict(os.environ)
    if mode == "pure":
        env["CTIENGINE_PUREPYTHON"] = "1"
    else:
        env.pop("CTIENGINE_PUREPYTHON", None)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.media_load", "--role", "engine", "--mode", mode,
         "--record-dir", str(record_dir) if record_dir else ""],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT), env=env, start_new_session=True, text=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.write(json.dumps({"op": "quit"}) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _ask(proc: subprocess.Popen, obj: dict | None, wait: bool = True) -> dict | None:
    if obj is not None:
        proc.stdin.write(json.dumps(obj) + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    if not wait:
        return None
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"engine process exited (code {proc.poll()})")
    return json.loads(line)


def _drive(phones: Phones, seconds: float, measure: tuple[float, float] | None, proc: subprocess.Popen | None) -> dict:
    """Run the phones for ``seconds``; count only within ``measure`` (start, end) offsets."""
    t0 = time.monotonic()
    k = 0
    counting = False
    started = stopped = False
    driver_cpu0 = 0.0
    behind = 0
    while True:
        now = time.monotonic()
        el = now - t0
        if el >= seconds:
            break
        deadline = t0 + k * 0.020
        if now < deadline:
            phones.receive(now, counting)
            time.sleep(min(0.002, deadline - now))
            continue
        if now - deadline > 0.020:
            behind += 1
        phones.send(k)
        k += 1
        if measure and not started and el >= measure[0]:
            started = True
            phones.reset_counters()
            counting = True
            driver_cpu0 = time.process_time()
            mt0 = now
            if proc is not None:
                _ask(proc, {"op": "measure_start"}, wait=False)
        if measure and started and not stopped and el >= measure[1]:
            stopped = True
            counting = False
            driver_cpu = time.process_time() - driver_cpu0
            mwall = now - mt0
            if proc is not None:
                _ask(proc, {"op": "measure_stop"}, wait=False)
        phones.receive(time.monotonic(), counting)
    res = {
        "driver_sent": int(phones.sent),
        "driver_received": int(phones.received.sum()),
        "lost": int(phones.lost.sum()),
        "late": int(phones.late.sum()),
        "silent_legs": int((phones.received == 0).sum()),
        "driver_behind_ticks": behind,
    }
    if measure and stopped:
        res["driver_cpu_pct"] = 100.0 * driver_cpu / mwall
        res["measured_s"] = mwall
    return res


def run_mode(mode: str, ladder: list[int], seconds: float, late_ms: float, keep_going: int,
             record: bool = True) -> list[dict]:
    record_dir = RESULTS / "media_load_rec" if record else None
    if record_dir:
        shutil.rmtree(record_dir, ignore_errors=True)
    proc = _engine_process(mode, record_dir)
    rows = []
    try:
        hello = _ask(proc, None)
        print(f"[{mode}] engine ready: {hello}", flush=True)
        phones = Phones([], late_ms)
        failures = 0
        have = 0
        for calls in ladder:
            res = _ask(proc, {"op": "setup", "calls": calls - have, "remote": list(phones.address)})
            have = calls
            ports = list(getattr(phones, "ports", [])) + res["ports"]  # type: ignore[index]
            phones.set_ports(ports)
            warm = 1.5
            step = _drive(phones, warm + seconds + 0.3, (warm, warm + seconds), proc)
            _ask(proc, None)  # measure_start's reply
            eng = _ask(proc, None)  # measure_stop's figures
            row = {"mode": mode, "record": record, "calls": calls, **eng, **step}  # type: ignore[dict-item]
            # fewer ticks than the window holds (a stopped clock, or one skipping ticks): a stopped
            # engine has no slow tick and no sequence gap to count, and once read as a pass
            expected = row.get("measured_s", seconds) / 0.020
            row["ticks_missing"] = bool(row["ticks"] < 0.9 * expected or row["driver_received"] < 0.9 * expected * 2 * calls)
            row["pass"] = bool(row["tick_p99_ms"] < 10.0 and row["lost"] == 0 and row["late"] == 0
                               and row["silent_legs"] == 0 and not row["ticks_missing"])
            # the same test on the tick's own CPU time, which other processes on a shared machine do not inflate
            row["pass_cpu"] = bool(row["tick_cpu_p99_ms"] < 10.0 and row["lost"] == 0 and row["silent_legs"] == 0
                                   and not row["ticks_missing"])
            rows.append(row)
            print(f"[{mode}] {calls:5d} calls: p50 {row['tick_p50_ms']:.2f} ms  p99 {row['tick_p99_ms']:.2f} ms  "
                  f"max {row['tick_max_ms']:.1f} ms  tick CPU p99 {row['tick_cpu_p99_ms']:.2f} ms  engine CPU {row['engine_cpu_pct']:.0f}%  "
                  f"driver CPU {row.get('driver_cpu_pct', 0):.0f}%  lost {row['lost']} late {row['late']}  "
                  f"ticks {row['ticks']} rx {row['driver_received']}{' TICKS MISSING' if row['ticks_missing'] else ''}  "
                  f"{'PASS' if row['pass'] else 'FAIL'} (cpu criterion {'PASS' if row['pass_cpu'] else 'FAIL'})", flush=True)
            if not row["pass_cpu"]:
                failures += 1
                if failures > keep_going:
                    break
        td = _ask(proc, {"op": "teardown"})
        print(f"[{mode}] teardown: {td}", flush=True)
        if rows:
            rows[-1]["teardown"] = td
        phones.close()
    finally:
        _stop(proc)
        if record_dir:
            shutil.rmtree(record_dir, ignore_errors=True)
    return rows


def driver_only(calls: int, seconds: float) -> dict:
    """The driver's own ceiling: send to a sink socket that nobody reads (kernel drops)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    phones = Phones([port] * (2 * calls), 20)
    cpu0, t0 = time.process_time(), time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        phones.send(k)
        k += 1
    wall = time.monotonic() - t0
    res = {"calls": calls, "packets_per_s": phones.sent / wall, "cpu_pct": 100 * (time.process_time() - cpu0) / wall}
    phones.close()
    sink.close()
    return res


def tick_breakdown(calls: int, ticks: int, record: bool) -> dict:
    """Where one tick's time goes, in process (the phones' own work is not timed).

    Times each stage of :meth:`MediaEngine.run_tick` with ``perf_counter`` and
    ``thread_time`` (CPU of the ticking thread only; the recorder's worker
    thread is apart) over ``ticks`` ticks after a warm-up.
    """
    import tempfile

    from media.engine import MediaConfig, MediaEngine
    from media.recorder import Recorder

    sys.setswitchinterval(0.0005)
    engine = MediaEngine(MediaConfig(port_range=None, rtp_timeout_s=0, rtcp_interval_s=5.0))
    phones = Phones([], 20)
    tmp = tempfile.mkdtemp(dir=RESULTS)
    recorder = Recorder(tmp, fmt="wav-ulaw", stereo=True, queue_ticks=500) if record else None
    ports = []
    now_dt = datetime.datetime.now(datetime.timezone.utc)
    for c in range(calls):
        for role in ("caller", "agent"):
            ports.append(engine.create_leg(f"{role}{c}", remote=phones.address).local_port)
        engine.create_room(f"call{c}")
        engine.join(f"call{c}", f"caller{c}")
        engine.join(f"call{c}", f"agent{c}")
        if recorder is not None:
            rid = recorder.start(f"b{c}", now_dt)
            engine.record(f"call{c}", f"rec{c}", recorder, [[f"caller{c}"], [f"agent{c}"]], recording_id=rid)
    phones.set_ports(ports)
    stages = ("receive", "playout", "players", "mix", "record", "send", "housekeeping")
    wall = {k: [] for k in stages + ("total",)}
    cpu = {k: [] for k in stages + ("total",)}
    transmit = []
    orig_transmit = engine._transmit

    def timed_transmit(*a):  # the sendmmsg part of "send"
        t = time.perf_counter()
        r = orig_transmit(*a)
        transmit.append(time.perf_counter() - t)
        return r

    engine._transmit = timed_transmit  # type: ignore[method-assign]
    for k in range(ticks + 25):
        phones.send(k)
        now = 100.0 + 0.02 * k
        if engine._dirty:
            engine._compile()
        marks = [(time.perf_counter(), time.thread_time())]
        engine._receive(now); marks.append((time.perf_counter(), time.thread_time()))
        engine._playout(k, now); marks.append((time.perf_counter(), time.thread_time()))
        engine._read_players(); marks.append((time.perf_counter(), time.thread_time()))
        out = engine._mixer.mix(engine._inputs, engine._mix_out); marks.append((time.perf_counter(), time.thread_time()))
        engine._record(out); marks.append((time.perf_counter(), time.thread_time()))
        engine._send(k, out); marks.append((time.perf_counter(), time.thread_time()))
        engine._housekeeping(k, now); marks.append((time.perf_counter(), time.thread_time()))
        engine._deliver()
        if k >= 25:
            for i, name in enumerate(stages):
                wall[name].append(marks[i + 1][0] - marks[i][0])
                cpu[name].append(marks[i + 1][1] - marks[i][1])
            wall["total"].append(marks[-1][0] - marks[0][0])
            cpu["total"].append(marks[-1][1] - marks[0][1])
        phones.receive(time.monotonic(), False)
        time.sleep(0.002)  # let the recorder thread run, as between real ticks
    engine.close()
    if recorder is not None:
        recorder.close()
    phones.close()
    shutil.rmtree(tmp, ignore_errors=True)
    res = {"calls": calls, "record": record, "ticks": ticks}
    for name in stages + ("total",):
        res[f"{name}_ms"] = 1000 * float(np.median(wall[name]))
        res[f"{name}_cpu_ms"] = 1000 * float(np.median(cpu[name]))
    res["sendmmsg_ms"] = 1000 * float(np.median(transmit[-ticks:]))
    res["total_p99_ms"] = 1000 * float(np.percentile(wall["total"], 99))
    return res


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in dict.fromkeys(r["mode"] + ("" if r.get("record", True) else " (no rec)") for r in rows):
        rs = [r for r in rows if r["mode"] + ("" if r.get("record", True) else " (no rec)") == mode]
        x = [r["calls"] for r in rs]
        ax1.plot(x, [r["tick_p99_ms"] for r in rs], "o-", label=f"{mode} p99")
        ax1.plot(x, [r["tick_cpu_p99_ms"] for r in rs], "s:", label=f"{mode} CPU p99", alpha=0.8)
        ax2.plot(x, [r["engine_cpu_pct"] for r in rs], "o-", label=f"{mode} engine")
        ax2.plot(x, [r.get("driver_cpu_pct", 0) for r in rs], "x--", label=f"{mode} driver", alpha=0.6)
    ax1.axhline(10, color="red", lw=0.8, ls=":")
    ax1.set_xlabel("bridged calls (2 legs each, recorded)")
    ax1.set_ylabel("tick time (ms)")
    ax1.set_title("media tick time")
    ax1.legend(fontsize=7)
    ax2.axhline(100, color="red", lw=0.8, ls=":")
    ax2.set_xlabel("bridged calls")
    ax2.set_ylabel("CPU (% of one core)")
    ax2.set_title("CPU")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", default="driver", choices=["driver", "engine"])
    ap.add_argument("--mode", default="batched")
    ap.add_argument("--record-dir", default=str(RESULTS / "media_load_rec"))
    ap.add_argument("--modes", default="batched,perpacket")
    ap.add_argument("--calls", default="100,250,500,750,1000,1250,1500")
    ap.add_argument("--max-calls", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--late-ms", type=float, default=20.0)
    ap.add_argument("--keep-going", type=int, default=1, help="failed steps to run before stopping a mode")
    ap.add_argument("--out", default=str(RESULTS / "media_load.json"))
    ap.add_argument("--png", default="")
    ap.add_argument("--breakdown", action="store_true", help="in-process per-stage tick times for --calls")
    ap.add_argument("--no-record", action="store_true", help="do not record the calls")
    ap.add_argument("--driver-only", type=int, default=0, help="measure the driver alone with this many calls")
    args = ap.parse_args(argv)
    if args.role == "engine":
        _engine_main(args.mode, args.record_dir or None)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.breakdown:
        out = [tick_breakdown(int(c), 100, not args.no_record) for c in args.calls.split(",")]
        for r in out:
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
        pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
        return
    if args.driver_only:
        print(json.dumps(driver_only(args.driver_only, args.seconds)))
        return
    ladder = [c for c in (int(x) for x in args.calls.split(",")) if c <= args.max_calls]
    rows: list[dict] = []
    for mode in args.modes.split(","):
        rows += run_mode(mode, ladder, args.seconds, args.late_ms, args.keep_going, not args.no_record)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "seconds_per_step": args.seconds,
            "late_ms": args.late_ms}
    pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.png:
        plot(rows, pathlib.Path(args.png))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
