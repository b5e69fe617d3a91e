"""sipcore fixtures: two stacks on a fake link (see sipcore_pair.py)."""
from __future__ import annotations

import random

import pytest

from sip.stack import SipStack
from sipcore_pair import A_ADDR, B_ADDR, Link


@pytest.fixture
def pair():
    a = SipStack(A_ADDR, user="alice", rng=random.Random(1))
    b = SipStack(B_ADDR, user="bob", rng=random.Random(2))
    return a, b, Link(a, b)
