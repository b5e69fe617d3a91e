"""SIP dialogs (RFC 3261 §12-§15) as seen by a UA core.

Theory of operation
-------------------
A dialog is the peer-to-peer relationship created by a 101-299 response to
an INVITE (SUBSCRIBE/REFER dialogs are not created here: NOTIFY for REFER
travels in the INVITE dialog, RFC 3515 §2.4.4).  It is identified by
``(call_id, local_tag, remote_tag)`` and holds what §12.1 lists: local and
remote sequence numbers, the remote target (Contact), the route set
(Record-Route, reversed for the UAC), and the local/remote party headers.

State is an enum and a table (STYLE.md §2)::

    EARLY --2xx--> CONFIRMED --BYE / timeout / ack_timeout--> TERMINATED
    EARLY --300-699 / BYE / CANCEL--> TERMINATED

This module only keeps that state and builds in-dialog requests
(§12.2.1.1: Request-URI = remote target, Route = route set, loose routing
only; CSeq increments).  ``sip/stack.py`` owns the glue: matching messages
to dialogs, ACK for 2xx (§13.2.2.4), the UAS 2xx retransmission
(§13.3.1.4), re-INVITE glare (§14.1: 491 and the retry timer) and BYE.
"""

import enum
import logging
from typing import Any

from .errors import LocalProtocolError
from .message import NameAddr, Request, make_request
from .uri import SipUri, parse_uri

logger = logging.getLogger(__name__)


class CallLogger(logging.LoggerAdapter):
    """Prefix log lines with the Call-ID (STYLE.md §9)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['call_id']}] {msg}", kwargs  # type: ignore[index]

Address = tuple[str, int]


class DialogState(enum.Enum):
    """RFC 3261 §12: early and confirmed dialogs."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogTrigger(enum.Enum):
    """What moves a dialog."""

    __hash__ = object.__hash__  # singletons: C identity hash, not Enum.__hash__ (Python)

    PROVISIONAL = "1xx with To tag"
    SUCCESS = "2xx to INVITE"
    FAILURE = "300-699 to the initial INVITE"
    BYE = "BYE sent or received"
    TIMEOUT = "in-dialog request timed out or got 481/408"
    ACK_TIMEOUT = "no ACK for our 2xx (RFC 3261 §13.3.1.4)"
    CLOSE = "application closed the dialog"


_D = DialogState
_DT = DialogTrigger

DIALOG: dict[DialogState, dict[DialogTrigger, DialogState]] = {
    _D.EARLY: {
        _DT.PROVISIONAL: _D.EARLY,
        _DT.SUCCESS: _D.CONFIRMED,
        _DT.FAILURE: _D.TERMINATED,
        _DT.BYE: _D.TERMINATED,
        _DT.TIMEOUT: _D.TERMINATED,
        _DT.CLOSE: _D.TERMINATED,
    },
    _D.CONFIRMED: {
        _DT.SUCCESS: _D.CONFIRMED,  # re-INVITE answered, or 2xx retransmission
        _DT.BYE: _D.TERMINATED,
        _DT.TIMEOUT: _D.TERMINATED,
        _DT.ACK_TIMEOUT: _D.TERMINATED,
        _DT.CLOSE: _D.TERMINATED,
    },
    _D.TERMINATED: {},
}

DialogId = tuple[str, str, str]


def uri_address(uri_text: str, default_port: int = 5060) -> tuple[Address, str] | None:
    """(host, port) and transport a request to this SIP URI goes to, or None.

    Only numeric hosts and explicit names are used as given: this stack does
    no DNS (RFC 3263) lookups; a ``maddr`` wins over the host (§19.1.1).
    """
    try:
        uri = parse_uri(uri_text)
    except ValueError:
        return None
    if not isinstance(uri, SipUri):
        return None
    host = uri.param("maddr") or uri.host_unbracketed
    port = uri.port or (5061 if uri.scheme == "sips" else default_port)
    transport = (uri.transport or "udp").upper()
    if uri.scheme == "sips":  # RFC 3261 §26.2.2: a SIPS URI is reached over TLS only
        transport = "TLS"
    return (host, port), transport


class Dialog:
    """One INVITE dialog (UAC or UAS side).

    Attributes:
        call_id, local_tag, remote_tag: the dialog id (§12).
        role: ``"uac"`` or ``"uas"``.
        local_party, remote_party: From/To header values for our requests
            (tags included).
        local_seq: last CSeq number we used; remote_seq: last we accepted.
        remote_target: the peer's Contact URI text (target refresh updates it).
        route_set: Route header values in the order to send them.
        peer: where in-dialog requests go when the route set is empty: the
            Contact address for a UAC, the INVITE's source for a UAS (the
            phone may be behind NAT, RFC 3581).
        transport: ``"UDP"`` or ``"TCP"``.
        tenant: tenant of the call (for the engine's records).
        data: free slot for the application.
    """

    __slots__ = (
        "call_id", "local_tag", "remote_tag", "role", "state", "local_party", "remote_party",
        "local_seq", "remote_seq", "remote_target", "route_set", "peer", "transport",
        "local_contact", "invite_seq", "ack_data", "pending_2xx", "client_invite",
        "server_invite", "glare_timer", "keepalive_timer", "tenant", "data", "log", "data_acked", "auth",
    )

    def __init__(self, call_id: str, local_tag: str, remote_tag: str, role: str,
                 local_party: str, remote_party: str, local_seq: int, remote_seq: int,
                 remote_target: str, route_set: list[str], peer: Address, transport: str,
                 local_contact: str, tenant: str = "default") -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.role = role
        self.state = DialogState.EARLY
        self.local_party = local_party
        self.remote_party = remote_party
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set = route_set
        self.peer = peer
        self.transport = transport
        self.local_contact = local_contact
        self.invite_seq = 0  # CSeq of the latest INVITE (for ACK and 2xx matching)
        self.ack_data: bytes | None = None  # UAC: the ACK of the latest 2xx, resent on retransmissions
        self.pending_2xx: Any = None  # UAS: the 2xx being retransmitted until ACK
        self.client_invite: Any = None  # our re-INVITE in progress (glare detection)
        self.server_invite: Any = None  # their (re-)INVITE in progress
        self.glare_timer: Any = None
        self.keepalive_timer: Any = None
        self.tenant = tenant
        self.data_acked = -1  # CSeq of the 2xx we ACKed last (UAC)
        self.auth: Any = None  # DigestClient for in-dialog requests the peer challenges
        self.data: Any = None
        self.log = CallLogger(logger, {"call_id": call_id})

    @property
    def id(self) -> DialogId:
        """``(call_id, local_tag, remote_tag)``."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def fire(self, trigger: DialogTrigger) -> bool:
        """Apply ``trigger``; returns True when the state changed.

        Raises LocalProtocolError for a trigger the state has no row for
        (e.g. BYE on a terminated dialog).
        """
        new = DIALOG[self.state].get(trigger)
        if new is None:
            raise LocalProtocolError(
                f"dialog {self.call_id} in state {self.state.name} cannot take {trigger.name}")
        changed = new is not self.state
        if changed and logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] dialog %s -> %s on %s", self.call_id, self.state.name, new.name, trigger.name)
        self.state = new
        return changed

    def destination(self) -> tuple[Address, str]:
        """Where the next in-dialog request goes: the first Route, else the peer (§12.2.1.1)."""
        if self.route_set:
            first = NameAddr.parse(self.route_set[0], "Route header")
            found = uri_address(first.uri_text)
            if found is not None:
                return found
        return self.peer, self.transport

    def next_seq(self) -> int:
        """Increment and return the local CSeq (§12.2.1.1)."""
        self.local_seq += 1
        return self.local_seq

    def build_request(self, method: str, via: str, cseq: int | None = None,
                      headers: list[tuple[str, str]] | tuple = (), body: bytes = b"",
                      content_type: str | None = None) -> Request:
        """An in-dialog request (§12.2.1.1) with loose routing.

        ``cseq`` defaults to the next local sequence number; ACK passes the
        INVITE's number.
        """
        if self.state is DialogState.TERMINATED and method not in ("ACK", "BYE"):
            raise LocalProtocolError(f"dialog {self.call_id} is terminated: cannot send {method}")
        seq = self.next_seq() if cseq is None else cseq
        extra: list[tuple[str, str]] = [("Route", r) for r in self.route_set]
        extra.extend(headers)
        contact = self.local_contact if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY") else None
        return make_request(method, self.remote_target, via=via, from_=self.local_party,
                            to=self.remote_party, call_id=self.call_id, cseq=seq,
                            contact=contact, headers=extra, body=body, content_type=content_type)

    def refresh_target(self, contact: list[NameAddr]) -> None:
        """Target refresh (§12.2.1.2 / §12.2.2): a re-INVITE or its 2xx with a Contact."""
        if contact:
            self.remote_target = contact[0].uri_text

    def __repr__(self) -> str:
        return f"<Dialog {self.role} {self.call_id} {self.state.name}>"


# Compiled twin (sip/_dialog.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.dialog":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._dialog")
