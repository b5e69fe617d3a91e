"""OPTIONS keep-alive pings ("qualify") to registered contacts, and their reachability.

Theory of operation
-------------------
A phone that registered may since have lost power or network: its binding
stays until it expires (often an hour), and a call offered to it would ring
nowhere until Timer B.  The :class:`Qualifier` probes every binding of the
:class:`~sip.location.LocationService` with an out-of-dialog ``OPTIONS``
(RFC 3261 §11: any UA must answer OPTIONS) every ``interval_s`` seconds,
sent to where the REGISTER came from (the binding's ``source`` and
``transport``, RFC 3581 / RFC 5626 flow idea), so NAT bindings are kept open
as a side effect.

* Any response (200, and also 4xx/5xx/6xx: a UA that answers is alive,
  RFC 3261 §11.2) marks the contact **reachable**.
* No response within ``timeout_s`` (default 64*T1 = Timer F, 32 s; a
  shorter value detects a dead phone sooner, the transaction itself keeps
  retransmitting until Timer F) or a transport error counts one failure;
  ``max_failures`` consecutive failures mark it **unreachable**.
* A contact not probed yet is **unknown** (``None``), treated as reachable
  by :meth:`reachable` so a fresh registration is usable at once.

Each change of a contact's state calls ``on_change(aor, contact, reachable,
now)`` (the call path can stop offering calls to an agent whose phone is
gone).  Removed or expired bindings are forgotten at the next round.

It is sans-IO like the stack: its rounds and timeouts live in the stack's
:class:`~sip.timers.TimerHeap` (driven by the transport's single timer), and
it sees the stack's events through :meth:`handle_event`, which the
application calls first for every event and which returns True for events
that belonged to a ping (``SipEndpoint(qualify=...)`` does this).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from .events import Event, ResponseReceived, TransactionTimedOut
from .timers import T1, TimerEntry

logger = logging.getLogger(__name__)

ContactKey = tuple[str, str]  # (aor, contact URI)
ReachabilityCallback = Callable[[str, str, bool, float], None]


@dataclass(slots=True)
class ContactHealth:
    """What the qualifier knows about one binding."""

    aor: str
    contact: str
    reachable: bool | None = None
    """None until the first ping is answered or fails."""
    failures: int = 0
    """Consecutive unanswered pings."""
    last_rtt_s: float | None = None
    """Round-trip time of the last answered ping."""
    pending: Any = None
    """The outstanding OPTIONS client transaction, if any."""
    sent_at: float = 0.0
    deadline: TimerEntry | None = None


class Qualifier:
    """Pings the bindings of a location service with OPTIONS (see the module docstring).

    Args:
        stack: the :class:`~sip.stack.SipStack` that sends the pings.
        location: the :class:`~sip.location.LocationService` (``registrar.location``).
        interval_s: seconds between rounds (RFC-free policy; 30 s keeps NAT pinholes open).
        timeout_s: an unanswered ping counts as failed after this long.
        max_failures: consecutive failures before a contact is unreachable.
        on_change: ``on_change(aor, contact, reachable, now)`` on every state change.
    """

    def __init__(self, stack: Any, location: Any, *, interval_s: float = 30.0, timeout_s: float = 64 * T1,
                 max_failures: int = 1, on_change: ReachabilityCallback | None = None) -> None:
        if interval_s <= 0 or timeout_s <= 0 or max_failures < 1:
            raise ValueError("interval_s and timeout_s must be > 0 and max_failures >= 1")
        self.stack = stack
        self.location = location
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_failures = max_failures
        self.on_change = on_change or (lambda aor, contact, reachable, now: None)
        self._health: dict[ContactKey, ContactHealth] = {}
        self._by_txn: dict[Any, ContactHealth] = {}
        self._round: TimerEntry | None = None

    # ------------------------------------------------------------ control
    def start(self, now: float) -> None:
        """Start the rounds; the first runs at once (at the next timer pass)."""
        self.stop()
        self._round = self.stack.timers.schedule(now, self._run_round, None)

    def stop(self) -> None:
        """Stop pinging (outstanding pings are ignored from now on)."""
        timers = self.stack.timers
        timers.cancel(self._round)
        self._round = None
        for health in self._health.values():
            timers.cancel(health.deadline)
            health.deadline = None
            health.pending = None
        self._by_txn.clear()

    # ------------------------------------------------------------ queries
    def state(self, aor: str, contact: str) -> bool | None:
        """True/False once known, None for a contact not qualified yet."""
        health = self._health.get((aor, contact))
        return None if health is None else health.reachable

    def reachable(self, aor: str) -> bool:
        """True when ``aor`` has a binding that is reachable or not qualified yet."""
        return any(self.state(aor, b.contact) is not False for b in self.location.lookup(aor))

    def reachable_bindings(self, aor: str) -> list[Any]:
        """The bindings of ``aor`` worth calling (reachable or unknown), highest q first."""
        return [b for b in self.location.lookup(aor) if self.state(aor, b.contact) is not False]

    def health(self) -> list[ContactHealth]:
        """Every contact being qualified."""
        return list(self._health.values())

    # ------------------------------------------------------------ events
    def handle_event(self, ev: Event, now: float) -> bool:
        """Feed every stack event first; True when it was an answer to (or the end of) a ping."""
        if isinstance(ev, ResponseReceived):
            health = self._by_txn.get(ev.transaction)
            if health is None:
                return False
            if ev.response.status_code < 200:
                return True  # a provisional answer proves nothing final yet, but it is ours
            self._answered(health, ev.transaction, now)
            return True
        if isinstance(ev, TransactionTimedOut):
            health = self._by_txn.pop(ev.transaction, None)
            if health is None:
                return False
            if health.pending is ev.transaction:
                self._failed(health, now, ev.reason)
            return True
        return False

    # ------------------------------------------------------------ internals
    def _run_round(self, _kind: object, now: float) -> None:
        self._round = self.stack.timers.schedule(now + self.interval_s, self._run_round, None)
        alive: set[ContactKey] = set()
        for aor in self.location.aors():
            for binding in self.location.lookup(aor):
                key = (aor, binding.contact)
                alive.add(key)
                health = self._health.get(key)
                if health is None:
                    health = self._health[key] = ContactHealth(aor, binding.contact)
                if health.pending is None:
                    self._ping(health, binding, now)
        for key in [k for k in self._health if k not in alive]:
            gone = self._health.pop(key)
            self.stack.timers.cancel(gone.deadline)
            if gone.pending is not None:
                self._by_txn.pop(gone.pending, None)

    def _ping(self, health: ContactHealth, binding: Any, now: float) -> None:
        try:
            txn = self.stack.request("OPTIONS", binding.contact, now, to=f"<{binding.aor}>",
                                     dest=binding.source, transport=binding.transport,
                                     headers=[("Accept", "application/sdp")])
        except Exception as exc:  # an unroutable contact must not stop the round
            logger.warning("cannot qualify %s (%s): %s", binding.contact, binding.aor, exc)
            self._failed(health, now, "not routable")
            return
        health.pending = txn
        health.sent_at = now
        self._by_txn[txn] = health
        health.deadline = self.stack.timers.schedule(now + self.timeout_s, self._ping_timeout, health)

    def _ping_timeout(self, kind: object, now: float) -> None:
        health: ContactHealth = kind  # type: ignore[assignment]
        health.deadline = None
        txn = health.pending
        if txn is None:
            return
        health.pending = None  # a late answer still counts (see _answered)
        self._failed(health, now, f"no answer within {self.timeout_s:g} s")

    def _answered(self, health: ContactHealth, txn: Any, now: float) -> None:
        self._by_txn.pop(txn, None)
        if health.pending is txn:
            self.stack.timers.cancel(health.deadline)
            health.deadline = None
            health.pending = None
        health.last_rtt_s = now - health.sent_at
        health.failures = 0
        self._set(health, True, now)

    def _failed(self, health: ContactHealth, now: float, why: str) -> None:
        health.failures += 1
        logger.info("qualify %s (%s): %s (%d in a row)", health.contact, health.aor, why, health.failures)
        if health.failures >= self.max_failures:
            self._set(health, False, now)

    def _set(self, health: ContactHealth, reachable: bool, now: float) -> None:
        if health.reachable is reachable:
            return
        health.reachable = reachable
        logger.info("contact %s of %s is now %s", health.contact, health.aor,
                    "reachable" if reachable else "UNREACHABLE")
        self.on_change(health.aor, health.contact, reachable, now)
