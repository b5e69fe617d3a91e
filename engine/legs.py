"""Outgoing call legs placed by the engine (B2BUA): to a registered phone or out through a trunk.

Theory of operation
-------------------
Every call leg the engine *places* goes through :class:`Legs` (one per
:class:`engine.callpath.CallCentre`, ``centre.legs``): the agent's phone
when the ACD offers a call, a consulted agent or supervisor, a blind or
consultative transfer to an external number, click-to-dial, an IVR
transfer, an outbound dialer.  Media stays anchored in the engine: each
leg owns a media leg of the :class:`media.engine.MediaEngine` (same id,
``<call id>/<suffix>``) that the caller of this module joins to rooms.

Two kinds of target:

* :meth:`Legs.dial_extension`: the contact a phone registered (registrar
  location service), sent from the address the REGISTER came from when the
  Contact points elsewhere (RFC 3581, a phone behind NAT), as the inbound
  call path does for its offers.
* :meth:`Legs.dial_trunk`: ``sip:<number>@<host>:<port>`` of a
  ``[trunks.NAME]`` over its ``transport``; a 401/407 is answered once with
  the trunk's ``username``/``password`` (RFC 3261 §22.2, digest of
  ``sip/auth.py``); From carries the given caller id or the trunk's
  ``caller_number``; ``max_channels`` counts the trunk's live inbound calls
  plus its outgoing legs.  Before a trunk INVITE leaves, the centre's
  toll-fraud hook ``centre.dial_policy(DialCheck) -> str | None`` may refuse
  it (default: allow).

A leg sends INVITE with our SDP offer (RFC 3264 §5) and moves through
:class:`LegState` by :data:`LEG_TRANSITIONS`::

    CALLING --1xx--> RINGING --2xx--> ANSWERED --BYE (either side)--> ENDED
       |                |
       '----------------'--final >= 300 / our timeout + CANCEL / Timer B / cancel()--> FAILED

* 180/183 (and any other 1xx except 100): ``LegRinging`` (once).  A 1xx
  with SDP is early media: the answer is applied to the media leg at once.
* 2xx: the stack ACKs (RFC 3261 §13.2.2.4), the SDP answer is applied to
  the media leg (address, codec, payload types) and ``LegAnswered`` fires;
  an unusable answer is hung up (BYE) and fails as ``rejected`` / 488.
* final >= 300, our ring timeout (CANCEL, RFC 3261 §9.1), Timer B or
  :meth:`OutgoingLeg.cancel`: ``LegFailed`` with an :class:`LegOutcome`
  (see :func:`classify`) and the SIP status (0 when no SIP response was
  involved: policy refusal, no registration, all channels in use).
* the far end hangs up (BYE, 481/408 to an in-dialog request, keep-alive
  failure): ``LegEnded``.  Our own :meth:`OutgoingLeg.hangup` /
  :meth:`OutgoingLeg.cancel` never produce ``LegEnded``/``LegFailed`` to the
  owner's callback: the caller already knows.  The futures
  (:meth:`OutgoingLeg.wait_answer`, :meth:`OutgoingLeg.wait_ended`) resolve
  in every case.

In-dialog requests on an answered leg: a re-INVITE is answered from the
leg's SDP session and the media leg follows it (RFC 3264 §8); a change of
the phone's hold state (``a=sendonly``/``inactive`` or ``c=0.0.0.0`` →
held, ``sendrecv`` → retrieved, RFC 3264 §8.4) fires ``LegHoldChanged``.
Other requests (REFER, INFO, NOTIFY ...) go to ``leg.request_handler`` when
set, else to ``legs.request_hook(leg, event)`` (call control's REFER); a
handler answers the transaction and returns True.  Unhandled: INFO /
NOTIFY / UPDATE / OPTIONS get 200 and anything else 405.

Events go to the ``on_event`` callback given at dial time, called on the
loop (never re-entrantly from :meth:`Legs.dial_extension` /
:meth:`Legs.dial_trunk`: a leg that fails at once reports it with
``loop.call_soon``).  The media leg lives exactly as long as the leg is
not FAILED/ENDED; the SIP mapping (by SIP Call-ID) lives until the INVITE
transaction is over, so a 2xx arriving after a CANCEL still gets ACK + BYE.

Example::

    def on_leg(ev):
        if isinstance(ev, LegAnswered):
            media.join(room, ev.leg.leg_id)
        elif isinstance(ev, LegFailed):
            log.info("%s (%d)", ev.outcome.value, ev.status)
        elif isinstance(ev, LegEnded):
            ...
    leg = centre.legs.dial_trunk("carrier", "+4930555999", call_id=call.call_id, tenant=call.tenant,
                                 ring_timeout_s=30, agent="1001", purpose="transfer", on_event=on_leg)
    outcome = await leg.wait_answer()        # LegOutcome.ANSWERED or why not
    leg.send_dtmf("123#")                    # RFC 4733 to the far end
    leg.hangup()                             # BYE (CANCEL while still ringing)
"""
from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from engine.app import CallLogger
from engine.errors import InvalidArgs, NotFound
from sip.events import DialogTerminated, Event, RequestReceived, ResponseReceived, TransactionTimedOut
from sip.sdp import SdpSession, SessionDescription

logger = logging.getLogger("engine.legs")

NUMBER_RE = re.compile(r"^\+?[0-9*#]{1,32}$")
"""A number the engine dials out: digits, ``*`` and ``#``, an optional leading ``+``."""

MAPPING_LINGER_S = 40.0
"""How long a failed leg's SIP Call-ID stays mapped (a 2xx racing our CANCEL gets ACK + BYE); > 64*T1."""


class LegState(enum.Enum):
    CALLING = "calling"
    RINGING = "ringing"
    ANSWERED = "answered"
    FAILED = "failed"
    ENDED = "ended"


class LegTrigger(enum.Enum):
    PROVISIONAL = "provisional"
    ANSWER = "answer"
    FAIL = "fail"
    END = "end"


_S, _T = LegState, LegTrigger
LEG_TRANSITIONS: dict[LegState, dict[LegTrigger, LegState]] = {
    _S.CALLING: {_T.PROVISIONAL: _S.RINGING, _T.ANSWER: _S.ANSWERED, _T.FAIL: _S.FAILED},
    _S.RINGING: {_T.PROVISIONAL: _S.RINGING, _T.ANSWER: _S.ANSWERED, _T.FAIL: _S.FAILED},
    _S.ANSWERED: {_T.END: _S.ENDED},
    _S.FAILED: {},
    _S.ENDED: {},
}


class IllegalLegTransition(Exception):
    """A leg was asked to move along a transition the table lacks (a bug)."""


class LegOutcome(enum.Enum):
    """How a placed leg ended its attempt (``LegFailed.outcome``; ``ANSWERED`` from ``wait_answer``)."""

    ANSWERED = "answered"
    BUSY = "busy"
    """486 Busy Here, 600 Busy Everywhere."""
    NO_ANSWER = "no_answer"
    """Our ring timeout expired after the far end responded: CANCEL sent (status 487)."""
    INVALID_NUMBER = "invalid_number"
    """404, 484, 604."""
    CONGESTION = "congestion"
    """503, 480, any other 5xx; or the trunk's ``max_channels`` reached (status 0)."""
    REJECTED = "rejected"
    """Any other 4xx/6xx (also an unusable SDP answer: 488 after our BYE)."""
    TIMEOUT = "timeout"
    """No response at all: Timer B, a 408, or our ring timeout before any response."""
    CANCELLED = "cancelled"
    """:meth:`OutgoingLeg.cancel` (or hangup before answer) by the engine."""
    DENIED = "denied"
    """The toll-fraud policy (``centre.dial_policy``) refused the number (status 0)."""
    UNREACHABLE = "unreachable"
    """The extension has no registered contact (status 0)."""


def classify(status: int) -> LegOutcome:
    """The outcome of a final SIP status >= 300 to our INVITE (RFC 3261 §21)."""
    if status in (486, 600):
        return LegOutcome.BUSY
    if status in (404, 484, 604):
        return LegOutcome.INVALID_NUMBER
    if status == 408:
        return LegOutcome.TIMEOUT
    if status == 487:
        return LegOutcome.CANCELLED
    if status == 480 or 500 <= status < 600:
        return LegOutcome.CONGESTION
    return LegOutcome.REJECTED


@dataclass(frozen=True, slots=True)
class LegTarget:
    """Where a leg goes: ``kind`` ``"extension"`` (``number`` = extension) or ``"trunk"``."""

    kind: str
    number: str
    trunk: str = ""


@dataclass(frozen=True, slots=True)
class DialCheck:
    """What the toll-fraud policy hook sees before a trunk INVITE leaves."""

    tenant: str
    trunk: str
    number: str
    """The number dialled out (as given, e.g. ``+4930555999``)."""
    caller_number: str
    """The caller id that will be sent."""
    call_id: str
    """The engine call the leg belongs to."""
    agent: str = ""
    """The agent on whose behalf the engine dials (``""``: the engine itself, e.g. an IVR)."""
    purpose: str = ""
    """``"transfer"``, ``"consult"``, ``"dial"``, ``"forward"``, ``"ivr_transfer"``, ``"dialer"`` ..."""
    role: str = ""
    """Role of whoever caused the leg (the control user of ``call.dial``/``callback.dial``);
    ``""``: derived from ``agent``/``purpose`` (engine.tollfraud.role_of)."""


DialPolicy = Callable[[DialCheck], "str | None"]
"""``centre.dial_policy``: return a refusal reason (the leg fails as ``denied``) or None to allow."""


class LegEvent:
    """Base of the events a leg reports to its ``on_event`` callback."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class LegRinging(LegEvent):
    """The far end is alerting (first 180/183 or other 1xx except 100)."""

    leg: "OutgoingLeg"
    status: int


@dataclass(frozen=True, slots=True)
class LegAnswered(LegEvent):
    """2xx received and ACKed; the SDP answer is applied; the media leg is live."""

    leg: "OutgoingLeg"


@dataclass(frozen=True, slots=True)
class LegFailed(LegEvent):
    """The leg was never answered: why, with the SIP status (0: no SIP response involved)."""

    leg: "OutgoingLeg"
    outcome: LegOutcome
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class LegEnded(LegEvent):
    """The far end ended an answered leg (``reason``: ``bye_received``, ``timeout``, ``rejected`` ...)."""

    leg: "OutgoingLeg"
    reason: str


@dataclass(frozen=True, slots=True)
class LegHoldChanged(LegEvent):
    """The phone put us on hold (re-INVITE ``sendonly``/``inactive``) or took us off hold (``sendrecv``)."""

    leg: "OutgoingLeg"
    held: bool


class OutgoingLeg:
    """One leg placed by the engine (see the module docstring).

    Attributes:
        leg_id: the media leg's id (also its member id in rooms).
        call_id: the engine call it belongs to.
        tenant, target, caller_number, agent, purpose: as given to the dial call.
        state: :class:`LegState`; ``outcome``/``status``/``reason`` once decided.
        sip_call_id: the SIP Call-ID of our INVITE.
        dialog: the ``sip.dialog.Dialog`` once answered (or early).
        sdp: our ``sip.sdp.SdpSession`` for this leg.
        remote_hold: the phone holds us (last re-INVITE was sendonly/inactive).
        created_ts, ringing_ts, answered_ts, ended_ts: wall-clock times.
        request_handler: ``f(RequestReceived) -> bool`` for in-dialog requests
            other than re-INVITE/BYE (REFER ...); True when it answered.
        data: free slot for the owner.
    """

    def __init__(self, legs: "Legs", leg_id: str, call_id: str, tenant: str, target: LegTarget,
                 caller_number: str, *, agent: str = "", purpose: str = "",
                 on_event: Callable[[LegEvent], None] | None = None) -> None:
        self.legs = legs
        self.leg_id = leg_id
        self.call_id = call_id
        self.tenant = tenant
        self.target = target
        self.caller_number = caller_number
        self.agent = agent
        self.purpose = purpose
        self.on_event = on_event
        self.state = LegState.CALLING
        self.outcome: LegOutcome | None = None
        self.status = 0
        self.reason = ""
        self.end_reason = ""
        self.sip_call_id = ""
        self.invite_txn: Any = None
        self.dialog: Any = None
        self.sdp: SdpSession | None = None
        self.media_open = False
        self.responded = False
        self.early_media = False
        self.remote_hold = False
        self.created_ts = time.time()
        self.ringing_ts: float | None = None
        self.answered_ts: float | None = None
        self.ended_ts: float | None = None
        self.request_handler: Callable[[RequestReceived], bool] | None = None
        self.data: dict[str, Any] = {}
        self._ring_timer: asyncio.TimerHandle | None = None
        loop = legs.centre.loop
        self._answer_fut: asyncio.Future[LegOutcome] = loop.create_future()
        self._end_fut: asyncio.Future[str] = loop.create_future()
        self.log = CallLogger(logger, {"call_id": call_id})

    # ------------------------------------------------------------------ public
    @property
    def done(self) -> bool:
        """FAILED or ENDED."""
        return self.state in (LegState.FAILED, LegState.ENDED)

    @property
    def live(self) -> bool:
        """Still ringing or answered (counts against a trunk's channels)."""
        return not self.done

    async def wait_answer(self) -> LegOutcome:
        """``LegOutcome.ANSWERED``, or the failure outcome; never raises."""
        return await asyncio.shield(self._answer_fut)

    async def wait_ended(self) -> str:
        """The end reason once the leg is over (failed, hung up by either side)."""
        return await asyncio.shield(self._end_fut)

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop a ringing leg: CANCEL (RFC 3261 §9.1), outcome ``cancelled``; no-op once answered or over."""
        if self.state in (LegState.CALLING, LegState.RINGING):
            self._send_cancel()
            self._fail(LegOutcome.CANCELLED, 487, reason, notify=False)

    def hangup(self, reason: str = "hangup") -> None:
        """End the leg from our side: BYE when answered (RFC 3261 §15.1.1), CANCEL while ringing."""
        if self.state is LegState.ANSWERED:
            self._end(reason, notify=False)
            ep = self.legs.centre.endpoint
            if self.dialog is not None and ep is not None and not self.dialog.terminated:
                try:
                    ep.bye(self.dialog)
                except Exception as exc:
                    self.log.debug("BYE on leg %s not sent: %s", self.leg_id, exc)
        else:
            self.cancel(reason)

    def send_dtmf(self, digits: str, duration_ms: float = 100.0, gap_ms: float = 60.0) -> None:
        """RFC 4733 digits to the far end (answered legs only).

        Raises:
            InvalidArgs: not answered, or telephone-event not negotiated / bad digit.
        """
        media = self.legs.centre.media
        if self.state is not LegState.ANSWERED or media is None or self.leg_id not in media.legs:
            raise InvalidArgs(f"leg {self.leg_id} is {self.state.value}, not answered")
        try:
            media.send_dtmf(self.leg_id, digits, duration_ms=duration_ms, gap_ms=gap_ms)
        except Exception as exc:
            raise InvalidArgs(str(exc)) from exc

    def describe(self) -> dict[str, Any]:
        return {"leg_id": self.leg_id, "call_id": self.call_id, "kind": self.target.kind,
                "number": self.target.number, "trunk": self.target.trunk, "state": self.state.value,
                "outcome": self.outcome.value if self.outcome else "", "status": self.status,
                "caller_number": self.caller_number, "agent": self.agent, "purpose": self.purpose}

    def __repr__(self) -> str:
        return f"<OutgoingLeg {self.leg_id} {self.target.kind}:{self.target.number} {self.state.value}>"

    # ------------------------------------------------------------------ transitions
    def _fire(self, trigger: LegTrigger) -> None:
        nxt = LEG_TRANSITIONS[self.state].get(trigger)
        if nxt is None:
            raise IllegalLegTransition(f"leg {self.leg_id}: {trigger.value} not allowed in {self.state.value}")
        self.state = nxt

    def _emit(self, ev: LegEvent, *, soon: bool = False) -> None:
        if self.on_event is None:
            return
        if soon:
            self.legs.centre.loop.call_soon(self._deliver, ev)
        else:
            self._deliver(ev)

    def _deliver(self, ev: LegEvent) -> None:
        try:
            self.on_event(ev)  # type: ignore[misc]
        except Exception:
            self.log.exception("leg %s: event handler failed on %s", self.leg_id, type(ev).__name__)

    def _stop_timer(self) -> None:
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None

    def _close_media(self) -> None:
        media = self.legs.centre.media
        if self.media_open and media is not None and self.leg_id in media.legs:
            media.destroy_leg(self.leg_id)
        self.media_open = False

    def _send_cancel(self) -> None:
        ep = self.legs.centre.endpoint
        if self.invite_txn is not None and ep is not None:
            try:
                ep.cancel(self.invite_txn)
            except Exception as exc:
                self.log.debug("CANCEL of leg %s not sent: %s", self.leg_id, exc)

    def _fail(self, outcome: LegOutcome, status: int, reason: str, *, notify: bool = True,
              soon: bool = False) -> None:
        self._fire(LegTrigger.FAIL)
        self._stop_timer()
        self.outcome, self.status, self.reason = outcome, status, reason
        self.ended_ts = time.time()
        self.end_reason = outcome.value
        self._close_media()
        self.legs._linger(self)
        self.log.info("leg %s to %s %s: %s (%d %s)", self.leg_id, self.target.kind, self.target.number,
                      outcome.value, status, reason)
        if not self._answer_fut.done():
            self._answer_fut.set_result(outcome)
        if not self._end_fut.done():
            self._end_fut.set_result(outcome.value)
        if notify:
            self._emit(LegFailed(self, outcome, status, reason), soon=soon)

    def _end(self, reason: str, *, notify: bool) -> None:
        self._fire(LegTrigger.END)
        self.ended_ts = time.time()
        self.end_reason = reason
        self._close_media()
        self.legs._forget(self)
        self.log.info("leg %s ended: %s", self.leg_id, reason)
        if not self._end_fut.done():
            self._end_fut.set_result(reason)
        if notify:
            self._emit(LegEnded(self, reason))

    def _ring_timeout(self) -> None:
        self._ring_timer = None
        if self.state not in (LegState.CALLING, LegState.RINGING):
            return
        self._send_cancel()
        if self.responded:
            self._fail(LegOutcome.NO_ANSWER, 487, "ring timeout")
        else:
            self._fail(LegOutcome.TIMEOUT, 408, "no response before the ring timeout")


class Legs:
    """Places and tracks every :class:`OutgoingLeg` of one call centre (see the module docstring).

    The centre hands it every SIP event first (:meth:`handle`); it needs
    ``centre.loop``, ``centre.endpoint``, ``centre.media``,
    ``centre.config``, ``centre.registrar`` and ``centre.dial_policy``.
    """

    def __init__(self, centre: Any) -> None:
        self.centre = centre
        self._by_sip: dict[str, OutgoingLeg] = {}
        self._live: dict[str, OutgoingLeg] = {}
        self._session_seq = 0
        self._resolved: dict[str, str] = {}
        self.request_hook: Callable[[OutgoingLeg, RequestReceived], bool] | None = None
        """In-dialog requests (REFER ...) of legs without a ``request_handler``; True when answered."""

    # ------------------------------------------------------------------ queries
    @property
    def live(self) -> list[OutgoingLeg]:
        """Legs still ringing or answered."""
        return list(self._live.values())

    def trunk_channels(self, trunk: str) -> int:
        """Channels of ``trunk`` in use: live inbound calls from it plus live outgoing legs to it."""
        inbound = sum(1 for c in self.centre.calls.values()
                      if c.trunk == trunk and c.caller is not None and not c.caller.ended)
        return inbound + sum(1 for leg in self._live.values() if leg.target.trunk == trunk)

    # ------------------------------------------------------------------ placing legs
    def dial_extension(self, extension: str, *, call_id: str, tenant: str, caller_number: str = "",
                       ring_timeout_s: float | None = None, leg_id: str | None = None, agent: str = "",
                       purpose: str = "", headers: Iterable[tuple[str, str]] = (),
                       on_event: Callable[[LegEvent], None] | None = None) -> OutgoingLeg:
        """Ring the phone registered for ``extension``.

        Args:
            extension: the registrar user (``sip:<extension>@...``).
            call_id: the engine call (media leg id prefix, ``X-Call-Id`` header, logs).
            tenant: the call's tenant.
            caller_number: shown to the phone (From user; ``anonymous`` when empty).
            ring_timeout_s: CANCEL after this long (``no_answer``); None: until Timer B / a final answer.
            leg_id: media leg id (default ``<call_id>/ext-<extension>-<n>``).
            agent, purpose: recorded on the leg (logs, ``describe``).
            headers: extra INVITE headers.
            on_event: gets :class:`LegRinging`, :class:`LegAnswered`, :class:`LegFailed`,
                :class:`LegEnded`, :class:`LegHoldChanged`.

        Returns:
            The leg; state FAILED with outcome ``unreachable`` (reported with
            ``call_soon``) when the extension has no registered contact.
        """
        from engine.callpath import contact_destination

        self._session_seq += 1
        leg = OutgoingLeg(self, leg_id or f"{call_id}/ext-{extension}-{self._session_seq}", call_id, tenant,
                          LegTarget("extension", extension), caller_number, agent=agent, purpose=purpose,
                          on_event=on_event)
        binding = self.centre._contact_of(extension)
        if binding is None:
            leg._fail(LegOutcome.UNREACHABLE, 0, f"extension {extension} is not registered", soon=True)
            return leg
        cfg, ep = self.centre.config, self.centre.endpoint
        host, port = ep.address
        self._invite(leg, binding.contact, dest=contact_destination(binding), transport=binding.transport,
                     from_=f"<sip:{caller_number or 'anonymous'}@{host}:{port}>",
                     to=f"<sip:{extension}@{cfg.sip.domain}>", auth=None,
                     headers=[("X-Call-Id", call_id), *headers], ring_timeout_s=ring_timeout_s,
                     srtp=self.centre.mediasec.phone_mode(binding))
        return leg

    def dial_trunk(self, trunk: str, number: str, *, call_id: str, tenant: str,
                   caller_number: str | None = None, ring_timeout_s: float | None = 60.0,
                   leg_id: str | None = None, agent: str = "", purpose: str = "",
                   headers: Iterable[tuple[str, str]] = (),
                   on_event: Callable[[LegEvent], None] | None = None, role: str = "") -> OutgoingLeg:
        """Dial ``number`` out through ``[trunks.<trunk>]``.

        Args:
            trunk: the trunk's name.
            number: digits with an optional leading ``+`` (``*`` and ``#`` allowed).
            call_id, tenant: the engine call; the trunk must belong to ``tenant``.
            caller_number: From user; None: the trunk's ``caller_number``.
            ring_timeout_s: CANCEL after this long (``no_answer``); None: until Timer B.
            leg_id: media leg id (default ``<call_id>/out-<n>``).
            agent, purpose: for the policy check, logs and ``describe``.
            headers: extra INVITE headers.
            on_event: as for :meth:`dial_extension`.

        Returns:
            The leg; FAILED at once (reported with ``call_soon``) as ``denied``
            (policy) or ``congestion`` (``max_channels`` reached), status 0.

        Raises:
            NotFound: no such trunk, or the trunk belongs to another tenant.
            InvalidArgs: ``number`` is not a dialable number.
        """
        cfg = self.centre.config
        conf = cfg.trunks.get(trunk)
        if conf is None or conf.tenant != tenant:  # another tenant's trunk: as if absent (docs/tenants.md)
            raise NotFound(f"no trunk {trunk!r}")
        if not NUMBER_RE.match(number or ""):
            raise InvalidArgs(f"{number!r} is not a dialable number (digits, *, #, optional leading +)")
        caller = conf.caller_number if caller_number is None else caller_number
        self._session_seq += 1
        leg = OutgoingLeg(self, leg_id or f"{call_id}/out-{self._session_seq}", call_id, tenant,
                          LegTarget("trunk", number, trunk), caller, agent=agent, purpose=purpose,
                          on_event=on_event)
        policy = getattr(self.centre, "dial_policy", None)
        if policy is not None:
            try:
                refusal = policy(DialCheck(tenant, trunk, number, caller, call_id, agent, purpose, role))
            except Exception:
                leg.log.exception("dial policy failed on %s: refusing", number)
                refusal = "dial policy failed"
            if refusal:
                leg._fail(LegOutcome.DENIED, 0, str(refusal), soon=True)
                return leg
        if conf.max_channels and self.trunk_channels(trunk) >= conf.max_channels:
            leg._fail(LegOutcome.CONGESTION, 0, f"trunk {trunk}: all {conf.max_channels} channels in use",
                      soon=True)
            return leg
        from sip.auth import DigestClient

        ep = self.centre.endpoint
        lhost, lport = ep.address
        target = self.centre.mediasec.trunk_target(conf, number)  # sips: over TLS trunks (engine/mediasec.py)
        scheme = target.uri.split(":", 1)[0]
        self._invite(leg, target.uri, dest=target.dest, transport=target.transport,
                     from_=f"<{scheme}:{caller or 'anonymous'}@{lhost}:{lport}>", to=f"<{scheme}:{number}@{conf.host}>",
                     auth=DigestClient(conf.username, conf.password) if conf.username else None,
                     headers=list(headers), ring_timeout_s=ring_timeout_s, srtp=target.srtp)
        return leg

    def _resolve(self, host: str) -> str:
        """A trunk host as an IP address (names resolved once and cached; the SIP stack does no DNS)."""
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        if host not in self._resolved:
            self._resolved[host] = socket.gethostbyname(host)
        return self._resolved[host]

    def _invite(self, leg: OutgoingLeg, uri: str, *, dest: tuple[str, int], transport: str, from_: str, to: str,
                auth: Any, headers: list[tuple[str, str]], ring_timeout_s: float | None, srtp: str = "off") -> None:
        centre = self.centre
        media, ep = centre.media, centre.endpoint
        leg.sdp = SdpSession(centre.config.media.host, int(time.time()) * 1000 + self._session_seq)
        try:
            mleg = media.create_leg(leg.leg_id, call_id=leg.call_id, tenant=leg.tenant)
        except Exception as exc:  # RTP port range exhausted, duplicate leg id
            leg._fail(LegOutcome.CONGESTION, 0, f"no media leg: {exc}", soon=True)
            return
        leg.media_open = True
        offer = centre.mediasec.offer(leg.leg_id, srtp if transport == "TLS" else "off", leg.sdp, mleg.local_port)
        try:
            txn = ep.invite(uri, dest=dest, transport=transport, from_=from_, to=to, headers=headers,
                            body=bytes(offer), content_type="application/sdp", auth=auth)
        except Exception as exc:
            leg._fail(LegOutcome.REJECTED, 0, f"INVITE not sent: {exc}", soon=True)
            return
        leg.invite_txn = txn
        leg.sip_call_id = txn.call_id
        self._by_sip[leg.sip_call_id] = leg
        self._live[leg.leg_id] = leg
        if ring_timeout_s is not None:
            leg._ring_timer = centre.loop.call_later(ring_timeout_s, leg._ring_timeout)
        leg.log.info("leg %s: INVITE %s (%s) from %s", leg.leg_id, uri, dest, leg.caller_number or "anonymous")

    def _linger(self, leg: OutgoingLeg) -> None:
        """A failed leg: not live any more; its SIP mapping stays until the INVITE is surely over."""
        self._live.pop(leg.leg_id, None)
        if leg.sip_call_id in self._by_sip:
            self.centre.loop.call_later(MAPPING_LINGER_S, self._drop_mapping, leg)

    def _drop_mapping(self, leg: OutgoingLeg) -> None:
        if self._by_sip.get(leg.sip_call_id) is leg:
            del self._by_sip[leg.sip_call_id]

    def _forget(self, leg: OutgoingLeg) -> None:
        self._live.pop(leg.leg_id, None)
        self._drop_mapping(leg)

    def hangup_all(self, reason: str = "shutdown") -> None:
        """BYE/CANCEL every live leg (engine stop)."""
        for leg in list(self._live.values()):
            leg.hangup(reason)

    # ------------------------------------------------------------------ SIP events
    def handle(self, ev: Event) -> bool:
        """Take a SIP event if it belongs to one of our legs; True when consumed."""
        if isinstance(ev, ResponseReceived):
            leg = self._by_sip.get(ev.response.call_id)
            if leg is None:
                return False
            if ev.transaction.method == "INVITE":
                self._invite_response(leg, ev)
            return True
        if isinstance(ev, TransactionTimedOut):
            leg = self._by_sip.get(ev.call_id)
            if leg is None:
                return False
            if ev.method == "INVITE" and leg.state in (LegState.CALLING, LegState.RINGING):
                leg._fail(LegOutcome.TIMEOUT, 408, f"no final response ({ev.reason})")
            return True
        if isinstance(ev, DialogTerminated):
            leg = self._by_sip.get(ev.dialog.call_id)
            if leg is None:
                return False
            if leg.state is LegState.ANSWERED and ev.dialog is leg.dialog:
                leg._end(ev.reason, notify=True)
            return True
        if isinstance(ev, RequestReceived) and ev.dialog is not None:
            leg = self._by_sip.get(ev.dialog.call_id)
            if leg is None:
                return False
            self._in_dialog_request(leg, ev)
            return True
        return False

    def _invite_response(self, leg: OutgoingLeg, ev: ResponseReceived) -> None:
        status = ev.response.status_code
        ep = self.centre.endpoint
        if leg.done:
            if 200 <= status < 300 and ev.dialog is not None and leg.state is LegState.FAILED:
                leg.log.info("leg %s answered after it was given up: BYE", leg.leg_id)
                ep.bye(ev.dialog)
            if status >= 200 and leg.state is LegState.FAILED:
                self._drop_mapping(leg)
            return
        if leg.state is LegState.ANSWERED:
            return  # a 2xx retransmission or a response to a re-INVITE: the stack ACKed it
        leg.responded = True
        if status < 200:
            if ev.response.body and ev.dialog is not None:
                self._apply_answer(leg, ev.response.body, early=True)
            if status > 100 and leg.state is LegState.CALLING:
                leg._fire(LegTrigger.PROVISIONAL)
                leg.ringing_ts = time.time()
                leg.dialog = ev.dialog
                leg.log.info("leg %s ringing (%d)", leg.leg_id, status)
                leg._emit(LegRinging(leg, status))
            return
        if status >= 300:
            reason = getattr(ev.response, "reason", "") or ""
            leg._fail(classify(status), status, reason)
            self._drop_mapping(leg)
            return
        leg.dialog = ev.dialog
        body = ev.response.body
        error = self._apply_answer(leg, body, early=False) if body else (
            None if leg.early_media else "2xx without SDP answer")
        if error is not None:
            leg.log.warning("leg %s answered with an unusable SDP answer (%s): BYE", leg.leg_id, error)
            if ev.dialog is not None:
                ep.bye(ev.dialog)
            leg._fail(LegOutcome.REJECTED, 488, f"unusable SDP answer: {error}")
            return
        leg._stop_timer()
        leg._fire(LegTrigger.ANSWER)
        leg.outcome = LegOutcome.ANSWERED
        leg.status = status
        leg.answered_ts = time.time()
        leg.log.info("leg %s answered", leg.leg_id)
        if not leg._answer_fut.done():
            leg._answer_fut.set_result(LegOutcome.ANSWERED)
        leg._emit(LegAnswered(leg))

    def _apply_answer(self, leg: OutgoingLeg, body: bytes, *, early: bool) -> str | None:
        """Apply an SDP answer to the media leg; the error text, or None when applied."""
        from engine.callpath import sdp_payload_types

        media = self.centre.media
        try:
            sd = SessionDescription.parse(body)
            neg = self.centre.mediasec.accept(leg.leg_id, leg.sdp, sd)  # SDES-SRTP (engine/mediasec.py)
            media.update_leg(leg.leg_id, remote=(neg.remote_address, neg.remote_port) if neg.remote_address else None,
                             codec=neg.codec, payload_types=sdp_payload_types(sd))
        except Exception as exc:
            if early:
                leg.log.info("leg %s: early SDP ignored (%s)", leg.leg_id, exc)
            return str(exc) or type(exc).__name__
        if early:
            leg.early_media = True
        return None

    def _in_dialog_request(self, leg: OutgoingLeg, ev: RequestReceived) -> None:
        ep, media = self.centre.endpoint, self.centre.media
        method = ev.request.method
        if leg.done or leg.leg_id not in media.legs:
            ep.respond(ev.transaction, 481)
            return
        if method == "INVITE":
            self._reinvite(leg, ev)
            return
        handler = leg.request_handler or (
            (lambda e: self.request_hook(leg, e)) if self.request_hook is not None else None)  # type: ignore[misc]
        if handler is not None:
            try:
                if handler(ev):
                    return
            except Exception:
                leg.log.exception("leg %s: request handler failed on %s", leg.leg_id, method)
                ep.respond(ev.transaction, 500)
                return
        ep.respond(ev.transaction, 200 if method in ("INFO", "NOTIFY", "UPDATE", "OPTIONS") else 405)

    def _reinvite(self, leg: OutgoingLeg, ev: RequestReceived) -> None:
        """RFC 3264 §8: answer from the leg's session; hold = the offer does not want to receive."""
        from engine.callpath import sdp_payload_types

        ep, media = self.centre.endpoint, self.centre.media
        if not ev.request.body:
            ep.respond(ev.transaction, 488)
            return
        try:
            offer = SessionDescription.parse(ev.request.body)
            answer, neg = self.centre.mediasec.reanswer(leg.leg_id, ev.transport, leg.sdp,  # type: ignore[arg-type]
                                                        offer, media.legs[leg.leg_id].local_port)
            media.update_leg(leg.leg_id, remote=(neg.remote_address, neg.remote_port) if neg.remote_address else None,
                             codec=neg.codec, payload_types=sdp_payload_types(offer), direction=neg.direction)
        except Exception as exc:
            leg.log.info("re-INVITE on leg %s refused: %s", leg.leg_id, exc)
            ep.respond(ev.transaction, 488)
            return
        ep.respond(ev.transaction, 200, body=bytes(answer), content_type="application/sdp")
        if neg.remote_hold != leg.remote_hold:
            leg.remote_hold = neg.remote_hold
            leg.log.info("leg %s: the phone %s", leg.leg_id, "holds" if neg.remote_hold else "retrieves")
            leg._emit(LegHoldChanged(leg, neg.remote_hold))
