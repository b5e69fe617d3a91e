"""asyncio UDP and TCP transports for the sans-IO SIP core: the only IO in sip/.

Theory of operation
-------------------
Shaped like aioquic's ``asyncio/protocol.py``: every input (a datagram, a
framed TCP message, a timer) is handed to the core with ``loop.time()`` as
``now``; then :meth:`SipTransport.transmit` drains the core: events go to the
application callback, outgoing ``(bytes, addr, transport)`` triples go to the
UDP socket or the TCP connection for ``addr``, and a single ``loop.call_at``
is re-armed for ``core.get_timer()``.  There is no task per datagram, per
dialog or per timer.

Robustness (issue 4): the core turns unparseable input into a 400 (when a
response can be formed) or a drop; anything still raised by the core while
handling peer input is logged and the datagram dropped, so nothing escapes
``datagram_received``.  A TCP peer whose stream cannot be framed is closed
without touching other connections.

TCP (RFC 3261 §18): connections are keyed by the peer address and reused in
both directions; an outgoing message for an address without a connection
opens one (the message waits in the connection's queue); connections idle
for ``tcp_idle_timeout_s`` are closed by one periodic sweep.  The core picks
TCP for requests over 1300 bytes (§18.1.1); the transport only obeys.

uvloop is used when installed (:func:`install_uvloop`).
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Callable, Protocol

from .errors import RemoteProtocolError
from .framing import PONG, KeepAlive, StreamFramer
from .guard import Verdict
from .message import error_response

logger = logging.getLogger(__name__)

Address = tuple[str, int]

# The core's deadlines are rounded up to this grid before arming the loop
# timer (SIP timers are >= T1/2 apart per transaction; 10 ms is noise to them).
TIMER_GRID_S = 0.01


class SansIOCore(Protocol):
    """What the transport drives (``sip.stack.SipStack``)."""

    def receive_datagram(self, data: bytes, addr: Address, now: float, transport: str = "UDP") -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address, str]]: ...
    def next_event(self) -> Any: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def transport_error(self, addr: Address, transport: str, now: float) -> None: ...


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when uvloop is installed; True if so."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "SipTransport") -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:  # type: ignore[override]
        self.owner._input(data, (addr[0], addr[1]), "UDP")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: nothing to do for UDP (timers cover loss).
        logger.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    name = "TCP"  # the transport the core is told ("TLS" for sip.tls connections)

    def __init__(self, owner: "SipTransport") -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.addr: Address = ("", 0)
        self.framer = StreamFramer()
        self.queue: list[bytes] = []
        self.last_activity = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: duck-type it.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        self.last_activity = self.owner.loop.time()
        self.owner._tcp_conns[self.addr] = self
        for data in self.queue:
            transport.write(data)
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        framer = self.framer
        framer.feed(data)
        while True:
            try:
                item = framer.next_frame()
            except RemoteProtocolError as exc:
                # The stream cannot be framed any more: answer what can be
                # answered (sipmsg's error_response), then close this peer only.
                head = framer.failed_head
                resp = error_response(head, exc) if head else None
                if resp is not None and self.transport is not None:
                    self.transport.write(bytes(resp))
                logger.warning("closing TCP connection from %s:%d: %s", self.addr[0], self.addr[1], exc)
                self.close()
                break
            if item is None:
                break
            if item is KeepAlive.PING:  # RFC 5626 §3.5.1: answer a CRLFCRLF ping
                self.write(PONG)
            elif not isinstance(item, KeepAlive):
                self.owner._input(item, self.addr, self.name, transmit=False)
        self.owner.transmit()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.owner._tcp_conns.get(self.addr) is self:
            del self.owner._tcp_conns[self.addr]

    def write(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        if self.transport is None:
            self.queue.append(data)
        else:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class SipTransport:
    """Binds UDP/TCP listeners and pumps a sans-IO core.

    Args:
        core: the sans-IO core (``SipStack``).
        on_event: called with each core event, in order; it may call into the
            core (answer, send); the transport drains again afterwards.
        tcp_idle_timeout_s: close TCP connections idle this long.
    """

    def __init__(self, core: SansIOCore, on_event: Callable[[Any], None] | None = None,
                 tcp_idle_timeout_s: float = 60.0) -> None:
        self.core = core
        self.on_event = on_event or (lambda event: None)
        self.loop = asyncio.get_running_loop()
        self.tcp_idle_timeout_s = tcp_idle_timeout_s
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_servers: list[asyncio.AbstractServer] = []
        self._tcp_conns: dict[Address, _TcpProtocol] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task] = set()
        self._closed = False
        self._transmitting = False
        self.guard: Any = None  # sip.guard.SourceGuard consulted before the core (issue 12)
        self.tls: Any = None  # sip.tls.TlsSettings: outgoing "TLS" connections (issue 12)

    # ------------------------------------------------------------ listeners
    async def listen_udp(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Bind the UDP socket (one per transport); returns the bound address."""
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port))
        self._udp = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        return (sock[0], sock[1])

    async def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Listen for TCP connections; returns the bound address."""
        server = await self.loop.create_server(lambda: _TcpProtocol(self), host, port)
        self._tcp_servers.append(server)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.tcp_idle_timeout_s / 2, self._sweep_idle)
        sock = server.sockets[0].getsockname()
        return (sock[0], sock[1])

    def close(self) -> None:
        """Close every socket and cancel the timers (idempotent)."""
        self._closed = True
        for handle in (self._timer, self._sweep):
            if handle is not None:
                handle.cancel()
        self._timer = self._sweep = None
        if self._udp is not None:
            self._udp.close()
        for server in self._tcp_servers:
            server.close()
        for conn in list(self._tcp_conns.values()):
            conn.close()
        for task in self._connecting:
            task.cancel()

    # ------------------------------------------------------------ pumping
    def _input(self, data: bytes, addr: Address, transport: str, transmit: bool = True) -> None:
        if self.guard is not None and not self._admit(data, addr, transport):
            return
        try:
            self.core.receive_datagram(data, addr, self.loop.time(), transport)
        except Exception:  # never let peer input kill the loop (issue 4)
            logger.exception("dropping %d bytes from %s:%d over %s after an internal error",
                             len(data), addr[0], addr[1], transport)
        if transmit:
            self.transmit()

    def _admit(self, data: bytes, addr: Address, transport: str) -> bool:
        # Abuse guard (sip/guard.py): decided on raw bytes before any parse or
        # transaction; a refusal is a stateless 403 (or nothing).
        guard = self.guard
        verdict = guard.inspect(data, addr, self.loop.time())
        event = guard.next_event()
        while event is not None:  # SourceBanned: to the application like core events
            try:
                self.on_event(event)
            except Exception:
                logger.exception("application event handler failed on %r", type(event).__name__)
            event = guard.next_event()
        if verdict is Verdict.ACCEPT:
            return True
        if verdict is Verdict.REJECT:
            resp = error_response(data, RemoteProtocolError("source not allowed", 403))
            if resp is not None:
                self._send([(bytes(resp), addr, transport)])
        return False

    def transmit(self) -> None:
        """Deliver core events, send what the core produced, re-arm the timer.

        Re-entrant calls (the application answering from ``on_event``) only
        mark more work: the outer call's loop picks it up.
        """
        if self._transmitting:
            return
        self._transmitting = True
        try:
            self._transmit()
        finally:
            self._transmitting = False

    def _transmit(self) -> None:
        core = self.core
        while True:
            event = core.next_event()
            progressed = False
            while event is not None:
                progressed = True
                try:
                    self.on_event(event)
                except Exception:
                    logger.exception("application event handler failed on %r", type(event).__name__)
                event = core.next_event()
            out = core.datagrams_to_send(self.loop.time())
            if out:
                progressed = True
                self._send(out)
            if not progressed:
                break
        # One call_at for the earliest deadline.  It is only moved *earlier*:
        # when the earliest timer was cancelled the armed one fires early,
        # finds nothing due and re-arms, which is cheaper than re-arming on
        # nearly every datagram (each answered INVITE cancels its 100 timer).
        deadline = core.get_timer()
        if deadline is not None:
            # On a TIMER_GRID_S grid: Timer J/L/H ends of every finished call
            # then share one wake-up instead of one loop callback each.
            deadline = max(deadline, math.ceil(deadline / TIMER_GRID_S) * TIMER_GRID_S)
        if deadline is not None and not self._closed and (
                self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.core.handle_timer(self.loop.time())
        except Exception:
            logger.exception("SIP core timer handling failed")
        self.transmit()

    def _send(self, out: list[tuple[bytes, Address, str]]) -> None:
        udp = self._udp
        for data, addr, transport in out:
            if transport == "UDP":
                if udp is None:
                    logger.error("no UDP listener to send %d bytes to %s:%d", len(data), *addr)
                    continue
                udp.sendto(data, addr)
            else:
                conn = self._tcp_conns.get(addr)
                # RFC 3261 §26.2.1: a TLS message never leaves over a plain TCP
                # connection that happens to go to the same address.
                if conn is None or conn.closed or (transport == "TLS" and conn.name != "TLS"):
                    conn = self._connect(addr, transport)
                conn.write(data)

    def _connect(self, addr: Address, transport: str = "TCP") -> _TcpProtocol:
        proto = _TcpProtocol(self)
        proto.addr = addr
        self._tcp_conns[addr] = proto
        tls: dict[str, Any] = {}
        if transport == "TLS":  # RFC 3261 §26.3.1: server certificate checked (sip/tls.py)
            proto.name = "TLS"
            if self.tls is not None:
                tls = self.tls.connect_args(addr)

        async def connect() -> None:
            try:
                if proto.name == "TLS" and not tls:  # never fall back to plain TCP
                    raise OSError("no TLS client settings for this transport")
                await self.loop.create_connection(lambda: proto, addr[0], addr[1], **tls)
            except OSError as exc:  # ssl.SSLError (a failed certificate check) is an OSError
                logger.warning("%s connect to %s:%d failed: %s", proto.name, addr[0], addr[1], exc)
                proto.closed = True
                if self._tcp_conns.get(addr) is proto:
                    del self._tcp_conns[addr]
                self.core.transport_error(addr, proto.name, self.loop.time())
                self.transmit()

        task = self.loop.create_task(connect())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.tcp_idle_timeout_s / 2, self._sweep_idle)
        return proto

    def _sweep_idle(self) -> None:
        now = self.loop.time()
        for conn in list(self._tcp_conns.values()):
            if now - conn.last_activity >= self.tcp_idle_timeout_s:
                logger.debug("closing idle TCP connection to %s:%d", *conn.addr)
                conn.close()
        self._sweep = None if self._closed else self.loop.call_later(
            self.tcp_idle_timeout_s / 2, self._sweep_idle)

    @property
    def tcp_connections(self) -> list[Address]:
        """Addresses of the open TCP connections."""
        return [a for a, c in self._tcp_conns.items() if not c.closed]
