"""The sans-IO SIP user-agent core: transactions, dialogs and registrar together.

Theory of operation
-------------------
:class:`SipStack` has the aioquic/h11 shape (STYLE.md §1)::

    stack.receive_datagram(data, addr, now, transport="UDP")
    stack.datagrams_to_send(now)   -> [(bytes, (host, port), "UDP" | "TCP"), ...]
    stack.next_event()             -> sip.events.Event | None
    stack.get_timer()              -> absolute deadline | None
    stack.handle_timer(now)

plus the TU calls (``respond``, ``request``, ``invite``, ``request_in_dialog``,
``bye``, ``cancel``) that queue bytes the same way.  It imports no asyncio,
socket or time; ``sip/transport.py`` drives it.

Input path (RFC 3261 §18.2.1, §17.2.3, §8.2, §12.2.2):

1. ``parse_message`` (sipmsg); a :class:`RemoteProtocolError` becomes the
   hinted response via ``error_response`` (400 with the fault named as
   reason phrase), or a drop when nothing can be addressed.
2. Requests: the top Via gets ``received``/``rport`` (RFC 3581); the response
   address is fixed once per server transaction by §18.2.2: the source
   address for TCP, else the source IP with the rport (when asked for) or
   the Via port — never the Via host.  Retransmissions match the server
   transaction (branch + sent-by + method) and are absorbed; ACK for a non-2xx
   goes to the INVITE transaction, ACK for a 2xx to its dialog; CANCEL
   answers 200 and makes the INVITE 487 (§9.2); a request without To tag
   that repeats (From tag, Call-ID, CSeq) on another branch is 482 (§8.2.2.2);
   Max-Forwards 0 is 483 (except OPTIONS, §11); a mid-dialog request of no
   dialog is 481, a lower CSeq is 500 (§12.2.2); a re-INVITE during ours is
   491, during another of theirs 500 + Retry-After (§14.2).  BYE, OPTIONS and
   REGISTER (when a registrar is configured) are answered by the stack;
   everything else becomes a ``RequestReceived`` event.
3. Responses match client transactions (branch + CSeq method, §17.1.3).  For
   INVITE: a 1xx with To tag makes an early dialog, a 2xx confirms it and the
   stack sends the ACK (§13.2.2.4), resending that ACK for every 2xx
   retransmission (RFC 6026 §8.4); a 491 to our re-INVITE schedules the
   retry of §14.1.

UAS 2xx reliability (§13.3.1.4, RFC 6026): after a 2xx to INVITE the stack
retransmits it at T1, 2T1 ... capped at T2, until the ACK arrives; after 64*T1
it gives up, sends BYE and reports ``DialogTerminated(reason="ack_timeout")``.

Every deadline lives in one :class:`~sip.timers.TimerHeap`.
"""

import logging
import random
from collections import deque
from typing import Any, Iterable

from .dialog import CallLogger, Dialog, DialogState, DialogTrigger, uri_address
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    AckReceived, CancelReceived, DialogEstablished, DialogTerminated, Event, RequestReceived,
    ResponseReceived, TransactionTimedOut,
)
from .message import (
    Request, Response, Via, check_request, error_response, make_request, make_response, parse_message,
)
from .timers import T1, T2, TimerEntry, TimerHeap
from .transaction import (
    TIMEOUT_TRIGGERS, ClientTransaction, InviteClientState, InviteServerState, ServerTransaction,
    Transaction, Trigger,
)

logger = logging.getLogger(__name__)

Address = tuple[str, int]

# RFC 3261 §18.1.1: a request within 200 bytes of the 1500-byte path MTU goes over TCP.
UDP_MTU_LIMIT = 1300
SDP_TYPES = ("application/sdp",)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, MESSAGE, UPDATE, REGISTER"


def response_address(via: Via, source: Address, transport: str) -> Address:
    """Where a response to a request with top Via ``via`` goes (§18.2.2, RFC 3581 §4).

    Reliable transports answer on the connection (the source).  Over UDP
    the host is always the packet's source IP (the ``received`` value); the
    port is the source port when the client asked for ``rport``, else the
    Via port (default 5060).  A ``maddr`` is honoured as §18.2.2 says.
    """
    if transport != "UDP":
        return source
    maddr = via.maddr
    if maddr:
        return (maddr, via.port or 5060)
    if via.rport is not None:
        return source
    return (source[0], via.port or 5060)


class _Pending2xx:
    """A 2xx to INVITE being retransmitted until the ACK arrives (§13.3.1.4)."""

    __slots__ = ("data", "addr", "transport", "interval", "timer", "giveup", "cseq")

    def __init__(self, data: bytes, addr: Address, transport: str, cseq: int) -> None:
        self.data = data
        self.addr = addr
        self.transport = transport
        self.interval = T1
        self.timer: TimerEntry | None = None
        self.giveup: TimerEntry | None = None
        self.cseq = cseq


class SipStack:
    """Sans-IO SIP UA core (see the module docstring).

    Args:
        local_addr: (host, port) we listen on; used in Via and Contact.
        user: user part of our Contact URI.
        user_agent: ``User-Agent``/``Server`` header value ("" to omit).
        registrar: a :class:`sip.registrar.Registrar` answering REGISTER, or None (405).
        tcp: True when a TCP listener exists (enables §18.1.1 and TCP targets).
        auto_options: answer OPTIONS with 200 (keep-alives, capability queries).
        tenant: default tenant stamped on dialogs.
        rng: random source for tags, branches and glare delays (tests seed it).
    """

    def __init__(self, local_addr: Address, *, user: str = "ctiengine", user_agent: str = "ctiengine",
                 registrar: Any = None, tcp: bool = True, auto_options: bool = True,
                 tenant: str = "default", rng: random.Random | None = None) -> None:
        self.local_addr = local_addr
        self.user_agent = user_agent
        self.registrar = registrar
        self.tcp = tcp
        self.auto_options = auto_options
        self.tenant = tenant
        self.timers = TimerHeap()
        self._rng = rng or random.Random()
        self._counter = 0
        self._out: list[tuple[bytes, Address, str]] = []
        self._events: deque[Event] = deque()
        self._client: dict[tuple, ClientTransaction] = {}
        self._server: dict[tuple, ServerTransaction] = {}
        self._merge: dict[tuple, tuple] = {}
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}
        self.user = user
        self.contact = ""
        self.tls_contact = ""
        """``<sips:user@host:port>`` of our TLS listener (set by :func:`sip.tls.enable_tls`)."""
        self.bind(local_addr)
        self._extra_headers: tuple[tuple[str, str], ...] = (
            (("User-Agent", user_agent),) if user_agent else ())
        if registrar is not None:
            registrar.attach(self)

    def bind(self, local_addr: Address) -> None:
        """Set the address used in Via and Contact (after the transport bound it)."""
        self.local_addr = local_addr
        host, port = local_addr
        self.contact = f"<sip:{self.user}@{host}:{port}>"

    def contact_for(self, transport: str) -> str:
        """Our Contact for a message over ``transport``: ``sips:`` over TLS when a TLS listener is set.

        RFC 3261 §8.1.1.8 / §12.1.1 and RFC 5630 §4.1: a dialog set up over
        TLS gets a SIPS Contact, so the peer's in-dialog requests come back
        over TLS and never in the clear.
        """
        if transport == "TLS" and self.tls_contact:
            return self.tls_contact
        return self.contact

    # ================================================================ sans-IO
    def receive_datagram(self, data: bytes, addr: Address, now: float, transport: str = "UDP") -> None:
        """Feed one datagram (or one framed stream message) from ``addr``.

        Never raises for bad peer input: it is answered (400 ...) or dropped.
        """
        try:
            # Eager checks only (start line, mandatory headers, scalars); the
            # structured fields are parsed when first used, inside the try
            # below, and a request that reaches the application has had its
            # Request-URI, Via, From, To, Contact and Record-Route parsed.
            msg = parse_message(data, validate=False)
        except RemoteProtocolError as exc:
            self._refuse(data, exc, addr, transport)
            return
        try:
            if isinstance(msg, Response):
                self._receive_response(msg, addr, transport, now)
            else:
                self._receive_request(msg, addr, transport, now)
        except RemoteProtocolError as exc:  # a lazily parsed field turned out bad
            self._refuse(data, exc, addr, transport)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address, str]]:
        """Everything queued for the network since the last call."""
        out = self._out
        if out:
            self._out = []
        return out

    def next_event(self) -> Event | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """Earliest deadline (absolute, same clock as ``now``) or None."""
        return self.timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``."""
        self.timers.run_due(now)

    def transport_error(self, addr: Address, transport: str, now: float) -> None:
        """The transport could not reach ``addr`` (§17.1.4): fail its client transactions."""
        for txn in list(self._client.values()):
            if txn.addr == addr and txn.transport == transport:
                txn.transport_error(now)

    # ---------------------------------------------------- TransactionOwner
    def transmit(self, data: bytes, addr: Address, transport: str) -> None:
        self._out.append((data, addr, transport))

    def transaction_ended(self, txn: Transaction, trigger: Trigger) -> None:
        if isinstance(txn, ServerTransaction):
            self._server.pop(txn.key, None)
            mkey = txn.merge_key
            if mkey is not None and self._merge.get(mkey) == txn.key:
                del self._merge[mkey]
            if trigger is Trigger.TIMER_H:
                self._timed_out(txn, "timer H")
            return
        self._client.pop(txn.key, None)
        if trigger in TIMEOUT_TRIGGERS or trigger is Trigger.TRANSPORT_ERROR:
            reason = "transport error" if trigger is Trigger.TRANSPORT_ERROR else f"timer {trigger.name[-1]}"
            self._timed_out(txn, reason)
            ctx = txn.context
            if isinstance(ctx, Dialog):
                if txn.method == "INVITE" and ctx.client_invite is txn:
                    ctx.client_invite = None
                if not ctx.terminated and txn.method != "INVITE":
                    self._terminate(ctx, "timeout", DialogTrigger.TIMEOUT)
            elif isinstance(ctx, list):
                for dialog in ctx:
                    if not dialog.terminated:
                        self._terminate(dialog, "timeout", DialogTrigger.TIMEOUT)

    def _timed_out(self, txn: Transaction, reason: str) -> None:
        CallLogger(logger, {"call_id": txn.call_id}).info("%s transaction gave up: %s", txn.method, reason)
        self._events.append(TransactionTimedOut(txn, txn.call_id, txn.method, reason))

    # ============================================================= helpers
    def _token(self) -> str:
        self._counter += 1
        return f"{self._rng.getrandbits(40):010x}{self._counter:x}"

    def new_tag(self) -> str:
        """A fresh tag (§19.3: at least 32 bits of randomness)."""
        return self._token()

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch (magic cookie z9hG4bK, §8.1.1.7)."""
        return "z9hG4bK" + self._token()

    def new_call_id(self) -> str:
        return f"{self._token()}{self._rng.getrandbits(32):08x}@{self.local_addr[0]}"

    def _via(self, transport: str, branch: str) -> str:
        host, port = self.local_addr
        return f"SIP/2.0/{transport} {host}:{port};branch={branch};rport"

    def _refuse(self, data: bytes, exc: RemoteProtocolError, addr: Address, transport: str) -> None:
        resp = error_response(data, exc)
        if resp is None:
            logger.warning("dropping unparseable message from %s:%d: %s", addr[0], addr[1], exc.message)
            return
        logger.warning("answering %d to a bad request from %s:%d: %s", resp.status_code, addr[0], addr[1],
                       exc.message)
        self.transmit(bytes(resp), addr, transport)

    # ============================================================ requests
    def _receive_request(self, req: Request, addr: Address, transport: str, now: float) -> None:
        via = req.top_via
        method = req.method
        # §18.2.1 / RFC 3581 §4: record where the request really came from.
        if via.host != addr[0] or via.rport is True:
            self._stamp_via(req, via, addr)
        branch = via.branch or f"2543:{req.call_id}:{req.cseq[0]}:{req.from_tag}"
        if method == "ACK":
            txn = self._server.get((branch, via.host, via.port, "INVITE"))
            if txn is not None:
                if txn.receive_ack(now):
                    self._receive_2xx_ack(req, now)
                return
            self._receive_2xx_ack(req, now)
            return
        key = (branch, via.host, via.port, method)
        txn = self._server.get(key)
        if txn is not None:
            txn.receive_request(now)  # retransmission: absorbed or answered again
            return
        call_id = req.call_id
        to_tag = req.to_tag
        if to_tag is None or method == "INVITE":
            # What the TU and the dialog will use must be valid before a
            # transaction exists (a bad one is answered 400 by the caller).
            req.via, req.uri, req.from_, req.contact, req.record_route  # noqa: B018
            # §8.2.2: Request-URI scheme (416), Require (420 + Unsupported),
            # INVITE bodies other than SDP (415).
            check_request(req, content_types=SDP_TYPES if method == "INVITE" else None)
        raddr = response_address(via, addr, transport)
        txn = ServerTransaction(self, key, method, call_id, raddr, transport, now, req, addr)
        self._server[key] = txn
        if method == "CANCEL":
            self._receive_cancel(req, txn, (branch, via.host, via.port, "INVITE"), now)
            return
        cseq = req.cseq[0]
        if to_tag is None:
            # §8.2.2.2: a merged request (same From tag, Call-ID, CSeq; another branch).
            mkey = (req.from_tag, call_id, cseq, method)
            if mkey in self._merge:
                self.respond(txn, 482, now=now)
                return
            self._merge[mkey] = key
            txn.merge_key = mkey
        mf = req.max_forwards
        if mf is not None and mf <= 0 and method != "OPTIONS":
            self.respond(txn, 483, now=now)  # §16.3 step 3 / §8.2 for our B2BUA legs
            return
        dialog = None
        if to_tag is not None:
            dialog = self._dialogs.get((call_id, to_tag, req.from_tag or ""))
            if dialog is None or dialog.terminated:
                self.respond(txn, 481, now=now)  # §12.2.2
                return
            if cseq < dialog.remote_seq:
                self.respond(txn, 500, "CSeq Out of Order", now=now)  # §12.2.2
                return
            dialog.remote_seq = cseq
            txn.context = dialog
            if method == "INVITE":
                if dialog.client_invite is not None:
                    self.respond(txn, 491, now=now)  # §14.2 glare
                    return
                if dialog.server_invite is not None:
                    self.respond(txn, 500, headers=[("Retry-After", str(self._rng.randint(0, 10)))], now=now)
                    return
                dialog.server_invite = txn
                dialog.refresh_target(req.contact)  # §12.2.2: target refresh request
            elif method == "UPDATE":
                dialog.refresh_target(req.contact)
            elif method == "BYE":
                self.respond(txn, 200, now=now)
                pending = dialog.server_invite
                self._terminate(dialog, "bye_received", DialogTrigger.BYE)
                if pending is not None and pending.state is InviteServerState.PROCEEDING:
                    self.respond(pending, 487, now=now)  # §15.1.2: BYE in an early dialog
                return
        if method == "INVITE":
            # §17.2.1: 100 Trying unless the TU answers within 200 ms.
            txn.trying_timer = self.timers.schedule(now + 0.2, self._send_trying, txn)
        elif method == "OPTIONS" and self.auto_options:
            self.respond(txn, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")], now=now)
            return
        elif method == "REGISTER":
            if self.registrar is None:
                self.respond(txn, 405, headers=[("Allow", ALLOW.replace(", REGISTER", ""))], now=now)
            else:
                status, reason, headers = self.registrar.handle_register(req, addr, transport, now)
                self.respond(txn, status, reason, headers=headers, now=now)
            return
        self._events.append(RequestReceived(req, txn, addr, transport, dialog))

    @staticmethod
    def _stamp_via(req: Request, via: Via, addr: Address) -> None:
        # §18.2.1: add received; RFC 3581 §4: fill in an empty rport.
        params = {k: v for k, v in via.params.items() if k.lower() not in ("received", "rport")}
        params["received"] = addr[0]
        if via.rport is not None:
            params["rport"] = str(addr[1])
        stamped = Via(via.transport, via.host, via.port, params, via.protocol)
        h = req.headers
        rest = h.get_all("Via")[1:]
        # The Via values move to the top, one per line, the stamped one first
        # (what remove + prepend would do); only the cached Via parse is stale.
        items = [("via", "Via", str(stamped))]
        items.extend([("via", "Via", value) for value in rest])
        items.extend([item for item in h._items if item[0] != "via"])
        h._items = items
        h._raw = None
        h._cache.pop("via", None)

    def _send_trying(self, txn: object, now: float) -> None:
        assert isinstance(txn, ServerTransaction)
        txn.trying_timer = None
        if txn.last_status == 0 and txn.state is InviteServerState.PROCEEDING:
            self.respond(txn, 100, now=now)

    def _receive_cancel(self, req: Request, txn: ServerTransaction, invite_key: tuple, now: float) -> None:
        invite = self._server.get(invite_key)
        if invite is None:
            self.respond(txn, 481, now=now)  # §9.2: no matching transaction
            return
        self.respond(txn, 200, now=now)
        if invite.state is InviteServerState.PROCEEDING:
            self.respond(invite, 487, now=now)
            CallLogger(logger, {"call_id": txn.call_id}).info("INVITE cancelled by the caller")
            self._events.append(CancelReceived(invite.request, invite))

    def _receive_2xx_ack(self, req: Request, now: float) -> None:
        dialog = self._dialogs.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if dialog is None:
            return  # §17.2.3: stray ACK, nothing to answer
        pending = dialog.pending_2xx
        if pending is None or req.cseq[0] != pending.cseq:
            return  # ACK retransmission
        self.timers.cancel(pending.timer)
        self.timers.cancel(pending.giveup)
        dialog.pending_2xx = None
        self._events.append(AckReceived(dialog, req))

    # ============================================================ responses
    def respond(self, txn: ServerTransaction, status: int, reason: str | None = None, *,
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None, now: float) -> Dialog | None:
        """Send a response on a server transaction.

        A 101-299 to an initial INVITE creates the UAS dialog (returned); a
        2xx to any INVITE is retransmitted until its ACK (§13.3.1.4).

        Raises:
            LocalProtocolError: the transaction state forbids this response.
        """
        req: Request = txn.request  # type: ignore[assignment]
        if req is None:
            raise LocalProtocolError(
                f"{txn.method} transaction {txn.call_id} already has its final response ({txn.last_status})")
        method = req.method
        if status > 100 and txn.to_tag is None and req.to_tag is None:
            txn.to_tag = self.new_tag()
        extra = list(self._extra_headers)
        dialog: Dialog | None = None
        if method == "INVITE" and 100 < status < 300:
            extra.append(("Contact", self.contact_for(txn.transport)))
        extra.extend(headers)
        resp = make_response(req, status, reason, to_tag=txn.to_tag, headers=extra, body=body,
                             content_type=content_type)
        data = bytes(resp)
        if method == "INVITE" and status > 100:
            dialog = self._uas_dialog(txn, req, status)
        txn.send_response(status, data, now)
        if dialog is not None and status >= 200:
            if dialog.server_invite is txn:
                dialog.server_invite = None
            if status < 300:
                if dialog.state is DialogState.EARLY:
                    dialog.fire(DialogTrigger.SUCCESS)
                    self._events.append(DialogEstablished(dialog))
                self._start_2xx(dialog, data, txn, req.cseq[0], now)
            elif req.to_tag is None and not dialog.terminated:
                self._terminate(dialog, "rejected", DialogTrigger.FAILURE, emit=False)
        return dialog

    def _uas_dialog(self, txn: ServerTransaction, req: Request, status: int) -> Dialog | None:
        ctx = txn.context
        if isinstance(ctx, Dialog):
            return ctx
        if status >= 300 or req.to_tag is not None:
            return None
        contact = req.contact
        remote_target = contact[0].uri_text if contact else req.uri_text
        dialog = Dialog(
            req.call_id, txn.to_tag or "", req.from_tag or "", "uas",
            local_party=f"{req.headers._first('to')};tag={txn.to_tag}",
            remote_party=req.headers._first("from") or "", local_seq=0, remote_seq=req.cseq[0],
            remote_target=remote_target, route_set=req.headers.get_all("Record-Route"),
            peer=txn.source, transport=txn.transport, local_contact=self.contact_for(txn.transport),
            tenant=self.tenant)
        dialog.invite_seq = req.cseq[0]
        dialog.server_invite = txn  # pending until its final response
        self._dialogs[dialog.id] = dialog
        txn.context = dialog
        return dialog

    def _start_2xx(self, dialog: Dialog, data: bytes, txn: ServerTransaction, cseq: int, now: float) -> None:
        pending = _Pending2xx(data, txn.response_addr, txn.transport, cseq)
        if not txn.reliable:
            pending.timer = self.timers.schedule(now + T1, self._retransmit_2xx, dialog)
        pending.giveup = self.timers.schedule(now + 64 * T1, self._ack_timeout, dialog)
        old = dialog.pending_2xx
        if old is not None:
            self.timers.cancel(old.timer)
            self.timers.cancel(old.giveup)
        dialog.pending_2xx = pending

    def _retransmit_2xx(self, dialog: object, now: float) -> None:
        assert isinstance(dialog, Dialog)
        pending = dialog.pending_2xx
        if pending is None:
            return
        self.transmit(pending.data, pending.addr, pending.transport)
        pending.interval = min(2 * pending.interval, T2)  # §13.3.1.4: like Timer G
        pending.timer = self.timers.schedule(now + pending.interval, self._retransmit_2xx, dialog)

    def _ack_timeout(self, dialog: object, now: float) -> None:
        assert isinstance(dialog, Dialog)
        pending = dialog.pending_2xx
        if pending is None:
            return
        self.timers.cancel(pending.timer)
        dialog.pending_2xx = None
        dialog.log.warning("no ACK for our 2xx after %.0f s: sending BYE", 64 * T1)
        if not dialog.terminated:
            self._send_in_dialog(dialog, "BYE", now)
            self._terminate(dialog, "ack_timeout", DialogTrigger.ACK_TIMEOUT)

    def _terminate(self, dialog: Dialog, reason: str, trigger: DialogTrigger, emit: bool = True) -> None:
        dialog.fire(trigger)
        pending = dialog.pending_2xx
        if pending is not None:
            self.timers.cancel(pending.timer)
            self.timers.cancel(pending.giveup)
            dialog.pending_2xx = None
        self.timers.cancel(dialog.glare_timer)
        self.timers.cancel(dialog.keepalive_timer)
        self._dialogs.pop(dialog.id, None)
        dialog.log.info("dialog terminated: %s", reason)
        if emit:
            self._events.append(DialogTerminated(dialog, reason))

    # ============================================================ UAC side
    def request(self, method: str, uri: str, now: float, *, from_: str | None = None,
                to: str | None = None, call_id: str | None = None, cseq: int = 1,
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None, dest: Address | None = None,
                transport: str | None = None, auth: Any = None) -> ClientTransaction:
        """Send an out-of-dialog request (OPTIONS, REGISTER, MESSAGE, INVITE ...).

        ``from_``/``to`` default to our Contact URI and ``uri``; a From tag is
        added.  ``dest`` defaults to the URI's host and port (no DNS).
        ``auth`` (a :class:`sip.auth.DigestClient`) answers a 401/407 once
        (again on ``stale=true``) with CSeq + 1 (§22.2); the events then carry
        the new transaction, linked from the old one by ``retried_as``; a
        dialog created by it keeps the client for its own requests.

        Returns the ClientTransaction; its responses arrive as
        ``ResponseReceived`` events (INVITE: with the dialog).
        """
        from_value = f"{from_ or self.contact};tag={self.new_tag()}"
        req = make_request(method, uri, via=self._via("UDP", "z9hG4bK-unset"), from_=from_value,
                           to=to or f"<{uri}>", call_id=call_id or self.new_call_id(), cseq=cseq,
                           contact=self.contact_for("TLS" if transport == "TLS" or uri[:5].lower() == "sips:"
                                                    else "") if method in ("INVITE", "SUBSCRIBE", "REFER") else None,
                           headers=list(self._extra_headers) + list(headers), body=body,
                           content_type=content_type)
        return self.send_request(req, now, dest=dest, transport=transport, auth=auth)

    def invite(self, uri: str, now: float, **kwargs: Any) -> ClientTransaction:
        """Send an initial INVITE (same arguments as :meth:`request`).

        The dialog arrives with the first 1xx-with-tag or 2xx response; the
        stack ACKs the 2xx itself.  Cancel it with :meth:`cancel`.
        """
        return self.request("INVITE", uri, now, **kwargs)

    def send_request(self, req: Request, now: float, *, dest: Address | None = None,
                     transport: str | None = None, dialog: Dialog | None = None,
                     auth: Any = None) -> ClientTransaction:
        """Send a built request through a new client transaction.

        The top Via is replaced by ours with a fresh branch.  A request over
        1300 bytes goes over TCP when it would have used UDP (§18.1.1).
        """
        if dest is None:
            target = req.headers.get_all("Route")
            found = uri_address(target[0].strip().lstrip("<").split(">")[0]) if target else None
            found = found or uri_address(req.uri_text)
            if found is None:
                raise LocalProtocolError(f"cannot route {req.method} to {req.uri_text!r} (no numeric host)")
            dest, uri_transport = found
            transport = transport or uri_transport
        transport = (transport or "UDP").upper()
        branch = self.new_branch()
        h = req.headers
        h.pop_first("Via")
        h.prepend("Via", self._via(transport, branch))
        data = bytes(req)
        if transport == "UDP" and len(data) > UDP_MTU_LIMIT and self.tcp:
            transport = "TCP"
            h.pop_first("Via")
            h.prepend("Via", self._via(transport, branch))
            data = bytes(req)
        method = req.method
        txn = ClientTransaction(self, (branch, "CANCEL" if method == "CANCEL" else method), method,
                                req.call_id, data, dest, transport, now, req)
        txn.context = dialog if dialog is not None else ([] if method == "INVITE" else None)
        txn.auth = auth if auth is not None else (dialog.auth if dialog is not None else None)
        self._client[txn.key] = txn
        return txn

    def cancel(self, txn: ClientTransaction, now: float) -> ClientTransaction | None:
        """CANCEL a pending INVITE (§9.1); None if it has had a final response.

        A CANCEL before any provisional response is still sent (most UAs
        accept it); the INVITE then ends with 487 as usual.
        """
        while txn.retried_as is not None:
            txn = txn.retried_as
        if txn.method != "INVITE" or txn.state not in (InviteClientState.CALLING, InviteClientState.PROCEEDING):
            return None
        orig: Request = txn.request  # type: ignore[assignment]
        h = orig.headers
        cancel = Request("CANCEL", orig.uri_text)
        cancel.headers.add("Via", h.get_all("Via")[0])
        for name in ("Route",):
            for value in h.get_lines(name):
                cancel.headers.add(name, value)
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("From", h.get("From"))
        cancel.headers.add("To", h.get("To"))
        cancel.headers.add("Call-ID", orig.call_id)
        cancel.headers.add("CSeq", f"{orig.cseq[0]} CANCEL")
        data = bytes(cancel)
        branch = txn.key[0]
        ctxn = ClientTransaction(self, (branch, "CANCEL"), "CANCEL", orig.call_id, data, txn.addr,
                                 txn.transport, now, cancel)
        self._client[ctxn.key] = ctxn
        return ctxn

    def request_in_dialog(self, dialog: Dialog, method: str, now: float, *,
                          headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                          content_type: str | None = None) -> ClientTransaction:
        """Send INFO, REFER, NOTIFY, OPTIONS, UPDATE, re-INVITE ... in ``dialog``.

        A re-INVITE while another INVITE of either side is pending raises
        LocalProtocolError (§14.1); a 491 answer is retried automatically
        after the §14.1 delay.
        """
        if method == "INVITE" and (dialog.client_invite is not None or dialog.server_invite is not None):
            raise LocalProtocolError(f"dialog {dialog.call_id} already has an INVITE in progress")
        if method == "ACK" or method == "CANCEL":
            raise LocalProtocolError(f"{method} is sent by the stack, not through request_in_dialog")
        return self._send_in_dialog(dialog, method, now, headers=headers, body=body, content_type=content_type)

    def _send_in_dialog(self, dialog: Dialog, method: str, now: float, *,
                        headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                        content_type: str | None = None) -> ClientTransaction:
        dest, transport = dialog.destination()
        req = dialog.build_request(method, self._via(transport, "z9hG4bK-unset"),
                                   headers=list(self._extra_headers) + list(headers), body=body,
                                   content_type=content_type)
        txn = self.send_request(req, now, dest=dest, transport=transport, dialog=dialog)
        if method == "INVITE":
            dialog.client_invite = txn
            dialog.invite_seq = req.cseq[0]
        return txn

    def bye(self, dialog: Dialog, now: float) -> ClientTransaction | None:
        """Hang up: BYE a confirmed dialog (§15.1.1), CANCEL/none for an early one.

        The dialog ends at once (``DialogTerminated(reason="bye_sent")``).
        Returns the BYE transaction, or None when the dialog was not confirmed.
        """
        if dialog.terminated:
            return None
        if dialog.state is DialogState.EARLY:
            self._terminate(dialog, "closed", DialogTrigger.CLOSE)
            return None
        txn = self._send_in_dialog(dialog, "BYE", now)
        self._terminate(dialog, "bye_sent", DialogTrigger.BYE)
        return txn

    def _receive_response(self, resp: Response, addr: Address, transport: str, now: float) -> None:
        via = resp.top_via
        cseq, method = resp.cseq
        txn = self._client.get((via.branch, method))
        status = resp.status_code
        if txn is None:
            if method == "INVITE" and 200 <= status < 300:
                # RFC 6026 §8.4 after Timer M, or a 2xx of a forked leg: ACK it again.
                dialog = self._dialogs.get((resp.call_id, resp.from_tag or "", resp.to_tag or ""))
                if dialog is not None and dialog.ack_data is not None and dialog.invite_seq == cseq:
                    (dest, tr) = dialog.destination()
                    self.transmit(dialog.ack_data, dest, tr)
            return
        ack = None
        if txn.method == "INVITE" and status >= 300 and txn.ack_data is None:
            ack = self._non_2xx_ack(txn, resp)
        if not txn.receive_response(status, now, ack):
            return
        if (status == 401 or status == 407) and txn.auth is not None and self._auth_retry(txn, resp, now):
            return
        dialog: Dialog | None = None
        ctx = txn.context
        if txn.method == "INVITE":
            dialog = self._uac_dialog(txn, resp, status, cseq, now)
            if dialog is _DUPLICATE:
                return
            if dialog is None and isinstance(ctx, Dialog):
                dialog = ctx
            if dialog is not None and status >= 200 and dialog.client_invite is txn:
                dialog.client_invite = None
            if status == 491 and isinstance(ctx, Dialog) and not ctx.terminated:
                self._schedule_glare_retry(ctx, txn, now)
        elif isinstance(ctx, Dialog):
            dialog = ctx
            if status in (481, 408) and not ctx.terminated:
                self._events.append(ResponseReceived(resp, txn, dialog))
                self._terminate(ctx, "timeout" if status == 408 else "rejected", DialogTrigger.TIMEOUT)
                return
        self._events.append(ResponseReceived(resp, txn, dialog))

    def _auth_retry(self, txn: ClientTransaction, resp: Response, now: float) -> bool:
        """Resend ``txn``'s request with credentials (§22.2); False to give up."""
        orig: Request = txn.request  # type: ignore[assignment]
        cred_name = "Authorization" if resp.status_code == 401 else "Proxy-Authorization"
        challenge = " ".join(resp.headers.get_lines(
            "WWW-Authenticate" if resp.status_code == 401 else "Proxy-Authenticate"))
        if cred_name in orig.headers and "stale=true" not in challenge.replace(" ", "").lower():
            return False  # our credentials were refused: let the TU see it
        try:
            name, value = txn.auth.authorize(resp.headers, orig.method, orig.uri_text)  # type: ignore[attr-defined]
        except RemoteProtocolError as exc:
            logger.warning("[%s] cannot answer the %d challenge: %s", txn.call_id, resp.status_code, exc.message)
            return False
        ctx = txn.context
        dialog = ctx if isinstance(ctx, Dialog) else None
        seq = dialog.next_seq() if dialog is not None else orig.cseq[0] + 1
        retry = Request(orig.method, orig.uri_text, orig.headers.copy(), orig.body)
        retry.headers.set("CSeq", f"{seq} {orig.method}")
        retry.headers.set(name, value)
        new = self.send_request(retry, now, dest=txn.addr, transport=txn.transport, dialog=dialog,
                                auth=txn.auth)
        if dialog is not None and orig.method == "INVITE":
            dialog.client_invite = new
            dialog.invite_seq = seq
        txn.retried_as = new
        CallLogger(logger, {"call_id": txn.call_id}).info("%s challenged (%d): retrying with credentials",
                                                          orig.method, resp.status_code)
        return True

    def _non_2xx_ack(self, txn: ClientTransaction, resp: Response) -> bytes:
        # §17.1.1.3: same Request-URI, top Via, From, Call-ID, CSeq number and
        # Route as the INVITE; To from the response.
        orig: Request = txn.request  # type: ignore[assignment]
        h = orig.headers
        ack = Request("ACK", orig.uri_text)
        ah = ack.headers
        ah.add("Via", h.get_all("Via")[0])
        for value in h.get_lines("Route"):
            ah.add("Route", value)
        ah.add("Max-Forwards", "70")
        ah.add("From", h.get("From"))
        ah.add("To", resp.headers.get("To"))
        ah.add("Call-ID", orig.call_id)
        ah.add("CSeq", f"{orig.cseq[0]} ACK")
        return bytes(ack)

    def _uac_dialog(self, txn: ClientTransaction, resp: Response, status: int, cseq: int,
                    now: float) -> Dialog | None:
        req: Request = txn.request  # type: ignore[assignment]
        ctx = txn.context
        initial = not isinstance(ctx, Dialog)
        to_tag = resp.to_tag
        if to_tag is None or status < 101:
            return None
        did = (resp.call_id, req.from_tag or "", to_tag)
        dialog = ctx if not initial else self._dialogs.get(did)
        if dialog is None:
            if status >= 300:
                return None
            contact = resp.contact
            remote_target = contact[0].uri_text if contact else req.uri_text
            found = uri_address(remote_target)
            peer, transport = found if found is not None else (txn.addr, txn.transport)
            if txn.transport != "UDP":  # TCP or TLS: keep the connection (RFC 3261 §18, §26)
                peer, transport = txn.addr, txn.transport
            dialog = Dialog(resp.call_id, req.from_tag or "", to_tag, "uac",
                            local_party=req.headers.get("From") or "",
                            remote_party=resp.headers.get("To") or "", local_seq=cseq, remote_seq=0,
                            remote_target=remote_target,
                            route_set=list(reversed(resp.headers.get_all("Record-Route"))),
                            peer=peer, transport=transport, local_contact=self.contact_for(transport),
                            tenant=self.tenant)
            dialog.invite_seq = cseq
            dialog.auth = txn.auth
            self._dialogs[did] = dialog
            assert isinstance(ctx, list)
            ctx.append(dialog)
        if status < 200:
            return dialog
        if status >= 300:
            if initial:
                for early in list(ctx):  # type: ignore[arg-type]
                    if not early.terminated:
                        self._terminate(early, "rejected", DialogTrigger.FAILURE, emit=False)
            return dialog
        # 2xx: confirm, refresh the target, ACK (§13.2.2.4); a retransmission is re-ACKed.
        if dialog.state is DialogState.CONFIRMED and dialog.ack_data is not None and dialog.invite_seq == cseq \
                and txn.state is InviteClientState.ACCEPTED and dialog.data_acked == cseq:
            dest, tr = dialog.destination()
            self.transmit(dialog.ack_data, dest, tr)
            return _DUPLICATE  # type: ignore[return-value]
        dialog.refresh_target(resp.contact)
        first = dialog.state is DialogState.EARLY
        dialog.fire(DialogTrigger.SUCCESS)
        dest, tr = dialog.destination()
        ack = dialog.build_request("ACK", self._via(tr, self.new_branch()), cseq=cseq,
                                   headers=self._extra_headers)
        dialog.ack_data = bytes(ack)
        dialog.data_acked = cseq
        self.transmit(dialog.ack_data, dest, tr)
        if first:
            self._events.append(DialogEstablished(dialog))
        return dialog

    def keepalive(self, dialog: Dialog, interval_s: float, now: float) -> None:
        """Send an in-dialog OPTIONS every ``interval_s`` until the dialog ends.

        A peer that stops answering (Timer F) or answers 481/408 ends the
        dialog with ``DialogTerminated(reason="timeout" / "rejected")``, so a
        vanished phone does not leave a call up forever.  ``interval_s`` 0
        stops it.
        """
        self.timers.cancel(dialog.keepalive_timer)
        dialog.keepalive_timer = None
        if interval_s > 0:
            dialog.keepalive_timer = self.timers.schedule(now + interval_s, self._keepalive_tick,
                                                          (dialog, interval_s))

    def _keepalive_tick(self, kind: object, now: float) -> None:
        dialog, interval_s = kind  # type: ignore[misc]
        dialog.keepalive_timer = None
        if dialog.terminated:
            return
        if dialog.state is DialogState.CONFIRMED:
            self._send_in_dialog(dialog, "OPTIONS", now)
        dialog.keepalive_timer = self.timers.schedule(now + interval_s, self._keepalive_tick, kind)

    def _schedule_glare_retry(self, dialog: Dialog, txn: ClientTransaction, now: float) -> None:
        # §14.1: the Call-ID owner (the UAC of the dialog) waits 2.1-4 s, the other 0-2 s.
        delay = self._rng.uniform(2.1, 4.0) if dialog.role == "uac" else self._rng.uniform(0.0, 2.0)
        dialog.log.info("re-INVITE glare (491): retrying in %.2f s", delay)
        req: Request = txn.request  # type: ignore[assignment]
        skip = {"via", "from", "to", "call-id", "cseq", "max-forwards", "route", "contact", "content-length",
                "content-type", "user-agent"}
        kept = [(n, v) for n, v in req.headers if n.lower() not in skip]
        dialog.glare_timer = self.timers.schedule(
            now + delay, self._glare_retry, (dialog, kept, req.body, req.content_type))

    def _glare_retry(self, kind: object, now: float) -> None:
        dialog, headers, body, content_type = kind  # type: ignore[misc]
        dialog.glare_timer = None
        if dialog.terminated or dialog.client_invite is not None or dialog.server_invite is not None:
            return
        self._send_in_dialog(dialog, "INVITE", now, headers=headers, body=body, content_type=content_type)

    # ============================================================ queries
    @property
    def dialogs(self) -> list[Dialog]:
        """Every live dialog."""
        return list(self._dialogs.values())

    def find_dialog(self, call_id: str, local_tag: str, remote_tag: str) -> Dialog | None:
        return self._dialogs.get((call_id, local_tag, remote_tag))

    @property
    def transaction_counts(self) -> tuple[int, int]:
        """(client, server) transactions alive."""
        return len(self._client), len(self._server)


_DUPLICATE = object()


# Compiled twin (sip/_stack.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.stack":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._stack")
