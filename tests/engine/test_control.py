"""The control socket over real TCP and Unix sockets: auth and roles, every
bad-frame case, event fan-out to 500 clients, slow consumers, snapshots
stamped with seq, audit rows, and scoping by tenant/group/agent."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import msgpack
import pytest

from engine.client import ClientError, ControlClient
from engine.ops import Arg, OpRegistry, registry
from foundation_helpers import PASSWORDS, RawConn, run, running_engine, tcp_address, unix_address


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_auth_and_roles(make_config: Any, unix: bool) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine, unix=unix)
            # before auth: ping works, everything else is unauthorized
            assert (await c.call("ping", data="x"))["result"]["data"] == "x"
            r = await c.call("engine.status")
            assert r["ok"] is False and r["error"]["code"] == "unauthorized"
            r = await c.call("auth", user="admin", password="wrong")
            assert r["error"] == {"code": "unauthorized", "message": "wrong user name or password"}
            r = await c.call("auth", user="nobody", password="x")
            assert r["error"]["code"] == "unauthorized"
            r = await c.auth("reports")
            assert r["result"]["role"] == "reporting" and r["result"]["tenant"] == "default"
            status = await c.call("engine.status")
            assert status["ok"] and status["result"]["store"]["schema_version"] >= 1
            r = await c.call("engine.log_level", level="DEBUG")
            assert r["error"]["code"] == "forbidden"
            assert "allowed: admin" in r["error"]["message"]
            # re-auth as admin on the same connection
            await c.auth("admin")
            r = await c.call("engine.log_level", level="INFO")
            assert r["ok"], r
            await c.close()
    run(main())


def test_auth_failures_are_audited_and_limited(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            for _ in range(4):
                assert (await c.call("auth", user="admin", password="bad"))["error"]["code"] == "unauthorized"
            c.send({"id": 99, "op": "auth", "args": {"user": "admin", "password": "bad"}})
            frames = await c.closed()
            assert any(f.get("event") == "error" and "5 failed authentication attempts" in f["data"]["message"]
                       for f in frames)
            rows = await engine.store.aflush() or engine.store.select("audit_log", {"op": "auth"})
            assert [r["result"] for r in rows] == ["error:unauthorized"] * 5
            assert all(r["peer"].startswith("127.0.0.1:") for r in rows)
    run(main())


BAD_FRAMES = [
    ("not_a_map", [1, 2, 3], None, "bad_request", "a request must be a map, got list"),
    ("string_frame", "engine.status", None, "bad_request", "a request must be a map, got str"),
    ("missing_id", {"op": "ping"}, None, "bad_request", "request has no 'id' (an integer or string)"),
    ("bool_id", {"id": True, "op": "ping"}, None, "bad_request", "request has no 'id' (an integer or string)"),
    ("missing_op", {"id": 5}, 5, "bad_request", "request has no 'op' (a string)"),
    ("op_not_string", {"id": 6, "op": 42}, 6, "bad_request", "request has no 'op' (a string)"),
    ("extra_key", {"id": 7, "op": "ping", "colour": 1}, 7, "bad_request", "unknown request key(s): colour"),
    ("args_not_map", {"id": 8, "op": "ping", "args": [1]}, 8, "invalid_args", "ping: 'args' must be a map, got array"),
    ("wrong_arg_type", {"id": 9, "op": "auth", "args": {"user": 1, "password": "x"}}, 9, "invalid_args",
     "auth: argument 'user' must be string, got integer"),
    ("missing_arg", {"id": 10, "op": "auth", "args": {"user": "a"}}, 10, "invalid_args",
     "auth: missing required argument 'password'"),
    ("unknown_arg", {"id": 11, "op": "ping", "args": {"dat": 1}}, 11, "invalid_args",
     "ping: unknown argument 'dat' (expected: data)"),
    ("unknown_op", {"id": "s1", "op": "call.teleport"}, "s1", "unknown_op", "unknown op 'call.teleport'"),
]


@pytest.mark.parametrize("name,frame,rid,code,message", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_keep_the_connection(make_config: Any, name: str, frame: Any, rid: Any, code: str,
                                        message: str) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            c.send(frame)
            reply = await c.frame()
            assert reply == {"id": rid, "ok": False, "error": {"code": code, "message": message}}
            # the connection is still usable
            assert (await c.call("ping"))["ok"] is True
            await c.close()
    run(main())


def test_arg_type_errors_after_auth(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            await c.auth("admin")
            r = await c.call("events.subscribe", events="agent.*")
            assert r["error"] == {"code": "invalid_args",
                                  "message": "events.subscribe: argument 'events' must be array, got string"}
            r = await c.call("events.subscribe", events=["agent.*", 3])
            assert r["error"]["message"] == "events.subscribe: argument events[1] must be string, got integer"
            r = await c.call("audit.query", limit="10")
            assert r["error"]["code"] == "invalid_args"
            r = await c.call("engine.log_level", level="LOUD")
            assert r["error"]["message"] == ("engine.log_level: argument 'level' must be one of "
                                             "DEBUG, INFO, WARNING, ERROR, CRITICAL")
            assert (await c.call("ping"))["ok"]
            await c.close()
    run(main())


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_oversized_frame_closes_with_error_event(make_config: Any, unix: bool) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine, unix=unix)
            c.send({"id": 1, "op": "ping", "args": {"data": "x" * (1 << 20)}})  # 1 MiB of payload + header
            frames = await c.closed()
            assert frames[-1]["event"] == "error"
            assert frames[-1]["data"]["code"] == "frame_too_large"
            assert "larger than 1048576 bytes" in frames[-1]["data"]["message"]
            # the engine is fine
            c2 = await RawConn.open(engine, unix=unix)
            assert (await c2.call("ping"))["ok"]
            await c2.close()
    run(main())


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x91\xc1", b"\xd9\x03\xff\xfe\xfd"],
                         ids=["reserved_byte", "reserved_in_array", "invalid_utf8"])
def test_undecodable_bytes_close_with_error_event(make_config: Any, garbage: bytes) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            assert (await c.call("ping"))["ok"]
            c.send_bytes(garbage)
            frames = await c.closed()
            assert [f["event"] for f in frames] == ["error"]
            assert frames[0]["data"]["code"] == "malformed_frame"
            assert frames[0]["data"]["message"].startswith("undecodable msgpack data")
            assert frames[0]["seq"] == 1
    run(main())


def test_frame_split_across_writes_and_pipelined(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            data = b"".join(msgpack.packb(f) for f in (
                {"id": 1, "op": "auth", "args": {"user": "admin", "password": PASSWORDS["admin"]}},
                {"id": 2, "op": "engine.status"},
                {"id": 3, "op": "ping", "args": {"data": 3}}))
            for i in range(0, len(data), 7):  # dribble 7 bytes at a time
                c.send_bytes(data[i:i + 7])
                await c.writer.drain()
            replies = [await c.frame() for _ in range(3)]
            assert [r["id"] for r in replies] == [1, 2, 3]  # in order: auth ran first
            assert all(r["ok"] for r in replies)
            await c.close()
    run(main())


def test_events_subscribe_filters_and_seq(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            await c.auth("admin")
            r = await c.call("events.subscribe", events=["agent.*"], agents=["1001"])
            assert r["ok"] and r["result"]["seq"] == 0
            bus = engine.bus
            bus.publish("agent.state", {"agent": "1001", "state": "ready"}, agent="1001", group="sales")
            bus.publish("agent.state", {"agent": "1002", "state": "ready"}, agent="1002")  # filtered
            bus.publish("call.ringing", {"call_id": "c"})  # pattern does not match
            bus.publish("agent.login", {"agent": "1001"}, agent="1001")
            e1, e2 = await c.frame(), await c.frame()
            assert (e1["event"], e1["seq"], e1["data"]["state"]) == ("agent.state", 1, "ready")
            assert (e2["event"], e2["seq"]) == ("agent.login", 2)
            assert isinstance(e1["ts"], float)
            snap = await c.call("state.snapshot")
            assert snap["result"]["seq"] == 2
            assert {a["agent"] for a in snap["result"]["agents"]} == {"1001", "1002"}  # not acme's 2001
            assert {q["queue"] for q in snap["result"]["queues"]} == {"sales"}
            r = await c.call("events.unsubscribe", subscription=r["result"]["subscription"])
            assert r["ok"]
            bus.publish("agent.state", {"agent": "1001"}, agent="1001")
            assert (await c.call("ping"))["ok"]  # the reply arrives, no event before it
            r = await c.call("events.unsubscribe", subscription=12345)
            assert r["error"]["code"] == "not_found"
            await c.close()
    run(main())


def test_scopes_tenant_group_agent(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            conns = {}
            for user in ("admin", "sup", "agent1", "acme_admin", "root", "reports"):
                conns[user] = c = await RawConn.open(engine)
                await c.auth(user)
                assert (await c.call("events.subscribe"))["ok"]
            bus = engine.bus
            bus.publish("agent.state", {"n": 1}, agent="1001", group="sales")
            bus.publish("agent.state", {"n": 2}, agent="1002", group="support")
            bus.publish("agent.state", {"n": 3}, agent="2001", group="acme_sales", tenant="acme")
            bus.publish("engine.notice", {"n": 4}, tenant="*")
            bus.publish("done", {"n": 5}, tenant="*")
            for c in conns.values():
                c.send({"id": "end", "op": "ping"})
            seen = {}
            for user, c in conns.items():
                ns = []
                while True:
                    f = await c.frame()
                    if f.get("id") == "end":
                        break
                    ns.append(f["data"]["n"])
                seen[user] = ns
            assert seen == {"admin": [1, 2, 4, 5], "sup": [1], "agent1": [1], "acme_admin": [3, 4, 5],
                            "root": [1, 2, 3, 4, 5], "reports": [1, 2]}
            # subscription filters beyond one's scope are refused
            r = await conns["sup"].call("events.subscribe", groups=["support"])
            assert r["error"]["code"] == "forbidden"
            r = await conns["agent1"].call("events.subscribe", agents=["1002"])
            assert r["error"]["code"] == "forbidden"
            r = await conns["acme_admin"].call("events.subscribe", tenants=["default"])
            assert r["error"]["code"] == "forbidden"
            snap = await conns["acme_admin"].call("state.snapshot")
            assert [a["agent"] for a in snap["result"]["agents"]] == ["2001"]
            snap = await conns["agent1"].call("state.snapshot", include=["agents"])
            assert [a["agent"] for a in snap["result"]["agents"]] == ["1001"]
            assert set(snap["result"]) == {"seq", "ts", "agents"}
            r = await conns["agent1"].call("state.snapshot", include=["nope"])
            assert r["error"]["code"] == "invalid_args"
            for c in conns.values():
                await c.close()
    run(main())


def test_500_concurrent_clients_receive_every_event(make_config: Any) -> None:
    n_clients, n_events = 500, 20

    async def main() -> None:
        async with running_engine(make_config()) as engine:
            host, port = tcp_address(engine)
            clients = [ControlClient(host=host, port=port, user="admin", password=PASSWORDS["admin"],
                                     reconnect=False) for _ in range(n_clients)]
            await asyncio.gather(*(c.connect() for c in clients))
            await asyncio.gather(*(c.subscribe(events=["load.*"]) for c in clients))
            assert engine.bus.subscriber_count == n_clients
            for i in range(n_events):
                engine.bus.publish("load.tick", {"i": i, "pad": "x" * 200})
                await asyncio.sleep(0)

            async def collect(c: ControlClient) -> list[tuple[int, int]]:
                got = []
                while len(got) < n_events:
                    e = await c.next_event(timeout=30)
                    got.append((e["seq"], e["data"]["i"]))
                return got

            results = await asyncio.gather(*(collect(c) for c in clients))
            expected = [(i + 1, i) for i in range(n_events)]
            assert all(r == expected for r in results)
            await asyncio.gather(*(c.close() for c in clients))
    run(main(), timeout=80)


def test_slow_consumer_is_disconnected_and_others_unaffected(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            slow = await RawConn.open(engine)
            await slow.auth("admin")
            assert (await slow.call("events.subscribe"))["ok"]
            fast = ControlClient(host=tcp_address(engine)[0], port=tcp_address(engine)[1], user="admin",
                                 password=PASSWORDS["admin"], reconnect=False)
            await fast.connect()
            await fast.subscribe()
            payload = {"blob": "y" * 8192}
            server_conn = None
            # 4000 x 8 KiB = 32 MiB: more than loopback socket buffers hold.
            for i in range(4000):  # the slow client reads nothing meanwhile
                engine.bus.publish("flood", payload)
                if i % 20 == 0:
                    got = await fast.next_event(timeout=10)
                    assert got is not None
                    await asyncio.sleep(0)
                closing = [c for s in engine.control_servers for c in s.connections if c.close_reason]
                if closing:
                    server_conn = closing[0]
                    break
            assert server_conn is not None, "slow consumer was never disconnected"
            assert server_conn.close_reason == "slow_consumer"
            # The slow client, once it reads, finds its events and then the error.
            frames = await slow.closed(timeout=10)
            assert frames[-1]["event"] == "error"
            assert frames[-1]["data"]["code"] == "slow_consumer"
            assert "did not read" in frames[-1]["data"]["message"]
            seqs = [f["seq"] for f in frames]
            # Events the client got are numbered without gaps; the queued ones
            # were dropped, so the error's seq jumps past them (a visible gap).
            assert seqs[:-1] == list(range(seqs[0], seqs[0] + len(seqs) - 1))
            assert seqs[-1] > seqs[-2] + 1
            # the fast client is still served
            engine.bus.publish("after", {"ok": 1})
            while True:
                e = await fast.next_event(timeout=10)
                if e["event"] == "after":
                    break
            assert (await fast.request("ping"))["pong"]
            await fast.close()
    run(main(), timeout=80)


def test_audit_rows_for_state_changing_ops(make_config: Any) -> None:
    calls: list[dict[str, Any]] = []
    import engine.builtin_ops  # noqa: F401

    local = registry.copy()

    @local.op("test.set", roles={"admin", "supervisor"}, changes_state=True,
              args=[Arg("value", int), Arg("password", str, default="")])
    async def test_set(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        if args["value"] < 0:
            from engine.errors import Conflict
            raise Conflict("value must not be negative")
        if args["value"] == 13:
            raise RuntimeError("unlucky")
        calls.append(args)
        return {"value": args["value"]}

    async def main() -> None:
        async with running_engine(make_config(), ops=local) as engine:
            c = await RawConn.open(engine, unix=True)
            await c.auth("sup")
            assert (await c.call("test.set", value=5, password="hunter2"))["result"] == {"value": 5}
            assert (await c.call("test.set", value=-1))["error"] == {
                "code": "conflict", "message": "value must not be negative"}
            assert (await c.call("test.set", value=13))["error"] == {
                "code": "internal", "message": "internal error (RuntimeError)"}
            assert (await c.call("ping"))["ok"]  # not audited
            await engine.store.aflush()
            rows = engine.store.select("audit_log", {"op": "test.set"})
            assert [(r["user"], r["role"], r["result"]) for r in rows] == [
                ("sup", "supervisor", "ok"), ("sup", "supervisor", "error:conflict"),
                ("sup", "supervisor", "error:internal")]
            assert rows[0]["args"] == '{"password": "***", "value": 5}'
            assert rows[0]["peer"].startswith("unix:") and rows[0]["tenant"] == "default"
            assert not engine.store.select("audit_log", {"op": "ping"})
            await c.auth("admin")
            q = await c.call("audit.query", op="test.set", limit=1)
            assert q["result"][0]["result"] == "error:internal"
            await c.close()
    run(main())
    assert "test.set" not in registry.names()  # the global registry is untouched


def test_registry_rejects_bad_registrations() -> None:
    local = OpRegistry()

    async def h(ctx: Any, args: dict[str, Any]) -> None:
        return None

    local.register("a.b", h)
    with pytest.raises(ValueError, match="already registered"):
        local.register("a.b", h)
    with pytest.raises(ValueError, match="unknown role"):
        local.register("a.c", h, roles={"god"})
    with pytest.raises(ValueError, match="duplicate argument"):
        local.register("a.d", h, args=[Arg("x", int), Arg("x", str)])


def test_ops_list_shows_what_the_role_may_call(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            await c.auth("reports")
            ops = {o["op"] for o in (await c.call("ops.list"))["result"]}
            assert {"auth", "ping", "engine.status", "events.subscribe", "state.snapshot"} <= ops
            assert "engine.log_level" not in ops and "audit.query" not in ops
            await c.close()
    run(main())


def test_unix_socket_stale_file_and_cleanup(make_config: Any, sock_dir: str) -> None:
    import os

    path = os.path.join(sock_dir, "ctl.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a socket file with nobody listening: left by a crash
    stale.close()

    async def main() -> None:
        async with running_engine(make_config()) as engine:
            assert unix_address(engine) == path
            c = await RawConn.open(engine, unix=True)
            assert (await c.call("ping"))["ok"]
            await c.close()
            # a second engine on the same socket is refused
            with pytest.raises(OSError, match="another engine is listening"):
                async with running_engine(make_config()):
                    pass
        assert not os.path.exists(path)
    run(main())


def test_engine_stop_notifies_clients(make_config: Any) -> None:
    async def main() -> None:
        engine_cm = running_engine(make_config())
        engine = await engine_cm.__aenter__()
        c = await RawConn.open(engine)
        await c.auth("admin")
        await engine_cm.__aexit__(None, None, None)
        frames = await c.closed()
        assert frames and frames[-1]["event"] == "engine.stopping"
    run(main())


def test_client_error_and_reconnect_with_resubscribe(make_config: Any) -> None:
    async def main() -> None:
        cfg = make_config()
        async with running_engine(cfg) as engine:
            host, port = tcp_address(engine)
            client = ControlClient(host=host, port=port, user="admin", password=PASSWORDS["admin"])
            await client.connect()
            with pytest.raises(ClientError) as info:
                await client.request("no.such.op")
            assert info.value.code == "unknown_op"
            await client.subscribe(events=["x.*"])
        # engine gone; a new one on the same port: the client comes back by itself
        import dataclasses
        lst = dataclasses.replace(cfg.control.listen[0], port=port)
        cfg2 = dataclasses.replace(cfg, control=dataclasses.replace(cfg.control, listen=(lst,)))
        async with running_engine(cfg2) as engine2:
            while True:
                e = await client.next_event(timeout=20)
                if e["event"] == "client.reconnected":
                    break
            engine2.bus.publish("x.after", {"v": 1})
            e = await client.next_event(timeout=10)
            assert (e["event"], e["seq"], e["data"]) == ("x.after", 1, {"v": 1})
            assert (await client.request("ping"))["pong"]
            await client.close()
    run(main())


def test_listener_allow_networks_refuses_other_peers(make_config: Any) -> None:
    import dataclasses

    cfg = make_config()
    lst = dataclasses.replace(cfg.control.listen[0], allow_networks=("10.0.0.0/8",))
    cfg = dataclasses.replace(cfg, control=dataclasses.replace(cfg.control, listen=(lst,)))

    async def main() -> None:
        async with running_engine(cfg) as engine:
            c = await RawConn.open(engine)
            frames = await c.closed()
            assert [(f["event"], f["data"]["code"]) for f in frames] == [("error", "forbidden")]
            assert frames[0]["data"]["message"] == "peer address not allowed"
    run(main())


def test_user_allow_networks(make_config: Any) -> None:
    cfg = make_config()
    import dataclasses

    users = dict(cfg.users)
    users["admin"] = dataclasses.replace(users["admin"], allow_networks=("192.0.2.0/24",))
    cfg = dataclasses.replace(cfg, users=users)

    async def main() -> None:
        async with running_engine(cfg) as engine:
            c = await RawConn.open(engine)
            r = await c.call("auth", user="admin", password=PASSWORDS["admin"])
            assert r["error"]["code"] == "unauthorized"  # right password, wrong network
            c2 = await RawConn.open(engine, unix=True)
            await c2.auth("admin")  # the Unix socket is guarded by file permissions
            await c.close()
            await c2.close()
    run(main())


def test_half_closed_client_still_gets_its_replies(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine, unix=True)
            c.send({"id": 1, "op": "auth", "args": {"user": "admin", "password": PASSWORDS["admin"]}})
            c.send({"id": 2, "op": "engine.status"})
            c.writer.write_eof()
            frames = await c.closed()
            assert [(f["id"], f["ok"]) for f in frames] == [(1, True), (2, True)]
    run(main())


def test_thousand_pipelined_requests_answered_in_order(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            # far beyond max_pending_requests (64): the engine stops reading, then resumes
            c.send_bytes(b"".join(msgpack.packb({"id": i, "op": "ping", "args": {"data": i}}) for i in range(1000)))
            replies = [await c.frame() for _ in range(1000)]
            assert [r["id"] for r in replies] == list(range(1000))
            assert all(r["result"]["data"] == r["id"] for r in replies)
            await c.close()
    run(main())
