"""Call-rate ladder through the whole inbound path, with media and recording on.

    python -m bench.inbound_ladder [--rates 2,4,8,16,24,32] [--rung-s 8] [--hold-s 3] [--agents 120]
                                   [--baseline-rates 250,500,1000]

The engine (``Engine`` + ``CallCentre``, uvloop, in this process so the media
clock's tick statistics can be read) takes calls from a SIPp trunk and
offers them through one ACD queue to ``--agents`` agents, all logged in and
ready, whose extensions are registered (third-party REGISTER with digest)
with contacts at one SIPp UAS process: the agent phones.  Per call:

* trunk (SIPp UAC): INVITE with PCMU SDP → 200 (the engine answers at once,
  music on hold) → ACK → streams a 1 kHz tone (``rtp_stream``) → after
  ``--hold-s`` seconds BYE;
* engine: enqueue → ACD offer → INVITE to a phone → 200 → caller and agent
  bridged in a room, recorded (stereo WAV, ``[recording] mode = "all"``) →
  caller's BYE → BYE to the phone → CDR, queue log, agent state log →
  wrap-up 0 s → ready again;
* phone (SIPp UAS): answers at once (200 with SDP), streams a 600 Hz tone,
  answers the BYE.

A rung runs ``rate × rung_s`` calls at ``rate`` calls/s.  It is *clean*
when the SIPp caller exits 0 with zero failed calls and every call of the
rung got a CDR with disposition ``answered`` (no call waited past its
hold time for an agent, none was lost).  During the rung the media clock's
ticks are counted: a *late tick* is one that started at least one packet
time (20 ms) after its deadline, i.e. media left late (on a shared
machine mostly because another process had the core); a tick whose own
CPU time reached 20 ms is counted apart (the engine itself could not keep
up, whatever the load).  The peak of calls
in progress is sampled every 100 ms.  The ladder stops at the first
unclean rung.  Results: the highest clean calls/s and the most concurrent
calls of a rung with zero late ticks.

Baseline in the same run: ``bench.sip_ladder``'s signalling-only ladder of
the SIP stack's UAS (``python -m sip.uas``: INVITE/200/ACK/BYE, no media,
no ACD) at ``--baseline-rates``.

Bounded: every SIPp run has ``-m`` and ``-timeout``; processes are started
in their own sessions and stopped by PID.  Raw results:
``bench/results/inbound_ladder.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from typing import Any

from bench.sip_ladder import cpu_seconds, free_port, ladder, stop

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOMAIN = "bench.test"
PASSWORD = "bench-pw"
DIALED = "+4930999000"
LATE_TICK_S = 0.020

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="inbound_caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+4917[call_number]@[local_ip]>;tag=[pid]caller[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true" />
  <recv response="180" optional="true" />
  <recv response="200" rtd="true" />
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec rtp_stream="caller.ul,-1,0" /></action></nop>
  <pause milliseconds="HOLD_MS" />
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" />
</scenario>
"""

UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent_phone">
  <recv request="INVITE" crlf="true" />
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]phone[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phone 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
    ]]>
  </send>
  <recv request="ACK" crlf="true" />
  <nop><action><exec rtp_stream="phone.ul,-1,0" /></action></nop>
  <recv request="BYE" timeout="120000" />
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def engine_config(tmp: pathlib.Path, sip_port: int, agents: int) -> str:
    from engine.passwords import hash_password

    h = hash_password(PASSWORD, n=1024)
    agent_tables = "".join(f'\n[agents.{1000 + i}]\nname = "A{i}"\npassword = "{h}"\nextension = "{3000 + i}"\n'
                           f'groups = ["g"]\n' for i in range(agents))
    return f"""
[engine]
name = "inbound-ladder"
log_level = "WARNING"

[sip]
domain = "{DOMAIN}"
listen = [ {{ transport = "udp", host = "127.0.0.1", port = {sip_port} }} ]

[media]
host = "127.0.0.1"
rtp_port_min = 30000
rtp_port_max = 40000

[store]
path = "{tmp}/bench.db"

[recording]
mode = "all"
path = "{tmp}/recordings"

[groups.g]
{agent_tables}
[trunks.sipp]
host = "127.0.0.1"
accept_networks = ["127.0.0.0/8"]

[queues.q]
groups = ["g"]
ring_timeout_s = 5
wrapup_s = 0

[[routes]]
dialed_number = "{DIALED}"
destination = "queue:q"
"""


def start_sipp(args: list[str], cwd: pathlib.Path, name: str) -> subprocess.Popen:
    log = open(cwd / f"{name}.log", "wb")
    proc = subprocess.Popen(["sipp", *args, "-nostdin"], cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def tone(path: pathlib.Path, hz: int) -> None:
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-t", "ul", str(path), "synth", "4", "sine", str(hz),
                    "vol", "0.4"], check=True, timeout=30)


async def register_all(engine_port: int, extensions: list[str], contact_port: int) -> None:
    from sip.auth import DigestClient
    from sip.events import ResponseReceived
    from sip.useragent import SipEndpoint

    ep = SipEndpoint("127.0.0.1", 0, tcp=False, user="bench")
    await ep.start()
    try:
        for ext in extensions:
            uri, aor = f"sip:{DOMAIN}", f"<sip:{ext}@{DOMAIN}>"
            headers = [("Contact", f"<sip:{ext}@127.0.0.1:{contact_port}>"), ("Expires", "3600")]
            call_id = f"reg-{ext}-{time.monotonic_ns()}"
            for cseq in (1, 2):
                ep.request("REGISTER", uri, from_=aor, to=aor, call_id=call_id, cseq=cseq, headers=headers,
                           dest=("127.0.0.1", engine_port))
                while True:
                    ev = await ep.next_event(10.0)
                    if isinstance(ev, ResponseReceived) and ev.response.status_code >= 200:
                        break
                if ev.response.status_code != 401:
                    break
                name, value = DigestClient(ext, PASSWORD).authorize(ev.response.headers, "REGISTER", uri)
                headers = headers[:2] + [(name, value)]
            if ev.response.status_code != 200:
                raise RuntimeError(f"REGISTER {ext}: {ev.response.status_code}")
    finally:
        await ep.stop()


async def rung(centre: Any, store: Any, sip_port: int, rate: int, seconds: float, hold_s: float,
               workdir: pathlib.Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    calls = max(1, int(rate * seconds))
    answered0 = len(await store.aselect("cdr", {"disposition": "answered"}, limit=10_000_000))
    total0 = store.count("cdr")
    stats = centre.media.tick_stats
    ticks0 = stats.count
    stat = workdir / f"rung_{rate}.csv"
    scen = workdir / "uac.xml"
    scen.write_text(UAC.replace("HOLD_MS", str(int(hold_s * 1000))))
    timeout_s = int(seconds + hold_s * 3 + 30)
    cpu0, t0 = cpu_seconds(os.getpid()), time.monotonic()
    proc = start_sipp(["-sf", str(scen), f"127.0.0.1:{sip_port}", "-s", DIALED, "-i", "127.0.0.1",
                       "-p", str(free_port()), "-mp", str(free_port()), "-r", str(rate), "-rp", "1000",
                       "-m", str(calls), "-l", "100000", "-buff_size", "4194304", "-recv_timeout", "15000",
                       "-timeout", str(timeout_s), "-timeout_error", "-trace_stat", "-stf", str(stat), "-fd", "1"],
                      workdir, f"uac_{rate}")
    peak = 0
    late = slow = 0
    seen = ticks0
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout_s + 10:
            await asyncio.sleep(0.1)
            peak = max(peak, len(centre.calls))
            late, slow, seen = late + _late_since(stats, seen), slow + _late_since(stats, seen, "cpu"), stats.count
    finally:
        stop(proc)
    for _ in range(100):  # the last CDRs are written after the final BYE
        if store.count("cdr") >= total0 + calls or not centre.calls:
            break
        await asyncio.sleep(0.1)
    await loop.run_in_executor(None, store.flush)
    late += _late_since(stats, seen)
    slow += _late_since(stats, seen, "cpu")
    wall, cpu = time.monotonic() - t0, cpu_seconds(os.getpid()) - cpu0
    rows = list(csv.DictReader(open(stat), delimiter=";")) if stat.exists() else []
    row = rows[-1] if rows else {}
    ok = int(row.get("SuccessfulCall(C)", 0) or 0)
    failed = int(row.get("FailedCall(C)", 0) or 0)
    answered = len(await store.aselect("cdr", {"disposition": "answered"}, limit=10_000_000)) - answered0
    clean = proc.returncode == 0 and failed == 0 and ok == calls and answered == calls
    return {"rate": rate, "calls": calls, "sipp_ok": ok, "sipp_failed": failed, "sipp_rc": proc.returncode,
            "cdr_answered": answered, "peak_concurrent": peak, "ticks": stats.count - ticks0, "late_ticks": late,
            "cpu_over_ptime_ticks": slow, "p99_tick_cpu_ms": round(stats.percentile_ms(99, "cpu"), 2),
            "p99_tick_ms": round(stats.percentile_ms(99), 2), "max_lateness_ms": round(stats.max_ms("lateness"), 1),
            "wall_s": round(wall, 1), "engine_cpu_s": round(cpu, 2),
            "cpu_ms_per_call": round(cpu / max(calls, 1) * 1e3, 2), "clean": clean}


def _late_since(stats: Any, seen: int, which: str = "lateness") -> int:
    """Ticks recorded after tick number ``seen`` whose ``which`` (start lateness, or the tick's own CPU
    time) is ≥ one packet time, 20 ms (ring buffer of ``stats.size``)."""
    new = min(stats.count - seen, stats.size)
    if new <= 0:
        return 0
    idx = [(stats.count - 1 - k) % stats.size for k in range(new)]
    return int((getattr(stats, which)[idx] >= LATE_TICK_S).sum())


async def inbound(rates: list[int], seconds: float, hold_s: float, agents: int) -> dict[str, Any]:
    from engine.app import Engine
    from engine.callpath import CallCentre
    from engine.config import parse_config
    import engine.agent_ops  # noqa: F401

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="inbound_ladder_"))
    sip_port, phone_port = free_port(), free_port()
    cfg = parse_config(engine_config(workdir, sip_port, agents), str(workdir / "engine.toml"))
    centre = CallCentre()
    engine = Engine(cfg, services=[centre])
    tone(workdir / "caller.ul", 1000)
    tone(workdir / "phone.ul", 600)
    (workdir / "uas.xml").write_text(UAS)
    phones = None
    rungs: list[dict[str, Any]] = []
    await engine.start()
    try:
        phones = start_sipp(["-sf", str(workdir / "uas.xml"), "-i", "127.0.0.1", "-p", str(phone_port),
                             "-mp", str(free_port()), "-buff_size", "4194304", "-timeout", "3600"], workdir, "phones")
        await asyncio.sleep(0.5)
        numbers = sorted(cfg.agents)
        for n in numbers:
            await centre.login(n, PASSWORD, "")
        await register_all(sip_port, [cfg.agents[n].extension for n in numbers], phone_port)
        for n in numbers:
            centre.set_ready(centre.agents[n])
        for rate in rates:
            r = await rung(centre, engine.store, sip_port, rate, seconds, hold_s, workdir)
            rungs.append(r)
            print(f"inbound  {rate:4d}/s  calls={r['calls']:5d} ok={r['sipp_ok']:5d} failed={r['sipp_failed']:4d} "
                  f"answered={r['cdr_answered']:5d} peak={r['peak_concurrent']:4d} late_ticks={r['late_ticks']:4d} "
                  f"cpu>20ms={r['cpu_over_ptime_ticks']:3d} p99 tick={r['p99_tick_ms']:6.2f} ms "
                  f"(cpu {r['p99_tick_cpu_ms']:5.2f}) cpu/call={r['cpu_ms_per_call']:6.2f} ms  "
                  f"{'clean' if r['clean'] else 'NOT CLEAN'}", flush=True)
            if not r["clean"]:
                break
            await asyncio.sleep(hold_s + 1)
    finally:
        if phones is not None:
            stop(phones)
        await engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    clean = [r for r in rungs if r["clean"]]
    smooth = [r for r in clean if r["late_ticks"] == 0]
    self_smooth = [r for r in clean if r["cpu_over_ptime_ticks"] == 0]
    return {"agents": agents, "hold_s": hold_s, "rung_s": seconds, "rungs": rungs,
            "max_clean_rate": clean[-1]["rate"] if clean else 0,
            "max_concurrent_no_late_ticks": max((r["peak_concurrent"] for r in smooth), default=0),
            "max_concurrent_no_tick_over_ptime_cpu": max((r["peak_concurrent"] for r in self_smooth), default=0)}


def main() -> None:
    p = argparse.ArgumentParser(description="inbound call-rate ladder (trunk → queue → agent phones)")
    p.add_argument("--rates", default="2,4,8,16,24,32")
    p.add_argument("--rung-s", type=float, default=8.0)
    p.add_argument("--hold-s", type=float, default=3.0)
    p.add_argument("--agents", type=int, default=120)
    p.add_argument("--baseline-rates", default="250,500,1000")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from engine.app import install_event_loop_policy

    install_event_loop_policy()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                               "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    results["inbound"] = asyncio.run(inbound([int(x) for x in a.rates.split(",")], a.rung_s, a.hold_s, a.agents))
    results["loadavg_mid"] = os.getloadavg()
    results["baseline"] = ladder("stack", [int(x) for x in a.baseline_rates.split(",")], a.rung_s) \
        if a.baseline_rates else None
    results["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "inbound_ladder.json"
    out.write_text(json.dumps(results, indent=2))
    inb, base = results["inbound"], results["baseline"]
    print(f"\ninbound path: max clean {inb['max_clean_rate']} calls/s, "
          f"most concurrent with no late ticks {inb['max_concurrent_no_late_ticks']}, "
          f"with no tick over 20 ms of CPU {inb['max_concurrent_no_tick_over_ptime_cpu']}")
    if base:
        ratio = inb["max_clean_rate"] / base["max_clean_rate"] if base["max_clean_rate"] else float("nan")
        print(f"signalling-only SIP stack: max clean {base['max_clean_rate']} calls/s → ratio {ratio:.3f}")
    print(f"loadavg before {results['loadavg_before']}, after {results['loadavg_after']}; written {out}")


if __name__ == "__main__":
    main()
