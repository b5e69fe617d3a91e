"""Location service: the bindings a registrar keeps (RFC 3261 §10.3).

Theory of operation
-------------------
An address of record (AOR, ``"sip:alice@example.com"``) maps to zero or more
:class:`Binding` s, one per Contact URI.  Each binding remembers the Call-ID
and CSeq of the REGISTER that made it (§10.3 step 7 orders updates by them),
its absolute expiry in the stack's clock, and where the REGISTER came *from*
(``source`` and ``transport``): a phone behind NAT is reachable at that
address, not at its Contact host (RFC 3581, and RFC 5626's idea of a flow).

Expiry is driven by the shared timer heap (one entry per binding, cancelled
when the binding is refreshed or removed); changes come back to the owner as
(aor, reason) pairs so it can raise ``RegistrationChanged`` events.  This
module knows no SIP syntax: ``sip/registrar.py`` turns REGISTER requests into
calls here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .timers import TimerEntry, TimerHeap

Address = tuple[str, int]


@dataclass(slots=True)
class Binding:
    """One contact of an AOR."""

    aor: str
    """Address of record, normalised ``sip:user@domain``."""
    contact: str
    """The Contact URI as registered (without angle brackets)."""
    expires_at: float
    """Absolute expiry in the stack clock."""
    call_id: str
    """Call-ID of the REGISTER that created or last refreshed it."""
    cseq: int
    """CSeq number of that REGISTER."""
    source: Address
    """Where that REGISTER came from: send requests for this contact here."""
    transport: str = "UDP"
    """Transport the REGISTER used."""
    q: float = 1.0
    """Preference (Contact ``q`` parameter)."""
    tenant: str = "default"
    """Tenant of the registrar domain."""
    timer: TimerEntry | None = field(default=None, repr=False, compare=False)

    def expires_in(self, now: float) -> int:
        """Whole seconds left (never negative), for the 200's Contact expires."""
        return max(0, int(self.expires_at - now + 0.5))


class LocationService:
    """AOR → bindings, with expiry on the shared timer heap.

    ``on_change(aor, reason)`` is called after every change with reason
    ``"registered"``, ``"refreshed"``, ``"unregistered"`` or ``"expired"``.
    """

    def __init__(self, timers: TimerHeap, on_change: Callable[[str, str], None] | None = None) -> None:
        self._timers = timers
        self._on_change = on_change or (lambda aor, reason: None)
        self._bindings: dict[str, dict[str, Binding]] = {}

    def __contains__(self, aor: str) -> bool:
        return bool(self._bindings.get(aor))

    def aors(self) -> list[str]:
        """Every AOR with at least one binding."""
        return [aor for aor, b in self._bindings.items() if b]

    def lookup(self, aor: str) -> list[Binding]:
        """Current bindings of ``aor``, highest q first (empty when unknown)."""
        return sorted(self._bindings.get(aor, {}).values(), key=lambda b: -b.q)

    def check_order(self, aor: str, contact: str, call_id: str, cseq: int) -> bool:
        """§10.3 step 7: False when a binding with this Call-ID has CSeq >= ``cseq``."""
        b = self._bindings.get(aor, {}).get(contact)
        return b is None or b.call_id != call_id or cseq > b.cseq

    def update(self, aor: str, contact: str, expires_s: int, call_id: str, cseq: int,
               source: Address, transport: str, now: float, q: float = 1.0,
               tenant: str = "default") -> str | None:
        """Add, refresh (``expires_s`` > 0) or remove (0) one binding.

        Returns the change reason, or None when nothing changed (removing an
        unknown contact).  The caller reports changes once per REGISTER via
        :meth:`notify`.
        """
        bindings = self._bindings.setdefault(aor, {})
        old = bindings.get(contact)
        if expires_s <= 0:
            if old is None:
                return None
            self._drop(old)
            return "unregistered"
        if old is not None:
            self._timers.cancel(old.timer)
        b = Binding(aor, contact, now + expires_s, call_id, cseq, source, transport, q, tenant)
        b.timer = self._timers.schedule(b.expires_at, self._expire, (aor, contact))  # type: ignore[arg-type]
        bindings[contact] = b
        return "refreshed" if old is not None else "registered"

    def remove_all(self, aor: str) -> bool:
        """Remove every binding of ``aor`` (Contact: * with Expires: 0)."""
        bindings = list(self._bindings.get(aor, {}).values())
        for b in bindings:
            self._drop(b)
        return bool(bindings)

    def notify(self, aor: str, reason: str) -> None:
        """Report one change of ``aor`` to the owner."""
        self._on_change(aor, reason)

    def _drop(self, b: Binding) -> None:
        self._timers.cancel(b.timer)
        bindings = self._bindings.get(b.aor, {})
        bindings.pop(b.contact, None)
        if not bindings:
            self._bindings.pop(b.aor, None)

    def _expire(self, key: object, now: float) -> None:
        aor, contact = key  # type: ignore[misc]
        b = self._bindings.get(aor, {}).get(contact)
        if b is None or b.expires_at > now:
            return
        b.timer = None
        self._drop(b)
        self._on_change(aor, "expired")
