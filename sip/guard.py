"""Abuse defences of the SIP front door: a sans-IO policy consulted per datagram.

Theory of operation
-------------------
Every SIP server reachable from the internet is scanned within minutes
(SIPVicious ``svmap``/``svwar``/``svcrack`` and their clones): OPTIONS
sweeps over address ranges, REGISTER or INVITE sweeps over extensions, then
digest password guessing.  :class:`SourceGuard` decides, for each inbound
datagram (or framed stream message) *before* the stack parses it or
allocates any transaction state, one :class:`Verdict`:

``ACCEPT``
    hand it to the stack;
``DROP``
    discard silently (a banned source, a rate-limited source, an unknown
    source with ``unknown_sources = "drop"``, a scanner);
``REJECT``
    answer ``403 Forbidden`` built from the raw bytes
    (:func:`sip.message.error_response`: copied Via/From/To/Call-ID/CSeq, no
    transaction) and forget it.

The checks, cheapest first:

1. **Trusted sources** (``trusted_networks``, and the trunks' networks the
   engine adds) skip every check: a carrier's SBC must never be banned.
2. **Bans**: a banned source is dropped until its ban expires.
3. **Rate limit**: one token bucket per source IP (``rate_per_s`` tokens per
   second, ``burst`` deep).  A datagram without a token is dropped; after
   ``rate_violations_before_ban`` such drops the source is banned.
4. Responses (``SIP/2.0 ...``) are accepted from here on: they only match
   existing client transactions, which the stack checks cheaply.
5. **Scanner signatures**: a ``User-Agent`` containing one of
   ``scanner_user_agents`` (case-insensitive) bans the source at once.
6. **Network limits**: a REGISTER from outside ``registration_networks``
   (when set) is rejected with 403; any other request from a source that is
   neither in a known network nor authenticated lately is dropped or rejected
   per ``unknown_sources`` (``"allow"`` turns this off).  REGISTER is how a
   phone becomes known, so it is never refused as "unknown".
7. **Sweeps**: more than ``sweep_max_users`` distinct user parts
   (Request-URI for OPTIONS/INVITE, To for REGISTER) from one source within
   ``sweep_window_s`` bans the source.  Sources in ``known_networks`` or
   ``registration_networks``, and sources that authenticated lately, are
   exempt: an office of phones behind one NAT address registers many users.

The application reports digest outcomes with :meth:`SourceGuard.auth_failed`
(``auth_failures_before_ban`` failures within ``auth_failure_window_s`` ban
the source) and :meth:`SourceGuard.auth_succeeded` (the source becomes
*known* for ``known_source_ttl_s``, and its failure count is cleared).

State is bounded: at most ``max_sources`` per-source entries (least recently
seen evicted first) and as many bans (the soonest-expiring evicted first), so
a flood of spoofed addresses costs memory proportional to the limit only.
Every ban is logged at WARNING with the source and the reason (at most 30
guard warnings a minute: spoofed floods must not flood the log; the rest are
counted in one summary line), and queued as a :class:`sip.events.SourceBanned`
for :meth:`next_event`.

The module reads no clock and touches no socket: ``now`` is passed in.
"""
from __future__ import annotations

import enum
import ipaddress
import logging
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable

from .events import SourceBanned

logger = logging.getLogger(__name__)

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# User-Agent values of well-known SIP scanners and brute-forcers (substrings,
# lower case): SIPVicious and its forks, sipcli, sundayddr, iWar, VaxSIP,
# "pplsip", "SIP-Scan", "Cisco-SIPGateway" fakes are not listed (real gear).
DEFAULT_SCANNER_USER_AGENTS = (
    "friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipscan", "sundayddr", "iwar",
    "vaxsipuseragent", "pplsip", "smap", "sipsak-scan", "voip-scan", "gulp",
)

_USER_RE = re.compile(rb"^sips?:([^@;>?\s]+)@", re.IGNORECASE)
_ANGLE_RE = re.compile(rb"<\s*(sips?:[^>]*)>", re.IGNORECASE)


class Verdict(enum.Enum):
    """What to do with one inbound message."""

    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Thresholds of :class:`SourceGuard` (documented in docs/security.md)."""

    rate_per_s: float = 50.0
    """Sustained messages per second allowed per source IP."""
    burst: int = 100
    """Token bucket depth: messages a quiet source may send at once."""
    rate_violations_before_ban: int = 200
    """Rate-limited drops after which the source is banned (0: never)."""
    auth_failures_before_ban: int = 5
    """Failed digest authentications within the window that ban (0: never)."""
    auth_failure_window_s: float = 60.0
    ban_s: float = 600.0
    """How long a ban lasts."""
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNER_USER_AGENTS
    """User-Agent substrings (case-insensitive) that ban at once."""
    sweep_max_users: int = 30
    """Distinct users probed by one source within the window that ban (0: off)."""
    sweep_window_s: float = 60.0
    unknown_sources: str = "allow"
    """``"allow"``, ``"drop"`` or ``"reject"`` (403) requests from unknown sources."""
    known_networks: tuple[str, ...] = ()
    """Networks whose requests are not "unknown" (still rate-limited)."""
    registration_networks: tuple[str, ...] = ()
    """If not empty: REGISTER only from these networks (else 403)."""
    trusted_networks: tuple[str, ...] = ()
    """Networks exempt from every check (trunks, SBCs, monitoring)."""
    known_source_ttl_s: float = 3600.0
    """How long a source stays known after a successful authentication."""
    max_sources: int = 10000
    """Bound of the per-source table and of the ban table."""

    def __post_init__(self) -> None:
        if self.unknown_sources not in ("allow", "drop", "reject"):
            raise ValueError(f"unknown_sources must be allow, drop or reject, not {self.unknown_sources!r}")
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        if self.max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        for nets in (self.known_networks, self.registration_networks, self.trusted_networks):
            for net in nets:
                ipaddress.ip_network(net, strict=False)  # raises ValueError naming the text


class LogBudget:
    """At most ``per_minute`` lines a minute; the rest are counted and summarised.

    A flood from spoofed addresses must not turn into a flood of log lines
    (or audit rows): :meth:`allow` says whether to write one now, and
    :meth:`summary` returns how many were held back once the minute is over.
    """

    __slots__ = ("per_minute", "window_start", "used", "held")

    def __init__(self, per_minute: int = 30) -> None:
        self.per_minute = per_minute
        self.window_start = float("-inf")
        self.used = 0
        self.held = 0

    def allow(self, now: float) -> bool:
        if now - self.window_start >= 60.0:
            self.window_start = now
            self.used = 0
        if self.used < self.per_minute:
            self.used += 1
            return True
        self.held += 1
        return False

    def summary(self, now: float) -> int:
        """Lines held back so far, reported once per minute (0 otherwise)."""
        if self.held and now - self.window_start >= 60.0:
            held, self.held = self.held, 0
            return held
        return 0


class _Source:
    __slots__ = ("tokens", "stamp", "violations", "failures", "users", "sweep_start", "known_until")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now
        self.violations = 0
        self.failures: deque[float] = deque()
        self.users: set[bytes] = set()
        self.sweep_start = now
        self.known_until = 0.0


@dataclass(slots=True)
class GuardCounters:
    """Totals since start, for status displays and tests."""

    accepted: int = 0
    dropped_banned: int = 0
    dropped_rate: int = 0
    dropped_unknown: int = 0
    rejected_unknown: int = 0
    rejected_registration: int = 0
    scanners: int = 0
    sweeps: int = 0
    auth_failures: int = 0
    bans: int = 0
    evicted_sources: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class _NetSet:
    networks: tuple[Network, ...] = ()
    cache: dict[str, bool] = field(default_factory=dict)

    def __contains__(self, ip: str) -> bool:
        hit = self.cache.get(ip)
        if hit is None:
            if not self.networks:
                return False
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in net for net in self.networks)
            except ValueError:
                hit = False
            if len(self.cache) >= 4096:  # bounded memo of per-IP answers
                self.cache.clear()
            self.cache[ip] = hit
        return hit


def _nets(texts: Iterable[str]) -> _NetSet:
    return _NetSet(tuple(ipaddress.ip_network(t, strict=False) for t in texts))


class SourceGuard:
    """Per-source rate limits, bans and network limits (see the module docstring).

    Args:
        config: thresholds; :class:`GuardConfig` defaults when None.
    """

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = cfg = config or GuardConfig()
        self.counters = GuardCounters()
        self._trusted = _nets(cfg.trusted_networks)
        self._known = _nets(cfg.known_networks)
        self._registration = _nets(cfg.registration_networks)
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._bans: dict[str, tuple[float, str]] = {}
        self._events: deque[SourceBanned] = deque()
        self._scanners = tuple(s.lower().encode() for s in cfg.scanner_user_agents)
        self._log = LogBudget()

    # ------------------------------------------------------------ per message
    def inspect(self, data: bytes, addr: Address, now: float) -> Verdict:
        """The verdict for one inbound message from ``addr`` (see module docstring).

        Never raises for any input bytes.
        """
        ip = addr[0]
        if ip in self._trusted:
            self.counters.accepted += 1
            return Verdict.ACCEPT
        ban = self._bans.get(ip)
        if ban is not None:
            if now < ban[0]:
                self.counters.dropped_banned += 1
                return Verdict.DROP
            del self._bans[ip]
            logger.info("ban of %s expired", ip)
        src = self._source(ip, now)
        cfg = self.config
        # Token bucket (refill proportional to elapsed time, capped at burst).
        tokens = src.tokens + (now - src.stamp) * cfg.rate_per_s
        src.stamp = now
        if tokens > cfg.burst:
            tokens = cfg.burst
        if tokens < 1.0:
            src.tokens = tokens
            src.violations += 1
            self.counters.dropped_rate += 1
            if src.violations == 1 and self._log.allow(now):
                logger.warning("rate limit: dropping messages from %s (over %.0f/s)", ip, cfg.rate_per_s)
            if cfg.rate_violations_before_ban and src.violations >= cfg.rate_violations_before_ban:
                self.ban(ip, now, f"rate limit exceeded {src.violations} times")
            return Verdict.DROP
        src.tokens = tokens - 1.0
        if data[:8] == b"SIP/2.0 ":
            self.counters.accepted += 1
            return Verdict.ACCEPT
        space = data.find(b" ", 0, 32)
        method = data[:space].lstrip(b"\r\n").upper() if space > 0 else b""
        head_end = data.find(b"\r\n\r\n")
        head = (data if head_end < 0 else data[:head_end]).lower()
        if self._scanners:
            agent = _header(head, b"user-agent")
            if agent and any(sig in agent for sig in self._scanners):
                self.counters.scanners += 1
                self.ban(ip, now, f"scanner User-Agent {agent[:60].decode('latin-1')!r}")
                return Verdict.DROP
        if method == b"REGISTER":
            if self._registration.networks and ip not in self._registration:
                self.counters.rejected_registration += 1
                logger.warning("REGISTER from %s refused: outside registration_networks", ip)
                return Verdict.REJECT
        elif cfg.unknown_sources != "allow" and ip not in self._known and src.known_until <= now:
            if cfg.unknown_sources == "reject" and method != b"ACK":
                self.counters.rejected_unknown += 1
                return Verdict.REJECT
            self.counters.dropped_unknown += 1
            return Verdict.DROP
        if (cfg.sweep_max_users and method in (b"REGISTER", b"OPTIONS", b"INVITE") and src.known_until <= now
                and ip not in self._known and ip not in self._registration):
            user = _probed_user(data, space, head, method)
            if user is not None:
                if now - src.sweep_start > cfg.sweep_window_s:
                    src.users.clear()
                    src.sweep_start = now
                src.users.add(user)
                if len(src.users) > cfg.sweep_max_users:
                    self.counters.sweeps += 1
                    n = len(src.users)
                    src.users.clear()
                    self.ban(ip, now, f"{method.decode()} sweep over {n} users in {cfg.sweep_window_s:.0f} s")
                    return Verdict.DROP
        self.counters.accepted += 1
        return Verdict.ACCEPT

    # ------------------------------------------------------------ feedback
    def auth_failed(self, ip: str, now: float, what: str = "digest authentication") -> bool:
        """Record a failed authentication from ``ip``; True if it got banned."""
        if ip in self._trusted:
            return False
        self.counters.auth_failures += 1
        cfg = self.config
        src = self._source(ip, now)
        src.failures.append(now)
        while src.failures and now - src.failures[0] > cfg.auth_failure_window_s:
            src.failures.popleft()
        if self._log.allow(now):
            logger.warning("%s failed from %s (%d in %.0f s)", what, ip, len(src.failures),
                           cfg.auth_failure_window_s)
        if cfg.auth_failures_before_ban and len(src.failures) >= cfg.auth_failures_before_ban:
            src.failures.clear()
            self.ban(ip, now, f"{cfg.auth_failures_before_ban} failed authentications")
            return True
        return False

    def auth_succeeded(self, ip: str, now: float) -> None:
        """``ip`` authenticated: it becomes known and its failures are forgiven."""
        src = self._source(ip, now)
        src.failures.clear()
        src.known_until = now + self.config.known_source_ttl_s

    # ------------------------------------------------------------ bans
    def ban(self, ip: str, now: float, reason: str, duration_s: float | None = None) -> None:
        """Ban ``ip`` for ``duration_s`` (default ``ban_s``) and queue a SourceBanned."""
        until = now + (self.config.ban_s if duration_s is None else duration_s)
        if ip not in self._bans and len(self._bans) >= self.config.max_sources:
            victim = min(self._bans, key=lambda k: self._bans[k][0])
            del self._bans[victim]
        self._bans[ip] = (until, reason)
        self.counters.bans += 1
        held = self._log.summary(now)
        if held:
            logger.warning("%d more guard warnings in the last minute were not logged", held)
        if self._log.allow(now):
            logger.warning("banning SIP source %s for %.0f s: %s", ip, until - now, reason)
        self._events.append(SourceBanned(ip, reason, until))

    def unban(self, ip: str) -> bool:
        """Lift a ban; True if there was one."""
        src = self._sources.get(ip)
        if src is not None:
            src.violations = 0
            src.failures.clear()
        return self._bans.pop(ip, None) is not None

    def bans(self, now: float) -> list[tuple[str, float, str]]:
        """Active bans as ``(ip, seconds left, reason)``, longest first."""
        out = [(ip, until - now, why) for ip, (until, why) in self._bans.items() if until > now]
        return sorted(out, key=lambda b: -b[1])

    def is_banned(self, ip: str, now: float) -> bool:
        ban = self._bans.get(ip)
        return ban is not None and now < ban[0]

    def next_event(self) -> SourceBanned | None:
        """The next queued :class:`SourceBanned`, or None."""
        return self._events.popleft() if self._events else None

    @property
    def source_count(self) -> int:
        """Entries in the bounded per-source table."""
        return len(self._sources)

    # ------------------------------------------------------------ internals
    def _source(self, ip: str, now: float) -> _Source:
        sources = self._sources
        src = sources.get(ip)
        if src is None:
            if len(sources) >= self.config.max_sources:
                sources.popitem(last=False)  # least recently seen
                self.counters.evicted_sources += 1
            src = sources[ip] = _Source(float(self.config.burst), now)
        else:
            sources.move_to_end(ip)
        return src


def _header(head: bytes, name: bytes) -> bytes | None:
    """Value of header ``name`` in a lower-cased head (first occurrence)."""
    i = head.find(b"\n" + name)
    while i >= 0:
        j = i + 1 + len(name)
        k = j
        while k < len(head) and head[k] in b" \t":
            k += 1
        if k < len(head) and head[k] == 58:  # ":"
            end = head.find(b"\n", k)
            return head[k + 1:end if end >= 0 else len(head)].strip()
        i = head.find(b"\n" + name, j)
    return None


def _probed_user(data: bytes, space: int, head: bytes, method: bytes) -> bytes | None:
    """The user part a sweep probes: To for REGISTER, the Request-URI otherwise."""
    if method == b"REGISTER":
        to = _header(head, b"to") or _header(head, b"t")
        if to is None:
            return None
        m = _ANGLE_RE.search(to)
        uri = m.group(1) if m else to
    else:
        end = data.find(b" ", space + 1)
        uri = data[space + 1:end].lower() if end > space else b""
    m = _USER_RE.match(uri.strip())
    return m.group(1) if m else None
