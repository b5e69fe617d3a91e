"""One timer heap for the whole SIP core.

Theory of operation
-------------------
Every deadline of the sans-IO SIP core (transaction timers A..M of RFC 3261
§17 and RFC 6026, the UAS 2xx retransmission of §13.3.1.4, registration
expiry of §10.3) lives in one binary heap of *absolute* deadlines, expressed
in the same clock as the ``now`` the caller hands in (``loop.time()`` in
production, a float a test advances).  Nothing here reads a clock or creates
a task: the transport asks :meth:`TimerHeap.next_deadline` and arms a single
``loop.call_at`` for it, then calls :meth:`TimerHeap.pop_due` when it fires.

Cancellation is lazy: :meth:`TimerHeap.cancel` marks the entry dead and the
heap drops it when it reaches the top, which keeps cancel O(1) (a 2xx ACKed
before its first retransmission is the common case under load).
"""

import heapq
from typing import Callable

# RFC 3261 §17.1.1.1 / Table 4: T1 is the RTT estimate, T2 the cap for
# non-INVITE retransmission intervals, T4 the time a message stays in the net.
T1 = 0.5
T2 = 4.0
T4 = 5.0

TimerCallback = Callable[[object, float], None]


class TimerEntry:
    """A scheduled deadline; keep it to cancel it."""

    __slots__ = ("deadline", "seq", "callback", "kind", "active")

    def __init__(self, deadline: float, seq: int, callback: TimerCallback, kind: object) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.kind = kind
        self.active = True

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        return f"<TimerEntry {self.kind} at {self.deadline:.3f} {state}>"


class TimerHeap:
    """Absolute deadlines ordered by time; callbacks are ``callback(kind, now)``.

    ``kind`` is any object the callback wants back (a Trigger, a dialog ...).
    """

    __slots__ = ("_heap", "_seq", "_active")

    def __init__(self) -> None:
        # (deadline, seq, entry): tuples compare in C, and the unique seq breaks
        # ties FIFO so entries themselves are never compared.
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._seq = 0
        self._active = 0

    def __len__(self) -> int:
        """Number of active (not cancelled, not fired) timers."""
        return self._active

    def schedule(self, deadline: float, callback: TimerCallback, kind: object) -> TimerEntry:
        """Schedule ``callback(kind, now)`` at absolute time ``deadline``.

        Returns the entry, which :meth:`cancel` accepts.
        """
        self._seq += 1
        entry = TimerEntry(deadline, self._seq, callback, kind)
        heapq.heappush(self._heap, (deadline, self._seq, entry))
        self._active += 1
        return entry

    def cancel(self, entry: TimerEntry | None) -> None:
        """Cancel ``entry`` (no-op for None, fired or already cancelled entries)."""
        if entry is not None and entry.active:
            entry.active = False
            self._active -= 1

    def next_deadline(self) -> float | None:
        """Earliest active deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[TimerEntry]:
        """Remove and return every active entry whose deadline is ``<= now``.

        The caller runs ``entry.callback(entry.kind, now)`` for each; entries
        scheduled by those callbacks are not included even if already due,
        so one call always terminates.
        """
        heap = self._heap
        due: list[TimerEntry] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.active:
                entry.active = False
                self._active -= 1
                due.append(entry)
        return due

    def run_due(self, now: float) -> int:
        """Pop every due entry and run its callback; returns how many ran."""
        due = self.pop_due(now)
        for entry in due:
            entry.callback(entry.kind, now)
        return len(due)




# Compiled twin (sip/_timers.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.timers":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._timers")
