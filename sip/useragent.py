"""``SipEndpoint``: the SIP stack on real sockets, the engine's entry point.

Theory of operation
-------------------
One :class:`~sip.stack.SipStack` (sans-IO) plus one
:class:`~sip.transport.SipTransport` (asyncio UDP + TCP on the same port).
The application gets every core event through ``on_event`` (called in
order, on the loop; it may answer at once) or, without a callback, through
``await endpoint.next_event()``.  Every method here passes ``loop.time()``
as ``now`` to the core and flushes the transport afterwards.

Example::

    async def main():
        def on_event(ev):
            if isinstance(ev, RequestReceived) and ev.request.method == "INVITE":
                ep.respond(ev.transaction, 200, body=answer, content_type="application/sdp")
        ep = SipEndpoint("127.0.0.1", 0, on_event=on_event)
        await ep.start()
        ...
        await ep.stop()
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable

from .dialog import Dialog
from .events import Event
from .qualify import Qualifier
from .stack import SipStack
from .transaction import ClientTransaction, ServerTransaction
from .transport import SipTransport

Address = tuple[str, int]


class SipEndpoint:
    """A bound SIP user agent.

    Args:
        host, port: where to listen (port 0: any free port; UDP and TCP share it).
        on_event: callback for core events; None queues them for :meth:`next_event`.
        tcp: also listen on TCP (and allow §18.1.1 TCP for large requests).
        registrar: a :class:`sip.registrar.Registrar` answering REGISTER.
        guard: a :class:`sip.guard.SourceGuard` screening inbound messages.
        **stack_options: passed to :class:`SipStack` (user, user_agent, tenant ...).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 on_event: Callable[[Event], None] | None = None, tcp: bool = True,
                 registrar: Any = None, guard: Any = None, **stack_options: Any) -> None:
        self.host = host
        self.port = port
        self.tcp = tcp
        self._queue: asyncio.Queue[Event] | None = None
        self._on_event = on_event
        self.stack = SipStack((host, port), registrar=registrar, tcp=tcp, **stack_options)
        self.transport: SipTransport | None = None
        self.address: Address = (host, port)
        self.guard = guard
        self.qualifier: Qualifier | None = None

    async def start(self) -> Address:
        """Bind the listeners; returns the bound (host, port)."""
        if self._on_event is None:
            self._queue = asyncio.Queue()
            callback: Callable[[Event], None] = self._queue.put_nowait
        else:
            callback = self._on_event
        # With port 0 the UDP port is picked first and TCP must get the same
        # number; another TCP socket may hold it, so retry with a new pick.
        for attempt in range(20 if self.port == 0 else 1):
            self.transport = SipTransport(self.stack, callback)
            self.transport.guard = self.guard
            self.address = await self.transport.listen_udp(self.host, self.port)
            if not self.tcp:
                break
            try:
                await self.transport.listen_tcp(self.host, self.address[1])
                break
            except OSError:
                self.transport.close()
                self.transport = None
                if attempt == 19 or self.port != 0:
                    raise
        self.stack.bind(self.address)
        return self.address

    async def stop(self) -> None:
        """Close every socket (pending transactions are abandoned)."""
        if self.qualifier is not None:
            self.qualifier.stop()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        await asyncio.sleep(0)

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event (only without ``on_event``); raises TimeoutError."""
        assert self._queue is not None, "next_event() needs SipEndpoint(on_event=None)"
        return await asyncio.wait_for(self._queue.get(), timeout)

    def qualify(self, *, interval_s: float = 30.0, timeout_s: float = 32.0, max_failures: int = 1,
                on_change: Callable[[str, str, bool, float], None] | None = None) -> Qualifier:
        """Start OPTIONS pings to every contact registered with our registrar (:mod:`sip.qualify`).

        Ping answers and timeouts are consumed before the application sees
        events; ``on_change(aor, contact, reachable, now)`` reports changes.
        Returns the :class:`~sip.qualify.Qualifier` (``qualifier.reachable(aor)``).
        """
        assert self.transport is not None, "SipEndpoint not started"
        if self.stack.registrar is None:
            raise ValueError("qualify needs a registrar (its location service holds the contacts)")
        if self.qualifier is not None:
            self.qualifier.stop()
        qualifier = Qualifier(self.stack, self.stack.registrar.location, interval_s=interval_s,
                              timeout_s=timeout_s, max_failures=max_failures, on_change=on_change)
        transport = self.transport
        inner = transport.on_event
        now = self._now

        def on_event(ev: Event) -> None:
            current = self.qualifier
            if current is None or not current.handle_event(ev, now()):
                inner(ev)
        if self.qualifier is None:
            transport.on_event = on_event
        self.qualifier = qualifier
        qualifier.start(now())
        self._flush()
        return qualifier

    # ------------------------------------------------------------ TU calls
    def _now(self) -> float:
        assert self.transport is not None, "SipEndpoint not started"
        return self.transport.loop.time()

    def _flush(self) -> None:
        if self.transport is not None:
            self.transport.transmit()

    def respond(self, txn: ServerTransaction, status: int, reason: str | None = None, *,
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None) -> Dialog | None:
        """Answer a request (see :meth:`SipStack.respond`)."""
        dialog = self.stack.respond(txn, status, reason, headers=headers, body=body,
                                    content_type=content_type, now=self._now())
        self._flush()
        return dialog

    def request(self, method: str, uri: str, **kwargs: Any) -> ClientTransaction:
        """Out-of-dialog request (see :meth:`SipStack.request`)."""
        txn = self.stack.request(method, uri, self._now(), **kwargs)
        self._flush()
        return txn

    def invite(self, uri: str, **kwargs: Any) -> ClientTransaction:
        """Initial INVITE (see :meth:`SipStack.invite`)."""
        txn = self.stack.invite(uri, self._now(), **kwargs)
        self._flush()
        return txn

    def request_in_dialog(self, dialog: Dialog, method: str, **kwargs: Any) -> ClientTransaction:
        """INFO, REFER, NOTIFY, re-INVITE ... (see :meth:`SipStack.request_in_dialog`)."""
        txn = self.stack.request_in_dialog(dialog, method, self._now(), **kwargs)
        self._flush()
        return txn

    def bye(self, dialog: Dialog) -> ClientTransaction | None:
        """Hang up (see :meth:`SipStack.bye`)."""
        txn = self.stack.bye(dialog, self._now())
        self._flush()
        return txn

    def keepalive(self, dialog: Dialog, interval_s: float) -> None:
        """Periodic in-dialog OPTIONS (see :meth:`SipStack.keepalive`)."""
        self.stack.keepalive(dialog, interval_s, self._now())
        self._flush()

    def cancel(self, txn: ClientTransaction) -> ClientTransaction | None:
        """CANCEL a pending INVITE (see :meth:`SipStack.cancel`)."""
        ctxn = self.stack.cancel(txn, self._now())
        self._flush()
        return ctxn
