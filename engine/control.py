"""The control socket server: msgpack maps over TCP and Unix sockets.

Theory of operation
-------------------
Wire format (ARCHITECTURE.md "The control socket"): a stream of msgpack maps.

* request ``{"id": 7, "op": "engine.status", "args": {...}}``
* reply ``{"id": 7, "ok": true, "result": ...}`` or
  ``{"id": 7, "ok": false, "error": {"code": "...", "message": "..."}}``
* event ``{"event": "agent.state", "seq": 1042, "ts": 1700000000.0, "data": {...}}``

Each :class:`Connection` is an :class:`asyncio.Protocol`.  Bytes go into a
streaming :class:`msgpack.Unpacker` whose ``max_buffer_size`` is the frame
limit (1 MiB by default): a frame that cannot fit, or bytes that are not
msgpack, are answered by an ``error`` event (``frame_too_large`` /
``malformed_frame``) and the connection is closed, since the stream cannot
be resynchronised.  A frame that decodes but is not a request (not a map,
no ``id`` or ``op``) is answered ``bad_request`` and the connection stays.

Requests of one connection run one after another, in order, on a task of
that connection, so ``auth`` followed at once by another op works, and one
slow op never delays another connection.  At most ``max_pending_requests``
wait; beyond that the server stops reading from that socket (TCP back
pressure) until the backlog halves.

Writes never block the loop.  While the transport's write buffer is above
``write_buffer_bytes`` (asyncio calls ``pause_writing``) frames wait in a
bounded per-connection queue; when that queue exceeds ``event_queue_max``
the client is a slow consumer: it gets an ``error`` event with code
``slow_consumer``, the connection is closed, and aborted if the client still
does not read within :data:`CLOSE_GRACE_S`.

Op dispatch, roles and argument checks live in :mod:`engine.ops`; events in
:mod:`engine.bus`.  This module owns bytes, sockets and per-connection state.
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

import msgpack

from engine.bus import BusEvent, Subscription, pack_event
from engine.config import ControlListener, ControlSection
from engine.errors import BadRequest, EngineError, Forbidden, FrameTooLarge, ProtocolViolation, SlowConsumer, error_reply
from engine.events import EngineStopping
from engine.ops import OpContext, Session

if TYPE_CHECKING:
    from engine.app import Engine

logger = logging.getLogger(__name__)

CLOSE_GRACE_S = 2.0
FEED_CHUNK = 64 * 1024
_ID_TYPES = (int, str)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Connection(asyncio.Protocol):
    """One control client."""

    def __init__(self, server: "ControlServer") -> None:
        self.server = server
        self.engine = server.engine
        self.cfg: ControlSection = server.cfg
        self.transport: asyncio.Transport | None = None
        self.session = Session(peer="")
        self.seq = 0
        self.subscriptions: dict[int, Subscription] = {}
        # The buffer bound is a memory backstop; the exact frame limit is
        # enforced in data_received from the unpacker's stream offsets.
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=self.cfg.max_frame_bytes + FEED_CHUNK,
                                          strict_map_key=False)
        self._fed = 0  # bytes fed into the unpacker so far
        self._frame_start = 0  # stream offset where the frame being decoded began
        # (Unpacker.tell() advances inside a partial frame, so it is not that.)
        self._requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._pending: collections.deque[bytes] = collections.deque()
        self.closing = False
        self.close_reason = ""
        self._lost = False
        self._eof = False  # the client half-closed: answer what is queued, then close
        self._busy = False

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's are not asyncio.Transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.session.peer = f"{peer[0]}:{peer[1]}"
        else:
            self.session.peer = f"unix:{self.server.unix_path}"
        transport.set_write_buffer_limits(high=self.cfg.write_buffer_bytes, low=self.cfg.write_buffer_bytes // 4)
        if not self.server.peer_allowed(peer):
            logger.warning("control connection from %s refused: not in allow_networks", self.session.peer)
            self.close_with_error(Forbidden("peer address not allowed"))
            return
        self.server.connections.add(self)
        self._worker = asyncio.get_running_loop().create_task(self._run_requests())
        logger.debug("control connection from %s", self.session.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._lost = True
        self.server.connections.discard(self)
        self.engine.bus.remove(self)
        if self._worker is not None:
            self._worker.cancel()
        self._pending.clear()
        logger.debug("control connection %s closed%s", self.session.peer,
                     f" ({self.close_reason})" if self.close_reason else "")

    # ------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        limit = self.cfg.max_frame_bytes
        for start in range(0, len(data), FEED_CHUNK):
            chunk = data[start:start + FEED_CHUNK]
            try:
                self._unpacker.feed(chunk)
            except msgpack.BufferFull:
                self._too_large()
                return
            self._fed += len(chunk)
            if not self._drain_frames():
                return
            if self._fed - self._frame_start > limit:  # a partial frame already past the limit
                self._too_large()
                return

    def eof_received(self) -> bool:
        # A client may send its requests and shut down its write side
        # (`nc -N`): the replies still go out, then the connection closes.
        self._eof = True
        if self._requests.empty() and not self._busy:
            self.close()
        return True

    def _too_large(self) -> None:
        self.close_with_error(FrameTooLarge(f"frame larger than {self.cfg.max_frame_bytes} bytes; closing"))

    def _drain_frames(self) -> bool:
        while True:
            try:
                frame = next(self._unpacker)
            except StopIteration:
                return True
            except (msgpack.UnpackException, ValueError) as exc:
                # FormatError, StackError, ExtraData, bad UTF-8: the stream is lost.
                self.close_with_error(ProtocolViolation(
                    f"undecodable msgpack data ({exc or type(exc).__name__}); closing"))
                return False
            end = self._unpacker.tell()
            size, self._frame_start = end - self._frame_start, end
            if size > self.cfg.max_frame_bytes:
                self._too_large()
                return False
            self._accept_frame(frame)
            if self.closing:
                return False

    def _accept_frame(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            self.reply(None, {"ok": False, "error": error_reply(
                BadRequest(f"a request must be a map, got {type(frame).__name__}"))})
            return
        rid = frame.get("id")
        if not isinstance(rid, _ID_TYPES) or isinstance(rid, bool):
            self.reply(None, {"ok": False, "error": error_reply(
                BadRequest("request has no 'id' (an integer or string)"))})
            return
        op = frame.get("op")
        if not isinstance(op, str) or not op:
            self.reply(rid, {"ok": False, "error": error_reply(BadRequest("request has no 'op' (a string)"))})
            return
        extra = set(frame) - {"id", "op", "args"}
        if extra:
            self.reply(rid, {"ok": False, "error": error_reply(
                BadRequest(f"unknown request key(s): {', '.join(sorted(map(str, extra)))}"))})
            return
        self._requests.put_nowait(frame)
        if self._requests.qsize() >= self.cfg.max_pending_requests and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    async def _run_requests(self) -> None:
        registry = self.engine.ops
        while True:
            frame = await self._requests.get()
            if self._read_paused and self._requests.qsize() <= self.cfg.max_pending_requests // 2:
                self._read_paused = False
                if self.transport is not None and not self.closing:
                    self.transport.resume_reading()
            ctx = OpContext(engine=self.engine, session=self.session, connection=self, request_id=frame["id"])
            self._busy = True
            try:
                reply = await registry.dispatch(ctx, frame["op"], frame.get("args"))
            finally:
                self._busy = False
            if self.closing:
                return
            self.reply(frame["id"], reply)
            if self._eof and self._requests.empty():
                self.close()
                return

    # ------------------------------------------------------------ writing

    def reply(self, rid: Any, body: dict[str, Any]) -> None:
        self._write(pack({"id": rid, **body}))

    def send_event(self, name: str, data: dict[str, Any], ts: float | None = None) -> None:
        """Send one event to this connection only (errors, notices)."""
        self.seq += 1
        ts = time.time() if ts is None else ts
        self._write(pack_event(name, self.seq, ts, data))

    def deliver(self, event: BusEvent) -> None:
        """Bus callback: filter by scope and subscriptions, number, write."""
        if self.closing or not self.subscriptions:
            return
        if not self.engine.bus.visible(self.session, event):
            return
        for sub in self.subscriptions.values():
            if sub.wants(event):
                break
        else:
            return
        self.seq += 1
        self._write(event.frame_head + msgpack.packb(self.seq) + event.frame_tail)

    def _write(self, frame: bytes) -> None:
        if self.closing or self.transport is None:
            return
        if self._write_paused:
            self._pending.append(frame)
            if len(self._pending) > self.cfg.event_queue_max:
                self.close_with_error(SlowConsumer(
                    f"client did not read: more than {self.cfg.event_queue_max} frames queued "
                    f"behind a full {self.cfg.write_buffer_bytes}-byte write buffer; disconnecting"))
            return
        self.transport.write(frame)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        while self._pending and not self._write_paused and not self.closing:
            assert self.transport is not None
            self.transport.write(self._pending.popleft())

    def close_with_error(self, exc: EngineError) -> None:
        """Send an ``error`` event (bypassing the queue) and close."""
        if self.closing or self.transport is None:
            return
        err = error_reply(exc)
        self.close_reason = err["code"]
        self.seq += 1
        frame = pack_event("error", self.seq, time.time(), err)
        self._pending.clear()
        self.closing = True
        logger.warning("control connection %s (user %r) closed: %s: %s", self.session.peer,
                       self.session.user, err["code"], err["message"])
        self.engine.bus.remove(self)
        transport = self.transport
        transport.write(frame)
        transport.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        # close() waits for the buffer to drain; a client that still does not
        # read after the grace period is cut off.
        if not self._lost and self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, sub: Subscription) -> None:
        self.subscriptions[sub.id] = sub
        self.engine.bus.add(self)

    def unsubscribe(self, sub_id: int | None) -> list[int]:
        if sub_id is None:
            removed = list(self.subscriptions)
            self.subscriptions.clear()
        else:
            removed = [sub_id] if self.subscriptions.pop(sub_id, None) else []
        if not self.subscriptions:
            self.engine.bus.remove(self)
        return removed

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()


class ControlServer:
    """One listener (TCP or Unix) of the control socket."""

    def __init__(self, engine: "Engine", listener: ControlListener, cfg: ControlSection,
                 unix_path: str = "") -> None:
        self.engine = engine
        self.listener = listener
        self.cfg = cfg
        self.unix_path = unix_path
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in listener.allow_networks]

    @property
    def address(self) -> tuple[str, int] | str:
        """Bound ``(host, port)`` (the real port when configured as 0) or the Unix path."""
        if self.listener.transport == "unix":
            return self.unix_path
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]

    def peer_allowed(self, peer: Any) -> bool:
        if not self._networks or not isinstance(peer, tuple):
            return True
        try:
            addr = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        return any(addr in n for n in self._networks)

    async def start(self) -> None:
        """Bind and listen; raises ``OSError`` when the address is taken."""
        loop = asyncio.get_running_loop()
        if self.listener.transport == "tcp":
            tls = self._tls_context()  # issue 12: TLS on the control socket
            self._server = await loop.create_server(lambda: Connection(self), self.listener.host,
                                                    self.listener.port, reuse_address=True, backlog=1024,
                                                    ssl=tls, ssl_handshake_timeout=10.0 if tls else None)
            logger.info("control socket listening on %s %s:%d", "tls" if tls else "tcp", *self.address)
        else:
            path = self.unix_path
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            if os.path.exists(path):
                if not stat.S_ISSOCK(os.stat(path).st_mode):
                    raise OSError(f"{path} exists and is not a socket")
                if _unix_socket_alive(path):
                    raise OSError(f"{path}: another engine is listening there")
                os.unlink(path)  # stale socket of a previous run
            self._server = await loop.create_unix_server(lambda: Connection(self), path, backlog=1024)
            os.chmod(path, 0o660)
            logger.info("control socket listening on unix %s", path)

    def _tls_context(self) -> Any:
        lst = self.listener
        if not lst.tls_cert:
            return None
        from sip.tls import server_context

        resolve = self.engine.config.resolve_path
        return server_context(resolve(lst.tls_cert), resolve(lst.tls_key),
                              resolve(lst.tls_client_ca) if lst.tls_client_ca else None)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        """Stop accepting, tell clients, close every connection."""
        self.stop_accepting()
        for conn in list(self.connections):
            if conn.transport is not None and not conn.closing:
                stopping = EngineStopping(reason="shutdown")
                conn.send_event(stopping.NAME, stopping.data())
                conn.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self.listener.transport == "unix" and os.path.exists(self.unix_path):
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass


def _unix_socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect(path)
        except OSError:
            return False
        return True
