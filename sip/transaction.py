"""SIP transactions: RFC 3261 §17 with the RFC 6026 corrections.

Theory of operation
-------------------
A transaction is a request plus every response to it, between one client and
one server transaction.  This module owns the four state machines of §17
(INVITE client, non-INVITE client, INVITE server, non-INVITE server), each an
enum plus a transition table (``INVITE_CLIENT`` ...).  Tables are data: a
trigger that is not in the row of the current state is either ignored (when
the peer caused it: a stray or late message, §17.1.1.2 / §17.1.3) or raises
:class:`~sip.errors.LocalProtocolError` (when our own TU asked for it: e.g. a
second final response).

Rule 1: transactions never parse or build SIP.  They hold the serialized
bytes to (re)transmit, the destination and the transport; the owner (the
sans-IO stack in ``sip/stack.py``) matches messages to transactions (§17.1.3,
§17.2.3), builds ACKs for non-2xx finals and 100 Trying, and turns the
``*_ended`` callbacks into events.

Rule 2: transactions never read a clock.  Each timer is an absolute deadline
in the shared :class:`~sip.timers.TimerHeap`, computed from the ``now`` handed
in.  Over a reliable transport (TCP) the retransmission timers A, E and G are
not started and the wait timers D, I, J, K are zero (§17.1.1.2, §17.1.2.2,
§17.2.1, §17.2.2).

RFC 6026: a 2xx moves the INVITE client to ACCEPTED (Timer M) and the INVITE
server to ACCEPTED (Timer L), where further 2xx responses are passed through:
the UAS core retransmits its 2xx until the ACK arrives (§13.3.1.4, done in
``sip/stack.py``), and the UAC core ACKs every retransmitted 2xx.
"""

import enum
import logging
from typing import Protocol

from .errors import LocalProtocolError
from .timers import T1, T2, T4, TimerEntry, TimerHeap

logger = logging.getLogger(__name__)

Address = tuple[str, int]


class Trigger(enum.Enum):
    """What can happen to a transaction (RFC names kept)."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    PROVISIONAL = "1xx received"
    FINAL_2XX = "2xx received"
    FINAL_300_699 = "300-699 received"
    REQUEST_RETRANSMIT = "request retransmission received"
    ACK = "ACK received"
    TU_PROVISIONAL = "TU sends 1xx"
    TU_2XX = "TU sends 2xx"
    TU_300_699 = "TU sends 300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TRANSPORT_ERROR = "transport error"


TU_TRIGGERS = frozenset({Trigger.TU_PROVISIONAL, Trigger.TU_2XX, Trigger.TU_300_699})
# Timers that end a transaction without its purpose being achieved.
TIMEOUT_TRIGGERS = frozenset({Trigger.TIMER_B, Trigger.TIMER_F, Trigger.TIMER_H})


class InviteClientState(enum.Enum):
    """RFC 3261 §17.1.1.2, Figure 5 as amended by RFC 6026 §7.2."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    CALLING = "calling"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class NonInviteClientState(enum.Enum):
    """RFC 3261 §17.1.2.2, Figure 6."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class InviteServerState(enum.Enum):
    """RFC 3261 §17.2.1, Figure 7 as amended by RFC 6026 §7.1."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class NonInviteServerState(enum.Enum):
    """RFC 3261 §17.2.2, Figure 8."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


_IC = InviteClientState
_NC = NonInviteClientState
_IS = InviteServerState
_NS = NonInviteServerState
_TERMINATED = frozenset((_IC.TERMINATED, _NC.TERMINATED, _IS.TERMINATED, _NS.TERMINATED))
_T = Trigger

INVITE_CLIENT: dict[InviteClientState, dict[Trigger, InviteClientState]] = {
    _IC.CALLING: {
        _T.TIMER_A: _IC.CALLING,  # §17.1.1.2: retransmit, double A
        _T.TIMER_B: _IC.TERMINATED,  # timeout, report to TU
        _T.PROVISIONAL: _IC.PROCEEDING,
        _T.FINAL_2XX: _IC.ACCEPTED,  # RFC 6026 §8.4
        _T.FINAL_300_699: _IC.COMPLETED,  # send ACK
        _T.TRANSPORT_ERROR: _IC.TERMINATED,
    },
    _IC.PROCEEDING: {
        _T.PROVISIONAL: _IC.PROCEEDING,
        _T.FINAL_2XX: _IC.ACCEPTED,
        _T.FINAL_300_699: _IC.COMPLETED,
        _T.TIMER_B: _IC.TERMINATED,  # Timer B keeps running in Proceeding (§17.1.1.2)
        _T.TRANSPORT_ERROR: _IC.TERMINATED,
    },
    _IC.ACCEPTED: {
        _T.FINAL_2XX: _IC.ACCEPTED,  # RFC 6026 §8.4: pass retransmitted 2xx to TU
        _T.TIMER_M: _IC.TERMINATED,
    },
    _IC.COMPLETED: {
        _T.FINAL_300_699: _IC.COMPLETED,  # retransmitted final: resend ACK, absorb
        _T.TIMER_D: _IC.TERMINATED,
        _T.TRANSPORT_ERROR: _IC.TERMINATED,
    },
    _IC.TERMINATED: {},
}

NON_INVITE_CLIENT: dict[NonInviteClientState, dict[Trigger, NonInviteClientState]] = {
    _NC.TRYING: {
        _T.TIMER_E: _NC.TRYING,  # retransmit, E = min(2E, T2)
        _T.TIMER_F: _NC.TERMINATED,
        _T.PROVISIONAL: _NC.PROCEEDING,
        _T.FINAL_2XX: _NC.COMPLETED,
        _T.FINAL_300_699: _NC.COMPLETED,
        _T.TRANSPORT_ERROR: _NC.TERMINATED,
    },
    _NC.PROCEEDING: {
        _T.TIMER_E: _NC.PROCEEDING,  # retransmit every T2
        _T.TIMER_F: _NC.TERMINATED,
        _T.PROVISIONAL: _NC.PROCEEDING,
        _T.FINAL_2XX: _NC.COMPLETED,
        _T.FINAL_300_699: _NC.COMPLETED,
        _T.TRANSPORT_ERROR: _NC.TERMINATED,
    },
    _NC.COMPLETED: {
        _T.FINAL_2XX: _NC.COMPLETED,  # absorb retransmissions
        _T.FINAL_300_699: _NC.COMPLETED,
        _T.TIMER_K: _NC.TERMINATED,
    },
    _NC.TERMINATED: {},
}

INVITE_SERVER: dict[InviteServerState, dict[Trigger, InviteServerState]] = {
    _IS.PROCEEDING: {
        _T.REQUEST_RETRANSMIT: _IS.PROCEEDING,  # resend the latest provisional
        _T.TU_PROVISIONAL: _IS.PROCEEDING,
        _T.TU_2XX: _IS.ACCEPTED,  # RFC 6026 §8.5
        _T.TU_300_699: _IS.COMPLETED,
        _T.TRANSPORT_ERROR: _IS.TERMINATED,
    },
    _IS.ACCEPTED: {
        _T.REQUEST_RETRANSMIT: _IS.ACCEPTED,  # RFC 6026 §8.7: absorb
        _T.TU_2XX: _IS.ACCEPTED,  # TU retransmits its 2xx through us
        _T.ACK: _IS.ACCEPTED,  # an ACK that reused the INVITE branch: pass to TU
        _T.TIMER_L: _IS.TERMINATED,
    },
    _IS.COMPLETED: {
        _T.REQUEST_RETRANSMIT: _IS.COMPLETED,  # resend the final response
        _T.TIMER_G: _IS.COMPLETED,  # retransmit final, G = min(2G, T2)
        _T.TIMER_H: _IS.TERMINATED,  # no ACK: report to TU
        _T.ACK: _IS.CONFIRMED,
        _T.TRANSPORT_ERROR: _IS.TERMINATED,
    },
    _IS.CONFIRMED: {
        _T.ACK: _IS.CONFIRMED,  # absorb ACK retransmissions
        _T.REQUEST_RETRANSMIT: _IS.CONFIRMED,
        _T.TIMER_I: _IS.TERMINATED,
    },
    _IS.TERMINATED: {},
}

NON_INVITE_SERVER: dict[NonInviteServerState, dict[Trigger, NonInviteServerState]] = {
    _NS.TRYING: {
        _T.REQUEST_RETRANSMIT: _NS.TRYING,  # absorb (§17.2.2)
        _T.TU_PROVISIONAL: _NS.PROCEEDING,
        _T.TU_2XX: _NS.COMPLETED,
        _T.TU_300_699: _NS.COMPLETED,
        _T.TRANSPORT_ERROR: _NS.TERMINATED,
    },
    _NS.PROCEEDING: {
        _T.REQUEST_RETRANSMIT: _NS.PROCEEDING,  # resend the latest provisional
        _T.TU_PROVISIONAL: _NS.PROCEEDING,
        _T.TU_2XX: _NS.COMPLETED,
        _T.TU_300_699: _NS.COMPLETED,
        _T.TRANSPORT_ERROR: _NS.TERMINATED,
    },
    _NS.COMPLETED: {
        _T.REQUEST_RETRANSMIT: _NS.COMPLETED,  # resend the final response
        _T.TIMER_J: _NS.TERMINATED,
    },
    _NS.TERMINATED: {},
}


def status_trigger(status: int) -> Trigger:
    """Map a received status code to its trigger."""
    if status < 200:
        return Trigger.PROVISIONAL
    if status < 300:
        return Trigger.FINAL_2XX
    return Trigger.FINAL_300_699


def tu_status_trigger(status: int) -> Trigger:
    """Map a status code the TU sends to its trigger."""
    if status < 200:
        return Trigger.TU_PROVISIONAL
    if status < 300:
        return Trigger.TU_2XX
    return Trigger.TU_300_699


class TransactionOwner(Protocol):
    """What a transaction needs from the layer that owns it (the stack)."""

    timers: TimerHeap

    def transmit(self, data: bytes, addr: Address, transport: str) -> None: ...

    def transaction_ended(self, txn: "Transaction", trigger: Trigger) -> None: ...


class Transaction:
    """State shared by the four machines."""

    __slots__ = (
        "owner", "key", "method", "call_id", "addr", "transport", "reliable",
        "state", "table", "interval", "_timers", "last_data", "context",
    )

    def __init__(self, owner: TransactionOwner, key: tuple, method: str, call_id: str,
                 addr: Address, transport: str, table: dict, state: enum.Enum) -> None:
        self.owner = owner
        self.key = key
        self.method = method
        self.call_id = call_id
        self.addr = addr
        self.transport = transport
        self.reliable = transport.upper() != "UDP"
        self.table = table
        self.state = state
        self.interval = T1
        self._timers: dict[Trigger, TimerEntry] = {}
        self.last_data: bytes | None = None
        # Free slot for the owner (the stack keeps the dialog / CANCEL state here).
        self.context: object = None

    @property
    def terminated(self) -> bool:
        return self.state in _TERMINATED

    def _next_state(self, trigger: Trigger) -> enum.Enum | None:
        new = self.table[self.state].get(trigger)
        if new is None:
            if trigger in TU_TRIGGERS:
                raise LocalProtocolError(
                    f"{type(self).__name__} {self.method} in state {self.state.name} "
                    f"cannot take trigger {trigger.name}")
            logger.debug("[%s] %s %s ignores %s in %s", self.call_id, type(self).__name__,
                         self.method, trigger.name, self.state.name)
            return None
        if new is not self.state and logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] %s %s %s -> %s on %s", self.call_id, type(self).__name__,
                         self.method, self.state.name, new.name, trigger.name)
        return new

    def _start(self, trigger: Trigger, delay: float, now: float) -> None:
        self._timers[trigger] = self.owner.timers.schedule(now + delay, self._on_timer, trigger)

    def _stop(self, *triggers: Trigger) -> None:
        timers = self._timers
        for trigger in triggers:
            entry = timers.pop(trigger, None)
            if entry is not None:
                self.owner.timers.cancel(entry)

    def _terminate(self, trigger: Trigger) -> None:
        self.state = self.table_terminated()
        for entry in self._timers.values():
            self.owner.timers.cancel(entry)
        self._timers.clear()
        self.owner.transaction_ended(self, trigger)

    def _wait_then_terminate(self, timer: Trigger, delay: float, now: float) -> None:
        # §17.1.1.2 etc.: the wait timers are zero over reliable transports.
        if self.reliable:
            self._terminate(timer)
        else:
            self._start(timer, delay, now)

    def table_terminated(self) -> enum.Enum:
        raise NotImplementedError

    def _on_timer(self, trigger: object, now: float) -> None:
        assert isinstance(trigger, Trigger)
        self._timers.pop(trigger, None)
        self.fire(trigger, now)

    def fire(self, trigger: Trigger, now: float) -> bool:
        """Apply ``trigger``; returns True when the TU must see the message."""
        raise NotImplementedError

    def transport_error(self, now: float) -> None:
        """The transport could not deliver (§17.1.4, §17.2.4)."""
        if self._next_state(Trigger.TRANSPORT_ERROR) is not None:
            self._terminate(Trigger.TRANSPORT_ERROR)


class ClientTransaction(Transaction):
    """INVITE or non-INVITE client transaction; sends the request on creation."""

    __slots__ = ("request_data", "ack_data", "request", "auth", "retried_as")

    def __init__(self, owner: TransactionOwner, key: tuple, method: str, call_id: str,
                 request_data: bytes, addr: Address, transport: str, now: float,
                 request: object = None) -> None:
        if method == "INVITE":
            super().__init__(owner, key, method, call_id, addr, transport,
                             INVITE_CLIENT, InviteClientState.CALLING)
        else:
            super().__init__(owner, key, method, call_id, addr, transport,
                             NON_INVITE_CLIENT, NonInviteClientState.TRYING)
        self.request_data = request_data
        self.request = request
        self.ack_data: bytes | None = None
        self.auth: object = None  # a sip.auth.DigestClient answering 401/407 for us
        self.retried_as: ClientTransaction | None = None  # the authenticated retry
        owner.transmit(request_data, addr, transport)
        if method == "INVITE":
            if not self.reliable:
                self._start(Trigger.TIMER_A, T1, now)  # §17.1.1.2
            self._start(Trigger.TIMER_B, 64 * T1, now)
        else:
            if not self.reliable:
                self._start(Trigger.TIMER_E, T1, now)  # §17.1.2.2
            self._start(Trigger.TIMER_F, 64 * T1, now)

    def table_terminated(self) -> enum.Enum:
        return (InviteClientState.TERMINATED if self.table is INVITE_CLIENT
                else NonInviteClientState.TERMINATED)

    def receive_response(self, status: int, now: float, ack_data: bytes | None = None) -> bool:
        """Feed a matching response; returns True when the TU must see it.

        ``ack_data`` is the ACK the stack built for a 300-699 final to INVITE
        (§17.1.1.3); it is sent now and again for each retransmitted final.
        """
        if ack_data is not None and self.ack_data is None:
            self.ack_data = ack_data
        return self.fire(status_trigger(status), now)

    def fire(self, trigger: Trigger, now: float) -> bool:
        old = self.state
        new = self._next_state(trigger)
        if new is None:
            return False
        self.state = new
        T = Trigger
        if self.table is INVITE_CLIENT:
            S = InviteClientState
            if trigger is T.TIMER_A:
                self.owner.transmit(self.request_data, self.addr, self.transport)
                self.interval *= 2  # §17.1.1.2: A doubles, no cap
                self._start(T.TIMER_A, self.interval, now)
                return False
            if trigger is T.PROVISIONAL:
                self._stop(T.TIMER_A)
                return True
            if trigger is T.FINAL_2XX:
                if old is not S.ACCEPTED:
                    self._stop(T.TIMER_A, T.TIMER_B)
                    self._start(T.TIMER_M, 64 * T1, now)  # RFC 6026 §8.4
                return True
            if trigger is T.FINAL_300_699:
                if self.ack_data is not None:
                    self.owner.transmit(self.ack_data, self.addr, self.transport)
                if old is S.COMPLETED:
                    return False  # retransmission: ACK again, absorb
                self._stop(T.TIMER_A, T.TIMER_B)
                self._wait_then_terminate(T.TIMER_D, 32.0, now)  # D >= 32 s
                return True
        else:
            S2 = NonInviteClientState
            if trigger is T.TIMER_E:
                self.owner.transmit(self.request_data, self.addr, self.transport)
                if new is S2.PROCEEDING:
                    self.interval = T2
                else:
                    self.interval = min(2 * self.interval, T2)
                self._start(T.TIMER_E, self.interval, now)
                return False
            if trigger is T.PROVISIONAL:
                return True
            if trigger is T.FINAL_2XX or trigger is T.FINAL_300_699:
                if old is S2.COMPLETED:
                    return False
                self._stop(T.TIMER_E, T.TIMER_F)
                self._wait_then_terminate(T.TIMER_K, T4, now)
                return True
        # Timers that end the transaction: B, D, F, K, M.
        self._terminate(trigger)
        return False


class ServerTransaction(Transaction):
    """INVITE or non-INVITE server transaction; created by a new request."""

    __slots__ = ("request", "source", "response_addr", "last_status", "trying_timer", "to_tag", "merge_key")

    def __init__(self, owner: TransactionOwner, key: tuple, method: str, call_id: str,
                 response_addr: Address, transport: str, now: float,
                 request: object = None, source: Address | None = None) -> None:
        if method == "INVITE":
            super().__init__(owner, key, method, call_id, response_addr, transport,
                             INVITE_SERVER, InviteServerState.PROCEEDING)
        else:
            super().__init__(owner, key, method, call_id, response_addr, transport,
                             NON_INVITE_SERVER, NonInviteServerState.TRYING)
        self.request = request
        self.source = source or response_addr
        self.response_addr = response_addr
        self.last_status = 0
        self.to_tag: str | None = None
        self.trying_timer: TimerEntry | None = None
        self.merge_key: tuple | None = None  # owner's §8.2.2.2 merged-request key

    def table_terminated(self) -> enum.Enum:
        return (InviteServerState.TERMINATED if self.table is INVITE_SERVER
                else NonInviteServerState.TERMINATED)

    def send_response(self, status: int, data: bytes, now: float) -> None:
        """The TU sends a response (RFC 3261 §17.2.1 / §17.2.2).

        Raises LocalProtocolError when the state does not allow it (for
        example a second 300-699 final, or anything after a non-INVITE final).
        """
        trigger = tu_status_trigger(status)
        if self._next_state(trigger) is None:  # pragma: no cover - raises for TU triggers
            return
        self.last_data = data
        self.last_status = status
        self.fire(trigger, now)

    def receive_request(self, now: float) -> bool:
        """A retransmission of the request arrived; returns False (absorbed)."""
        return self.fire(Trigger.REQUEST_RETRANSMIT, now)

    def receive_ack(self, now: float) -> bool:
        """An ACK matched this INVITE server transaction; True if the TU must see it."""
        return self.fire(Trigger.ACK, now)

    def fire(self, trigger: Trigger, now: float) -> bool:
        old = self.state
        new = self._next_state(trigger)
        if new is None:
            return False
        self.state = new
        T = Trigger
        if trigger is T.REQUEST_RETRANSMIT:
            # §17.2.1 / §17.2.2: resend the most recent response, if any, except
            # in ACCEPTED (RFC 6026: the TU retransmits its 2xx itself) and CONFIRMED.
            if (self.last_data is not None and (old is _IS.PROCEEDING or old is _IS.COMPLETED or old is _NS.PROCEEDING
                                               or old is _NS.COMPLETED)):
                self.owner.transmit(self.last_data, self.response_addr, self.transport)
            return False
        if trigger in TU_TRIGGERS:
            if self.trying_timer is not None:
                self.owner.timers.cancel(self.trying_timer)
                self.trying_timer = None
            assert self.last_data is not None
            self.owner.transmit(self.last_data, self.response_addr, self.transport)
            if trigger is T.TU_PROVISIONAL or old is new:
                return False
            # After the final response only the bytes are retransmitted: drop the
            # parsed request so 32 s of Timer J/L state stays small under load.
            self.request = None
            if self.table is INVITE_SERVER:
                if trigger is T.TU_2XX:
                    self._start(T.TIMER_L, 64 * T1, now)  # RFC 6026 §8.7
                else:
                    if not self.reliable:
                        self._start(T.TIMER_G, T1, now)  # §17.2.1
                    self._start(T.TIMER_H, 64 * T1, now)
            else:
                self._wait_then_terminate(T.TIMER_J, 64 * T1, now)  # §17.2.2
            return False
        if trigger is T.TIMER_G:
            assert self.last_data is not None
            self.owner.transmit(self.last_data, self.response_addr, self.transport)
            self.interval = min(2 * self.interval, T2)
            self._start(T.TIMER_G, self.interval, now)
            return False
        if trigger is T.ACK:
            if old is InviteServerState.COMPLETED:
                self._stop(T.TIMER_G, T.TIMER_H)
                self._wait_then_terminate(T.TIMER_I, T4, now)
                return False
            # ACCEPTED: an ACK for the 2xx that reused the INVITE branch.
            return old is InviteServerState.ACCEPTED
        # TIMER_H, TIMER_I, TIMER_J, TIMER_L end the transaction.
        self._terminate(trigger)
        return False


# Compiled twin (sip/_transaction.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.transaction":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._transaction")
