"""Helpers for the engine's foundation tests: a temporary config with cheap
scrypt hashes, and a helper that runs an :class:`engine.app.Engine` on free
ports (TCP on 127.0.0.1:0, a Unix socket in a short temporary directory)."""
from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, AsyncIterator, Awaitable, TypeVar

import msgpack

from engine.app import Engine
from engine.config import Config
from engine.passwords import hash_password

T = TypeVar("T")

# Cheap hashes (n = 2**10) keep 500 authentications fast; the format is the real one.
PASSWORDS = {"admin": "admin-pw", "sup": "sup-pw", "agent1": "agent1-pw", "reports": "reports-pw",
             "acme_admin": "acme-pw", "root": "root-pw"}
_HASHES = {user: hash_password(pw, n=1024) for user, pw in PASSWORDS.items()}
AGENT_HASH = hash_password("1001-pw", n=1024)


def config_text(sock_dir: str, store_path: str, extra: str = "") -> str:
    return f"""
[engine]
name = "test"
log_level = "DEBUG"

[store]
path = "{store_path}"
batch_interval_ms = 20

[control]
listen = [
  {{ transport = "tcp", host = "127.0.0.1", port = 0 }},
  {{ transport = "unix", path = "{sock_dir}/ctl.sock" }},
]
write_buffer_bytes = 65536
event_queue_max = 50

[tenants.acme]
description = "a second tenant"

[groups.sales]
[groups.support]
[groups.acme_sales]
tenant = "acme"

[agents.1001]
name = "Alice"
password = "{AGENT_HASH}"
groups = ["sales"]
skills = {{ sales = 5 }}

[agents.1002]
name = "Bob"
password = "{AGENT_HASH}"
groups = ["support"]

[agents.2001]
name = "Acme Ann"
password = "{AGENT_HASH}"
groups = ["acme_sales"]
tenant = "acme"

[queues.sales]
groups = ["sales"]

[queues.acme_sales]
groups = ["acme_sales"]
tenant = "acme"

[users.admin]
password = "{_HASHES['admin']}"
role = "admin"

[users.root]
password = "{_HASHES['root']}"
role = "admin"
tenant = "*"

[users.sup]
password = "{_HASHES['sup']}"
role = "supervisor"
groups = ["sales"]

[users.agent1]
password = "{_HASHES['agent1']}"
role = "agent"
agent = "1001"

[users.reports]
password = "{_HASHES['reports']}"
role = "reporting"

[users.acme_admin]
password = "{_HASHES['acme_admin']}"
role = "admin"
tenant = "acme"
{extra}
"""


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a fresh event loop with an overall timeout."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def running_engine(config: Config, **kw: Any) -> AsyncIterator[Engine]:
    engine = Engine(config, **kw)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def tcp_address(engine: Engine) -> tuple[str, int]:
    for server in engine.control_servers:
        if server.listener.transport == "tcp":
            return server.address  # type: ignore[return-value]
    raise AssertionError("no tcp listener")


def unix_address(engine: Engine) -> str:
    for server in engine.control_servers:
        if server.listener.transport == "unix":
            return server.address  # type: ignore[return-value]
    raise AssertionError("no unix listener")


class RawConn:
    """A bare msgpack connection for frame-level tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=64 << 20)
        self.next_id = 0

    @classmethod
    async def open(cls, engine: Engine, unix: bool = False) -> "RawConn":
        if unix:
            r, w = await asyncio.open_unix_connection(unix_address(engine))
        else:
            r, w = await asyncio.open_connection(*tcp_address(engine))
        return cls(r, w)

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, obj: Any) -> None:
        self.writer.write(msgpack.packb(obj, use_bin_type=True))

    async def frame(self, timeout: float = 5.0) -> Any:
        """The next frame; raises ``EOFError`` when the engine closed the connection."""
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                pass
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("connection closed")
            self.unpacker.feed(data)

    async def call(self, op: str, /, **args: Any) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        self.send({"id": rid, "op": op, "args": args})
        while True:
            f = await self.frame()
            if isinstance(f, dict) and f.get("id") == rid:
                return f

    async def auth(self, user: str) -> dict[str, Any]:
        reply = await self.call("auth", user=user, password=PASSWORDS[user])
        assert reply["ok"], reply
        return reply

    async def closed(self, timeout: float = 5.0) -> list[Any]:
        """Read until EOF; returns the frames seen on the way."""
        frames = []
        while True:
            try:
                frames.append(await self.frame(timeout))
            except (EOFError, ConnectionResetError):
                return frames

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CTIENGINE_USER", None)
    env.pop("CTIENGINE_PASSWORD", None)
    return env
