"""Two SIP cores on a fake link with a fake clock (h11 ConnectionPair style).

Import the ``pair`` fixture into a test module: ``from sipcore_pair import pair``.
"""
from __future__ import annotations

import random
from typing import Callable

import pytest

from sip.stack import SipStack

A_ADDR = ("127.0.0.1", 5001)
B_ADDR = ("127.0.0.2", 5002)


class Link:
    """Carries datagrams between stacks by address; ``drop(data, src, dst)`` loses some."""

    def __init__(self, *stacks: SipStack) -> None:
        self.stacks = {s.local_addr: s for s in stacks}
        self.now = 0.0
        self.drop: Callable[[bytes, tuple, tuple], bool] = lambda data, src, dst: False
        self.log: list[tuple[tuple, tuple, bytes]] = []
        self.foreign: list[tuple[bytes, tuple, str]] = []  # sent to addresses not on the link

    def pump(self) -> None:
        """Deliver until quiet (no timers run)."""
        for _ in range(1000):
            moved = False
            for src, stack in self.stacks.items():
                for data, dst, transport in stack.datagrams_to_send(self.now):
                    moved = True
                    self.log.append((src, dst, data))
                    peer = self.stacks.get(dst)
                    if peer is None:
                        self.foreign.append((data, dst, transport))
                    elif not self.drop(data, src, dst):
                        peer.receive_datagram(data, src, self.now, transport)
            if not moved:
                return
        raise AssertionError("link never went quiet")

    def advance(self, until: float) -> None:
        """Run every timer of every stack up to ``until``, pumping in between."""
        while True:
            deadlines = [d for d in (s.get_timer() for s in self.stacks.values()) if d is not None]
            nxt = min(deadlines) if deadlines else None
            if nxt is None or nxt > until:
                break
            self.now = max(self.now, nxt)
            for s in self.stacks.values():
                s.handle_timer(self.now)
            self.pump()
        self.now = until
        self.pump()

    def sent(self, src: tuple, first_line: bytes) -> list[bytes]:
        return [d for s, _, d in self.log if s == src and d.startswith(first_line)]


def events(stack: SipStack) -> list:
    out = []
    while (ev := stack.next_event()) is not None:
        out.append(ev)
    return out




@pytest.fixture
def pair():
    """Two stacks (alice at A_ADDR, bob at B_ADDR) and the link between them."""
    a = SipStack(A_ADDR, user="alice", rng=random.Random(1))
    b = SipStack(B_ADDR, user="bob", rng=random.Random(2))
    return a, b, Link(a, b)
