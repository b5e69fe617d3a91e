"""Bounded fuzzing of the control socket with real sockets: arbitrary msgpack
values as frames always get a well-formed reply and leave the connection
usable; arbitrary bytes either get replies or one error event and a close;
the engine always survives."""
from __future__ import annotations

import string
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings, strategies as st

from foundation_helpers import RawConn, run, running_engine

KNOWN_CODES = {"bad_request", "invalid_args", "unknown_op", "unauthorized", "forbidden", "not_found",
               "conflict", "busy", "unavailable", "internal"}
OPS = st.sampled_from(["auth", "ping", "engine.status", "events.subscribe", "events.unsubscribe",
                       "state.snapshot", "audit.query", "no.such"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
                    st.text(string.printable, max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(string.ascii_lowercase, max_size=8), inner, max_size=4)),
    max_leaves=12)
requests = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 10**6), st.text(max_size=5)), "op": OPS},
                                 optional={"args": st.one_of(values, st.dictionaries(
                                     st.sampled_from(["user", "password", "data", "events", "include", "limit",
                                                      "subscription", "x"]), values, max_size=3))})
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(frames=st.lists(st.one_of(requests, values), min_size=1, max_size=5))
def test_any_msgpack_value_gets_a_reply(make_config: Any, frames: list[Any]) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            for frame in frames:
                c.send(frame)
            c.send({"id": "last", "op": "ping"})
            while True:
                reply = await c.frame()
                if "event" in reply:
                    continue  # events from a subscription the fuzzer made
                assert set(reply) <= {"id", "ok", "result", "error"} and isinstance(reply["ok"], bool)
                if not reply["ok"]:
                    assert reply["error"]["code"] in KNOWN_CODES, reply
                    assert reply["error"]["code"] != "internal", reply
                    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
                if reply["id"] == "last":
                    break
            await c.close()
    run(main())


@FUZZ
@given(data=st.binary(min_size=1, max_size=300))
def test_any_bytes_never_kill_the_engine(make_config: Any, data: bytes) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            c = await RawConn.open(engine)
            c.send_bytes(data)
            c.send_bytes(msgpack.packb({"id": "last", "op": "ping"}))
            c.writer.write_eof()  # the engine closes at EOF, even inside a partial frame
            frames = await c.closed(timeout=10)
            for i, f in enumerate(frames):
                if isinstance(f, dict) and f.get("event") == "error":
                    assert f["data"]["code"] in {"malformed_frame", "frame_too_large"}
                    assert i == len(frames) - 1  # nothing after the error event
                else:
                    assert set(f) <= {"id", "ok", "result", "error"}, f
                    assert f["ok"] or f["error"]["code"] in KNOWN_CODES - {"internal"}, f
            await c.close()
            c2 = await RawConn.open(engine)
            assert (await c2.call("ping"))["ok"]
            await c2.close()
    run(main())
