"""Load driver: event fan-out through real control-socket connections.

    python -m bench.foundation_fanout [--clients 200] [--events 200] [--payload 200] [--loop uvloop|asyncio|both]

Starts an engine in-process (temporary store, TCP on 127.0.0.1:0), connects
N clients (raw msgpack over asyncio streams in the same process), subscribes
them, publishes M events as fast as the bus accepts them, and measures how
long until every client has received every event.  Bounded: at most 1,000
clients, 2,000 events and 8 client processes (``--procs``).  ``--loop both`` (the default) runs the same load
on the stdlib asyncio loop as the same-run baseline, then on uvloop.
Writes bench/results/foundation_fanout.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import pathlib
import tempfile
import time

import msgpack

from engine.app import Engine, install_event_loop_policy
from engine.config import parse_config
from engine.passwords import hash_password

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


async def client(host: str, port: int, n_events: int, ready: asyncio.Event, done: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
    writer.write(msgpack.packb({"id": 1, "op": "auth", "args": {"user": "bench", "password": "bench"}}))
    writer.write(msgpack.packb({"id": 2, "op": "events.subscribe", "args": {"events": ["bench.*"]}}))
    replies = 0
    got = 0
    while got < n_events:
        data = await reader.read(1 << 16)
        if not data:
            raise ConnectionError("engine closed the connection")
        unpacker.feed(data)
        for frame in unpacker:
            if "event" in frame:
                got += 1
            else:
                assert frame["ok"], frame
                replies += 1
                if replies == 2:
                    ready.set()
    done.append(time.perf_counter())
    writer.close()


def client_process(host: str, port: int, n_clients: int, n_events: int, out: "multiprocessing.Queue[object]") -> None:
    """N clients in a separate process: reports "ready", then the wall time when all events arrived."""
    async def go() -> None:
        done: list[float] = []
        readies = [asyncio.Event() for _ in range(n_clients)]
        tasks = [asyncio.create_task(client(host, port, n_events, r, done)) for r in readies]
        await asyncio.gather(*(r.wait() for r in readies))
        out.put("ready")
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        out.put(time.time())
    asyncio.run(go())


async def run(n_clients: int, n_events: int, payload: int, procs: int = 0) -> dict:
    d = tempfile.mkdtemp(prefix="ctibench")
    text = f"""
[store]
path = "{d}/bench.db"
[control]
listen = [{{ transport = "tcp", host = "127.0.0.1", port = 0 }}]
write_buffer_bytes = 4194304
event_queue_max = 100000
[users.bench]
password = "{hash_password('bench', n=1024)}"
role = "admin"
"""
    engine = Engine(parse_config(text, os.path.join(d, "bench.toml")))
    await engine.start()
    try:
        host, port = engine.control_servers[0].address
        loop = asyncio.get_running_loop()
        done: list[float] = []
        body = {"blob": "x" * payload}
        if procs:
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            workers = [ctx.Process(target=client_process, args=(host, port, n_clients // procs, n_events, queue))
                       for _ in range(procs)]
            for w in workers:
                w.start()
            for _ in workers:
                assert await loop.run_in_executor(None, queue.get, True, 120) == "ready"
        else:
            readies = [asyncio.Event() for _ in range(n_clients)]
            tasks = [asyncio.create_task(client(host, port, n_events, r, done)) for r in readies]
            await asyncio.gather(*(r.wait() for r in readies))
        start = time.perf_counter()
        wall_start = time.time()
        for i in range(n_events):
            engine.bus.publish("bench.tick", body | {"i": i})
            if i % 10 == 9:
                await asyncio.sleep(0)  # let the loop write and the clients read
        publish_s = time.perf_counter() - start
        if procs:
            ends = [await loop.run_in_executor(None, queue.get, True, 120) for _ in workers]
            for w in workers:
                w.join(10)
            total_s = max(ends) - wall_start  # type: ignore[operator]
            n_clients = (n_clients // procs) * procs
        else:
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            total_s = max(done) - start
    finally:
        await engine.stop()
    deliveries = n_clients * n_events
    return {"date": time.strftime("%Y-%m-%d"), "clients": n_clients, "client_processes": procs, "events": n_events,
            "payload_bytes": payload, "deliveries": deliveries, "publish_s": round(publish_s, 4),
            "total_s": round(total_s, 4), "deliveries_per_s": round(deliveries / total_s),
            "loop": type(asyncio.get_running_loop()).__module__, "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--payload", type=int, default=200)
    ap.add_argument("--loop", choices=("uvloop", "asyncio", "both"), default="both")
    ap.add_argument("--procs", type=int, default=0,
                    help="run the clients in this many separate processes (0: in the engine's process)")
    args = ap.parse_args()
    n_clients, n_events = min(args.clients, 1000), min(args.events, 2000)
    results = []
    for loop in (("asyncio", "uvloop") if args.loop == "both" else (args.loop,)):
        if loop == "uvloop":
            install_event_loop_policy()
        else:
            asyncio.set_event_loop_policy(None)
        results.append(asyncio.run(run(n_clients, n_events, args.payload, min(args.procs, 8))))
    if len(results) == 2:
        results[1]["ratio_vs_asyncio"] = round(results[1]["deliveries_per_s"] / results[0]["deliveries_per_s"], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "foundation_fanout.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
