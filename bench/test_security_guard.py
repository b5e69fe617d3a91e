"""What the SIP abuse guard costs per datagram, beside the stack's own parse.

``guard_inspect``: :meth:`sip.guard.SourceGuard.inspect` of a typical INVITE
from a known source (token bucket, User-Agent scan, sweep tracking: the full
path an accepted request takes).  ``guard_banned``: a datagram from a banned
source (the flood case: one dict lookup).  Baseline in the same run:
``parse_message`` of the same INVITE (what every accepted datagram costs
anyway), so results read as a ratio.

Run: ``.venv/bin/python -m pytest -q bench/test_security_guard.py --benchmark-json=bench/results/security_guard.json``
"""
from __future__ import annotations

from bench.sip_samples import INVITE
from sip.guard import GuardConfig, SourceGuard
from sip.message import clear_parse_caches, parse_message

SRC = ("198.51.100.7", 5060)


def test_baseline_parse_message(benchmark):
    def run():
        clear_parse_caches()
        return parse_message(INVITE)
    benchmark(run)


def test_guard_inspect(benchmark):
    guard = SourceGuard(GuardConfig(rate_per_s=1e9, burst=10**9, sweep_max_users=10**6))
    t = [0.0]

    def run():
        t[0] += 1e-6
        return guard.inspect(INVITE, SRC, t[0])
    benchmark(run)


def test_guard_banned(benchmark):
    guard = SourceGuard()
    guard.ban(SRC[0], 0.0, "bench")
    benchmark(guard.inspect, INVITE, SRC, 1.0)
