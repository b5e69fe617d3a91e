"""Events the sans-IO SIP core hands to its application (the engine).

Theory of operation
-------------------
``SipStack.next_event()`` returns these, oldest first, until None.  They are
frozen, slotted dataclasses named for what already happened (STYLE.md §3).
Messages are the parsed objects of ``sip/message.py``; ``source`` is the
(host, port) the bytes came from and ``transport`` is ``"UDP"`` or ``"TCP"``.
Handles (``ServerTransaction``, ``Dialog``) are passed so the application can
answer: ``stack.respond(event.transaction, 200, ...)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


class Event:
    """Base class of every SIP core event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new request arrived (not a retransmission, not an ACK).

    ``dialog`` is the existing dialog for a mid-dialog request, else None
    (an out-of-dialog request or the INVITE that may create one).
    """

    request: Any
    """The parsed request."""
    transaction: Any
    """The ServerTransaction to answer through ``SipStack.respond``."""
    source: Address
    """Where the bytes came from (responses go back there, RFC 3581)."""
    transport: str
    """``"UDP"`` or ``"TCP"``."""
    dialog: Any = None
    """The dialog a mid-dialog request belongs to, or None."""


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response to one of our requests passed its client transaction."""

    response: Any
    """The parsed response."""
    transaction: Any
    """The ClientTransaction it matched (its ``request`` is what we sent)."""
    dialog: Any = None
    """The dialog it created or belongs to (2xx/1xx with To tag to INVITE), or None."""


@dataclass(frozen=True, slots=True)
class TransactionTimedOut(Event):
    """Timer B or F (client) or H (server, no ACK) fired, or the transport failed."""

    transaction: Any
    """The transaction that gave up."""
    call_id: str
    """Call-ID of its request."""
    method: str
    """Method of its request."""
    reason: str
    """``"timer B"``, ``"timer F"``, ``"timer H"`` or ``"transport error"``."""


@dataclass(frozen=True, slots=True)
class CancelReceived(Event):
    """A CANCEL matched a pending INVITE; the stack already answered 200 to the
    CANCEL and 487 to the INVITE (RFC 3261 §9.2)."""

    request: Any
    """The INVITE that was cancelled."""
    transaction: Any
    """Its (now COMPLETED) server transaction."""


@dataclass(frozen=True, slots=True)
class DialogEstablished(Event):
    """An INVITE dialog was confirmed (UAS: our 2xx sent; UAC: the first 2xx received).

    The UAS learns that the caller got the 2xx from ``AckReceived``."""

    dialog: Any
    """The dialog."""


@dataclass(frozen=True, slots=True)
class AckReceived(Event):
    """The ACK for a 2xx we sent arrived (RFC 3261 §13.3.1.4)."""

    dialog: Any
    """The dialog it confirmed."""
    request: Any
    """The ACK (may carry the SDP answer when the INVITE had no offer)."""


@dataclass(frozen=True, slots=True)
class DialogTerminated(Event):
    """A dialog ended: BYE sent or received, ACK never arrived, 481/408 to an
    in-dialog request, or the application closed it."""

    dialog: Any
    """The dialog (state now TERMINATED)."""
    reason: str
    """``"bye_received"``, ``"bye_sent"``, ``"ack_timeout"``, ``"timeout"``,
    ``"rejected"`` or ``"closed"``."""


@dataclass(frozen=True, slots=True)
class RegistrationChanged(Event):
    """A registrar binding appeared, was refreshed, removed or expired (§10.3).

    The ACD uses it for device reachability: ``contacts`` is the complete
    current binding list of the AOR after the change.
    """

    aor: str
    """Address of record, ``"sip:user@domain"``."""
    contacts: tuple = field(default_factory=tuple)
    """Current bindings (``sip.registrar.Binding``), soonest to expire last."""
    reason: str = "registered"
    """``"registered"``, ``"refreshed"``, ``"unregistered"`` or ``"expired"``."""
    tenant: str = "default"
    """Tenant of the registrar domain."""


@dataclass(frozen=True, slots=True)
class SourceBanned(Event):
    """The abuse guard (``sip.guard.SourceGuard``) banned a source address."""

    ip: str
    """The banned source IP address."""
    reason: str
    """Why: ``"scanner User-Agent 'friendly-scanner'"``, ``"5 failed authentications"`` ..."""
    until: float
    """When the ban ends (the guard's clock, ``loop.time()``)."""
