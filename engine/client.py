"""The Python client of the control socket (asyncio).

Usage::

    client = ControlClient(host="127.0.0.1", port=7070, user="admin", password="...")
    await client.connect()                       # connects and authenticates
    status = await client.request("engine.status")
    await client.subscribe(events=["agent.*"])
    snap = await client.request("state.snapshot")
    async for event in client.events():          # {"event", "seq", "ts", "data"}
        if event["seq"] <= snap["seq"]:
            continue                             # already in the snapshot
        ...
    await client.close()

Requests are matched to replies by ``id`` (one future each), so many can be
in flight.  An error reply raises :class:`ClientError` with the server's
``code`` and ``message``.  With ``reconnect=True`` a lost connection is
re-established with exponential back-off (0.1 s doubling to 5 s), the client
re-authenticates and re-subscribes with the same arguments, and the event
iterator yields a synthetic ``{"event": "client.reconnected", ...}`` so the
application takes a new ``state.snapshot`` (per-connection ``seq`` restarts
on a new connection).  Requests in flight when the connection drops fail
with ``ConnectionError``.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, AsyncIterator

import msgpack

logger = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0


class ClientError(Exception):
    """The engine answered ``ok: false``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ControlClient:
    """One connection to the engine's control socket, optionally self-healing."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 7070, unix_path: str | None = None,
                 user: str | None = None, password: str | None = None, reconnect: bool = True,
                 max_frame_bytes: int = 16 << 20, event_queue_max: int = 100_000,
                 ssl: Any = None, server_hostname: str | None = None) -> None:
        self.host, self.port, self.unix_path = host, port, unix_path
        # TLS (issue 12): an ssl.SSLContext (sip.tls.client_context) and the
        # name to check in the engine's certificate (default: host).
        self.ssl, self.server_hostname = ssl, server_hostname
        self.user, self.password = user, password
        self.reconnect = reconnect
        self.max_frame_bytes = max_frame_bytes
        self.auth_result: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._futures: dict[Any, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=event_queue_max)
        self._subscriptions: list[dict[str, Any]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()
        self.reconnects = 0
        self.events_dropped = 0

    # ------------------------------------------------------------ connection

    async def connect(self) -> None:
        """Connect (and authenticate when a user is set); raises ``OSError`` or :class:`ClientError`."""
        await self._open()
        if self.user is not None:
            self.auth_result = await self._call("auth", user=self.user, password=self.password or "")
        self._connected.set()

    async def _open(self) -> None:
        if self.unix_path:
            self._reader, self._writer = await asyncio.open_unix_connection(self.unix_path)
        else:
            tls = {"ssl": self.ssl, "server_hostname": self.server_hostname or self.host} if self.ssl else {}
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, **tls)
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop(self._reader))

    async def close(self) -> None:
        """Close for good (no reconnect); ends the event iterator."""
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        if self._read_task is not None:
            self._read_task.cancel()
            try:
                await self._read_task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending(ConnectionError("client closed"))
        self._put_event(None)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ------------------------------------------------------------ requests

    async def request(self, op: str, /, **args: Any) -> Any:
        """Send one request and return its ``result``; raises :class:`ClientError` on ``ok: false``."""
        reply = await self.request_raw({"op": op, "args": args})
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ClientError(str(err.get("code", "unknown")), str(err.get("message", "")))
        return reply.get("result")

    async def request_raw(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` (an ``id`` is added) and return the whole reply map.

        While reconnecting this waits until the client is connected again.
        """
        if not self.connected:
            if self.reconnect and not self._closed and self._writer is not None:
                await self._connected.wait()
            else:
                raise ConnectionError("not connected")
        return await self._send(frame)

    async def _call(self, op: str, /, **args: Any) -> Any:
        # request() for the connect/reconnect sequence itself (no waiting).
        reply = await self._send({"op": op, "args": args})
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ClientError(str(err.get("code", "unknown")), str(err.get("message", "")))
        return reply.get("result")

    async def _send(self, frame: dict[str, Any]) -> dict[str, Any]:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("not connected")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        assert self._writer is not None
        self._writer.write(msgpack.packb({"id": rid, **frame}, use_bin_type=True))
        try:
            await self._writer.drain()
            return await fut
        finally:
            self._futures.pop(rid, None)

    async def subscribe(self, **args: Any) -> dict[str, Any]:
        """``events.subscribe`` that is repeated after every reconnect."""
        result = await self.request("events.subscribe", **args)
        self._subscriptions.append(args)
        return result

    # ------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events in arrival order until the client is closed (or the connection
        is lost without reconnect)."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def next_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or ``None`` when closed; raises ``asyncio.TimeoutError``."""
        return await asyncio.wait_for(self._events.get(), timeout)

    def _put_event(self, event: dict[str, Any] | None) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.events_dropped += 1
            if event is None:  # make room for the end marker
                self._events.get_nowait()
                self._events.put_nowait(None)

    # ------------------------------------------------------------ reading

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=self.max_frame_bytes, strict_map_key=False)
        error: BaseException | None = None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                unpacker.feed(data)
                for frame in unpacker:
                    self._dispatch(frame)
        except asyncio.CancelledError:
            raise
        except (OSError, ConnectionError, ValueError, msgpack.UnpackException) as exc:
            error = exc
        self._connected.clear()
        self._fail_pending(ConnectionError(f"connection lost: {error or 'closed by the engine'}"))
        if self._closed:
            self._put_event(None)
            return
        if not self.reconnect:
            self._put_event(None)
            return
        asyncio.get_running_loop().create_task(self._reconnect_loop())

    def _dispatch(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            logger.warning("engine sent a non-map frame: %r", frame)
            return
        if "event" in frame:
            self._put_event(frame)
            return
        fut = self._futures.get(frame.get("id"))
        if fut is not None and not fut.done():
            fut.set_result(frame)
        elif frame.get("id") is None and not frame.get("ok", True):
            # A reply to a frame the engine could not attribute (bad_request).
            self._put_event({"event": "client.error", "seq": None, "ts": time.time(), "data": frame.get("error")})

    def _fail_pending(self, exc: BaseException) -> None:
        for fut in list(self._futures.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()

    async def _reconnect_loop(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                await self._open()
                if self.user is not None:
                    self.auth_result = await self._call("auth", user=self.user, password=self.password or "")
                for args in self._subscriptions:
                    await self._call("events.subscribe", **args)
            except (OSError, ConnectionError, ClientError) as exc:
                logger.info("reconnect to the engine failed: %s; retrying in %.1f s", exc, delay)
                self._connected.clear()
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            self.reconnects += 1
            self._connected.set()
            self._put_event({"event": "client.reconnected", "seq": 0, "ts": time.time(),
                             "data": {"reconnects": self.reconnects}})
            return
