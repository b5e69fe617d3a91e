"""The engine configuration: a TOML file loaded into frozen dataclasses.

Theory of operation
-------------------
The schema *is* the dataclasses below.  :func:`load_config` parses the file
with :mod:`tomllib`, then walks the parsed tree against the dataclass types
(:func:`_convert`): every key must be a field (``unknown key``), every value
must have the field's type (``expected integer, got string``), fields without
a default are required (``missing required key``), and field metadata adds
ranges and choices.  A second pass (:func:`_check_references`) checks what
one value cannot: references between entities (a queue naming an unknown
group, a route naming an unknown queue), tenants matching across references,
duplicate dialed numbers.  Every problem becomes one line::

    FILE:LINE: key.path: reason

found with :class:`engine.tomllines.LineIndex`, and *all* problems are
reported together by raising :class:`engine.errors.ConfigError`.  Adding a
key for a later feature is one field with a default, nothing else.

Named entities are TOML tables keyed by their name (``[queues.sales]``,
``[agents.1001]``); the key is copied into the entity's ``name`` (``number``
for agents).  Every entity carries ``tenant`` (default ``"default"``).
Destinations (route targets, queue timeouts, after-hours lists) are strings
``KIND:TARGET`` parsed by :func:`parse_destination`.

The module reads files and nothing else: no sockets, no clock.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import types
import typing
import zoneinfo
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable

from engine.errors import ConfigError
from engine.passwords import check_hash_format
from engine.tomllines import LineIndex, Path, format_path

DEFAULT_TENANT = "default"
GLOBAL_TENANT = "*"  # a control user of this tenant sees every tenant (admins only)

ROLES = ("admin", "supervisor", "agent", "reporting")
STRATEGIES = ("longest_idle", "fewest_calls", "least_talk_time", "round_robin", "top_down",
              "random", "ring_all", "best_skill", "weighted")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DESTINATION_KINDS = ("queue", "flow", "agent", "voicemail", "number", "hangup")


def opt(default: Any = MISSING, *, min: float | None = None, max: float | None = None,
        choices: tuple[Any, ...] | None = None, check: Callable[[Any], str | None] | None = None,
        key: bool = False, doc: str = "") -> Any:
    """A dataclass field with validation metadata.

    ``min``/``max`` bound numbers (and lengths of nothing else); ``choices``
    restricts to listed values; ``check(value)`` returns an error reason or
    ``None``; ``key=True`` marks the field filled from the table key.
    """
    meta = {"min": min, "max": max, "choices": choices, "check": check, "key": key, "doc": doc}
    if key:
        return field(default="", metadata=meta)
    if isinstance(default, dict):
        if default:
            raise TypeError("only an empty dict may be a default")
        return field(default_factory=dict, metadata=meta)
    if isinstance(default, (list, set)):
        raise TypeError("use a tuple for sequence defaults")
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _factory(cls: type) -> Any:
    return field(default_factory=cls, metadata={"min": None, "max": None, "choices": None,
                                                 "check": None, "key": False, "doc": ""})


# ---------------------------------------------------------------- checks


def _check_network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"not an IP network: {value!r} (expected e.g. '192.0.2.0/24')"
    return None


def _check_zone(value: str) -> str | None:
    if value == "":
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (expected an IANA name such as 'Europe/Berlin')"
    return None


def _check_hhmm(value: str) -> str | None:
    m = re.fullmatch(r"(\d\d):(\d\d)", value)
    if not m or int(m[1]) > 24 or int(m[2]) > 59 or (int(m[1]) == 24 and int(m[2]) != 0):
        return f"not a time of day {value!r} (expected HH:MM, 00:00 to 24:00)"
    return None


def _check_date(value: str) -> str | None:
    import datetime

    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return f"not a date {value!r} (expected YYYY-MM-DD)"
    return None


def _check_number(value: str) -> str | None:
    if value and not re.fullmatch(r"\+?[0-9*#]+", value):
        return f"not a phone number {value!r} (digits, optional leading '+')"
    return None


def _check_number_pattern(value: str) -> str | None:
    if not re.fullmatch(r"\+?[0-9*#]+\*?|\*", value):
        return (f"not a dialed-number pattern {value!r} "
                "(digits with optional leading '+', a trailing '*' matches a prefix)")
    return None


def _check_destination(value: str) -> str | None:
    try:
        parse_destination(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_password_hash(value: str) -> str | None:
    return check_hash_format(value)


def _each(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def run(values: Any) -> str | None:
        for v in values:
            reason = check(v)
            if reason:
                return reason
        return None
    return run


def _check_supervisor_extension(cfg: Any, errors: Any, p: Path, u: Any) -> None:
    """``[users.NAME] extension``: supervisors' and admins' phones only, never shared."""
    if u.role not in ("supervisor", "admin"):
        errors.add(p + ("extension",), "only users of role 'supervisor' or 'admin' have a phone extension")
    for number, a in cfg.agents.items():
        if a.extension == u.extension:
            errors.add(p + ("extension",), f"extension {u.extension} is agent {number}'s extension")
    for other, o in cfg.users.items():
        if other < u.name and o.extension == u.extension:
            errors.add(p + ("extension",), f"extension {u.extension} is also user {other}'s extension")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a call goes: ``queue:sales``, ``flow:main``, ``agent:1001``,
    ``voicemail:sales``, ``number:+4930123456`` or ``hangup``."""

    kind: str
    target: str

    def __str__(self) -> str:
        return self.kind if self.kind == "hangup" else f"{self.kind}:{self.target}"


def parse_destination(text: str) -> Destination:
    """Parse ``KIND:TARGET``; raises ``ValueError`` with the reason."""
    kind, sep, target = text.partition(":")
    if kind not in DESTINATION_KINDS:
        raise ValueError(f"unknown destination {text!r} (expected one of "
                         + ", ".join(k + (":NAME" if k != "hangup" else "") for k in DESTINATION_KINDS) + ")")
    if kind == "hangup":
        if target:
            raise ValueError(f"destination 'hangup' takes no target, got {text!r}")
        return Destination("hangup", "")
    if not sep or not target:
        raise ValueError(f"destination {text!r} has no target after '{kind}:'")
    if kind == "number":  # "n1$n2": tried in order
        for number in target.split("$"):
            reason = _check_number(number) or (None if number else f"empty number in {text!r}")
            if reason:
                raise ValueError(reason)
    return Destination(kind, target)


# ---------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSection:
    name: str = opt("ctiengine", doc="name shown in engine.status and logs")
    log_level: str = opt("INFO", choices=LOG_LEVELS)
    time_zone: str = opt("UTC", check=_check_zone, doc="IANA zone for business hours and reports")


SRTP_MODES = ("required", "optional", "off")
"""SDES-SRTP modes of trunks and TLS phones (engine/mediasec.py, docs/security.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SipListener:
    transport: str = opt(choices=("udp", "tcp", "tls"))
    host: str = opt("127.0.0.1")
    port: int = opt(5060, min=0, max=65535)
    tls_cert: str = opt("", doc="transport = 'tls': PEM certificate (chain) of this listener")
    tls_key: str = opt("", doc="transport = 'tls': PEM private key of tls_cert")
    tls_client_ca: str = opt("", doc="transport = 'tls': require client certificates signed by these CAs")
    tls_ca: str = opt("", doc="CAs trusted for outgoing TLS (empty: the system's)")


@dataclass(frozen=True, slots=True, kw_only=True)
class SipAbuse:
    rate_per_s: float = opt(50.0, min=0.1, max=1e6, doc="messages per second allowed per source IP")
    burst: int = opt(100, min=1, max=1_000_000, doc="token bucket depth per source IP")
    rate_violations_before_ban: int = opt(200, min=0, max=1_000_000,
                                          doc="rate-limited drops that ban the source (0: never)")
    auth_failures_before_ban: int = opt(5, min=0, max=1000, doc="failed digest logins that ban (0: never)")
    auth_failure_window_s: int = opt(60, min=1, max=86400)
    ban_s: int = opt(600, min=1, max=30 * 86400, doc="how long a ban lasts")
    scanner_user_agents: tuple[str, ...] = opt(
        ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipscan", "sundayddr", "iwar",
         "vaxsipuseragent", "pplsip", "smap", "sipsak-scan", "voip-scan", "gulp"),
        doc="User-Agent substrings that ban at once (case-insensitive)")
    sweep_max_users: int = opt(30, min=0, max=100000,
                               doc="distinct users probed per source and window that ban (0: off)")
    sweep_window_s: int = opt(60, min=1, max=86400)
    unknown_sources: str = opt("allow", choices=("allow", "drop", "reject"),
                               doc="requests from sources neither known nor authenticated")
    known_networks: tuple[str, ...] = opt((), check=_each(_check_network),
                                          doc="sources that are not unknown (trunks are added)")
    registration_networks: tuple[str, ...] = opt((), check=_each(_check_network),
                                                 doc="REGISTER only from these (empty: any)")
    trusted_networks: tuple[str, ...] = opt((), check=_each(_check_network),
                                            doc="exempt from every check (trunks are added)")
    max_sources: int = opt(10000, min=16, max=10_000_000, doc="bound of the per-source and ban tables")


@dataclass(frozen=True, slots=True, kw_only=True)
class SipSection:
    domain: str = opt("localhost", doc="SIP domain of agents' phones (registrar realm)")
    user_agent: str = opt("ctiengine")
    listen: tuple[SipListener, ...] = opt((SipListener(transport="udp"), SipListener(transport="tcp")))
    registration_min_expires_s: int = opt(60, min=1, max=86400)
    registration_max_expires_s: int = opt(3600, min=1, max=86400)
    abuse: SipAbuse = _factory(SipAbuse)
    phone_srtp: str = opt("optional", choices=SRTP_MODES,
                          doc="SRTP (SDES) towards phones registered over TLS: 'required' offers RTP/SAVP only, "
                              "'optional' offers RTP/AVP with a=crypto (RFC 8643), 'off' plain RTP; "
                              "phones on UDP/TCP always get plain RTP (docs/security.md)")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSection:
    host: str = opt("127.0.0.1", doc="address RTP binds to and announces in SDP")
    rtp_port_min: int = opt(20000, min=1024, max=65534)
    rtp_port_max: int = opt(30000, min=1025, max=65535)
    rtp_timeout_s: int = opt(30, min=0, max=3600,
                             doc="hang up a call when a leg sends no RTP for this long (0: off)")
    rtp_latch_window_s: int = opt(10, min=0, max=3600,
                                  doc="symmetric RTP (RFC 4961, phones behind NAT): for this long after a "
                                      "leg's SDP address is set, it may latch to where its packets come "
                                      "from (0: never latch; rule in docs/media.md)")
    rtp_latch_packets: int = opt(3, min=1, max=50,
                                 doc="valid packets in a row (the stream's SSRC, a negotiated payload "
                                     "type) from one new source before a leg latches to it")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSection:
    backend: str = opt("sqlite", choices=("sqlite",))
    path: str = opt("var/ctiengine.db", doc="relative to the config file's directory")
    batch_max_rows: int = opt(500, min=1, max=100000)
    batch_interval_ms: int = opt(200, min=1, max=60000)
    queue_max_rows: int = opt(20000, min=10, max=10_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlListener:
    transport: str = opt(choices=("tcp", "unix"))
    host: str = opt("127.0.0.1")
    port: int = opt(7070, min=0, max=65535)
    path: str = opt("", doc="Unix socket path (transport = 'unix'), relative to the config directory")
    allow_networks: tuple[str, ...] = opt((), check=_each(_check_network),
                                          doc="TCP peers allowed (empty: any)")
    tls_cert: str = opt("", doc="PEM certificate (chain): serve TLS on this tcp listener")
    tls_key: str = opt("", doc="PEM private key of tls_cert")
    tls_client_ca: str = opt("", doc="PEM CA bundle: require client certificates signed by it")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSection:
    listen: tuple[ControlListener, ...] = opt(())
    max_frame_bytes: int = opt(1 << 20, min=1024, max=64 << 20)
    write_buffer_bytes: int = opt(1 << 20, min=4096, max=256 << 20,
                                  doc="transport write buffer above which events queue")
    event_queue_max: int = opt(2000, min=1, max=1_000_000,
                               doc="events queued for a stalled client before it is disconnected")
    max_pending_requests: int = opt(64, min=1, max=10000)
    auth_max_failures: int = opt(5, min=1, max=100)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeRule:
    days: tuple[str, ...] = opt(DAYS[:5], check=_each(lambda d: None if d in DAYS else
                                                      f"unknown day {d!r} (expected {', '.join(DAYS)})"))
    start: str = opt("00:00", check=_check_hhmm)
    end: str = opt("24:00", check=_check_hhmm)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingSection:
    mode: str = opt("none", choices=("none", "all", "policy"))
    path: str = opt("var/recordings")
    format: str = opt("wav", choices=("wav", "flac"))
    stereo: bool = opt(True, doc="caller left, agent right")
    min_length_s: int = opt(0, min=0, max=86400)
    max_length_s: int = opt(0, min=0, max=86400, doc="0: unlimited")
    include_agents: tuple[str, ...] = opt(())
    include_groups: tuple[str, ...] = opt(())
    include_queues: tuple[str, ...] = opt(())
    include_trunks: tuple[str, ...] = opt(())
    include_numbers: tuple[str, ...] = opt((), check=_each(_check_number_pattern))
    exclude_agents: tuple[str, ...] = opt(())
    exclude_numbers: tuple[str, ...] = opt((), check=_each(_check_number_pattern))
    windows: tuple[TimeRule, ...] = opt((), doc="record only inside these windows (empty: always)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportingSection:
    service_level_s: float = opt(20.0, min=1, max=3600, doc="T: answered within T s counts in service level")
    service_level_target: float = opt(0.8, min=0, max=1, doc="service-level goal (80/20)")
    short_abandon_s: float = opt(20.0, min=0, max=3600, doc="abandons within this wait are short abandons")
    short_abandons_in_service_level: bool = opt(False, doc="false: short abandons leave the service-level "
                                                "and abandon-rate bases (docs/kpis.md)")
    repeat_window_days: float = opt(7.0, min=0, max=365, doc="repeat caller: called again within N days")
    abandoned_to_callback: bool = opt(False, doc="every call abandoned in a queue becomes an open callback")
    stats_interval_s: float = opt(1.0, min=0.2, max=60, doc="period of the `stats` event")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tenant:
    name: str = opt(key=True)
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    name: str = opt(key=True)
    password: str = opt(check=_check_password_hash)
    role: str = opt(choices=ROLES)
    tenant: str = opt(DEFAULT_TENANT)
    groups: tuple[str, ...] = opt((), doc="groups a supervisor supervises (scope 'groups')")
    agent: str = opt("", doc="the agent number a user of role 'agent' acts as")
    scope: str = opt("", choices=("", "organisation", "department", "team", "groups", "self"),
                     doc="data scope (docs/tenants.md); empty: the role's default (admin, reporting: "
                         "organisation; supervisor: groups; agent: self)")
    department: str = opt("", doc="scope = 'department': the [departments] entry the user sees")
    team: str = opt("", doc="scope = 'team': the [teams] entry the user sees")
    allow_networks: tuple[str, ...] = opt((), check=_each(_check_network))
    extension: str = opt("", check=_check_number,
                         doc="supervisor/admin: own phone extension, rung by supervisor.listen/whisper/barge/intercept")


@dataclass(frozen=True, slots=True, kw_only=True)
class Skill:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    description: str = opt("")
    department: str = opt("", doc="the department owning this group (and the queues it serves)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Department:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    department: str = opt("", doc="the department the team belongs to")
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    number: str = opt(key=True)
    name: str = opt()
    password: str = opt(check=_check_password_hash)
    extension: str = opt("", check=_check_number, doc="default phone extension (hot-desking overrides)")
    skills: dict[str, int] = opt({}, min=1, max=10)
    groups: tuple[str, ...] = opt(())
    tenant: str = opt(DEFAULT_TENANT)
    forward_number: str = opt("", check=_check_number,
                              doc="on ring_no_answer the call is forwarded to this external number "
                                  "(the call's trunk); empty: next agent")
    auto_answer: bool = opt(False, doc="offers ask the phone to answer at once (Call-Info answer-after=0)")
    wrapup_s: int | None = opt(None, min=0, max=3600, doc="overrides the queue's wrapup_s")
    team: str = opt("", doc="the [teams] entry the agent belongs to (gives its department)")
    department: str = opt("", doc="the agent's department (when in no team; must match its team's)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Trunk:
    name: str = opt(key=True)
    host: str = opt()
    port: int = opt(0, min=0, max=65535, doc="0: 5061 for transport 'tls', else 5060")
    transport: str = opt("udp", choices=("udp", "tcp", "tls"),
                         doc="'tls': SIP over TLS both ways (RFC 3261 §26), sips: URIs, SDES-SRTP per `srtp`")
    tls_ca: str = opt("", doc="transport 'tls': CA bundle the carrier's server certificate must chain to "
                              "(empty: the system's)")
    tls_verify_name: str = opt("", doc="transport 'tls': name the carrier's certificate must carry (empty: "
                                       "host); also required of its client certificate when a TLS listener "
                                       "has tls_client_ca")
    tls_cert: str = opt("", doc="transport 'tls': our client certificate (chain) for carriers that ask for one")
    tls_key: str = opt("", doc="transport 'tls': private key of tls_cert")
    srtp: str = opt("optional", choices=SRTP_MODES,
                    doc="SDES-SRTP on this trunk's calls (RFC 4568): 'required' (plain offers get 488), "
                        "'optional', 'off'; only with transport 'tls' (keys never travel in clear)")
    username: str = opt("", doc="digest user for outbound calls and registration")
    password: str = opt("", doc="digest password (plain: needed to answer challenges)")
    accept_networks: tuple[str, ...] = opt((), check=_each(_check_network),
                                           doc="source networks accepted as this trunk")
    caller_number: str = opt("", check=_check_number, doc="caller id for outbound calls")
    dialed_numbers: tuple[str, ...] = opt((), check=_each(_check_number_pattern))
    max_channels: int = opt(0, min=0, max=100000, doc="0: unlimited")
    tenant: str = opt(DEFAULT_TENANT)

    @property
    def sip_port(self) -> int:
        """``port``, or the transport's default (5061 for TLS, RFC 3261 §26.2.2; else 5060)."""
        return self.port or (5061 if self.transport == "tls" else 5060)

    @property
    def srtp_mode(self) -> str:
        """``srtp`` in effect: always ``"off"`` unless the trunk runs over TLS (RFC 4568 §8.3)."""
        return self.srtp if self.transport == "tls" else "off"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    after_s: int = opt(min=0, max=86400)
    groups: tuple[str, ...] = opt(())
    skills: dict[str, int] = opt({}, min=1, max=10, doc="minimum skill levels from this tier on")


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcements:
    position: bool = opt(False)
    expected_wait: bool = opt(False)
    interval_s: int = opt(60, min=5, max=3600)
    periodic_prompt: str = opt("")
    periodic_interval_s: int = opt(0, min=0, max=3600)


@dataclass(frozen=True, slots=True, kw_only=True)
class Queue:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    groups: tuple[str, ...] = opt(())
    skills: dict[str, int] = opt({}, min=1, max=10, doc="minimum skill levels")
    strategy: str = opt("longest_idle", choices=STRATEGIES)
    priority: int = opt(0, min=0, max=100)
    max_length: int = opt(0, min=0, max=100000, doc="0: unlimited")
    ring_timeout_s: int = opt(20, min=1, max=600)
    wrapup_s: int = opt(10, min=0, max=3600)
    timeout_s: int = opt(0, min=0, max=86400, doc="0: wait forever")
    timeout_destination: str = opt("", check=lambda v: v and _check_destination(v) or None)
    full_destination: str = opt("", check=lambda v: v and _check_destination(v) or None,
                                doc="destination when max_length callers wait (default: timeout_destination)")
    service_level_s: int = opt(20, min=1, max=3600)
    music_on_hold: str = opt("")
    announcements: Announcements = _factory(Announcements)
    tiers: tuple[Tier, ...] = opt(())


@dataclass(frozen=True, slots=True, kw_only=True)
class Hours:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    time_zone: str = opt("", check=_check_zone, doc="default: engine.time_zone")
    rules: tuple[TimeRule, ...] = opt(())
    holidays: tuple[str, ...] = opt((), check=_each(_check_date))


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    dialed_number: str = opt(check=_check_number_pattern)
    destination: str = opt(check=_check_destination)
    tenant: str = opt(DEFAULT_TENANT)
    hours: str = opt("", doc="name of an [hours] table; outside it after_hours applies")
    after_hours: tuple[str, ...] = opt((), check=_each(_check_destination))
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    name: str = opt(key=True)
    path: str = opt(doc="IVR flow file, relative to the config directory")
    tenant: str = opt(DEFAULT_TENANT)


CAMPAIGN_MODES = ("preview", "progressive", "predictive", "notification", "survey")
CAMPAIGN_OUTCOMES = ("busy", "no_answer", "failed", "machine", "congestion", "invalid_number",
                     "rejected", "timeout", "dropped")


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignRetry:
    outcome: str = opt(choices=CAMPAIGN_OUTCOMES, doc="call outcome this rule retries")
    delay_s: int = opt(min=0, max=30 * 86400, doc="wait before the next attempt")
    max_attempts: int = opt(0, min=0, max=100, doc="attempts allowed when the last ended so (0: the campaign's)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Campaign:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    mode: str = opt("progressive", choices=CAMPAIGN_MODES)
    trunk: str = opt("", doc="trunk the calls leave on (default: the tenant's first)")
    caller_number: str = opt("", check=_check_number, doc="caller id (default: the trunk's)")
    groups: tuple[str, ...] = opt((), doc="agent groups working the campaign")
    agents: tuple[str, ...] = opt((), doc="agents working the campaign (besides groups)")
    queue: str = opt("", doc="ACD queue answered calls wait in for an agent (default: the first queue "
                             "of the tenant serving one of the groups)")
    time_zone: str = opt("", check=_check_zone, doc="callee zone when no record/prefix gives one "
                                                    "(default: engine.time_zone)")
    prefix_time_zones: dict[str, str] = opt({}, doc="number prefix → IANA zone of the callee")
    calling_hours: tuple[TimeRule, ...] = opt((), doc="windows in the callee's local time (empty: always)")
    holidays: tuple[str, ...] = opt((), check=_each(_check_date), doc="callee-local dates never dialled")
    max_attempts: int = opt(3, min=1, max=100)
    retries: tuple[CampaignRetry, ...] = opt((), doc="per-outcome retry rules (an outcome not listed: no retry)")
    ring_timeout_s: int = opt(30, min=5, max=300, doc="no_answer after this long ringing")
    max_drop_rate: float = opt(0.03, min=0.0, max=0.5, doc="predictive: cap on dropped / answered")
    drop_window_calls: int = opt(500, min=20, max=100000, doc="predictive: answered calls in the rolling window")
    connect_timeout_s: float = opt(2.0, min=0.5, max=30.0,
                                   doc="an answered call without a free agent this long is dropped")
    max_channels: int = opt(0, min=0, max=10000, doc="calls in progress at most (0: unlimited)")
    amd: bool = opt(False, doc="answering-machine detection on answered calls")
    machine_action: str = opt("hangup", choices=("hangup", "message", "connect"))
    drop_message: str = opt("", doc="prompt (file or 'tts:TEXT') an answered call hears when dropped")
    message: str = opt("", doc="notification: prompt or 'tts:TEXT' with {field} substitution")
    confirm_digit: str = opt("", doc="notification: DTMF digit that confirms the message")
    confirm_timeout_s: float = opt(5.0, min=0.5, max=60.0,
                                   doc="notification: how long after the message the confirm digit is awaited")
    flow: str = opt("", doc="survey: the [flows] entry run on answer")
    preview_timeout_s: int = opt(60, min=5, max=3600, doc="preview: record skipped when not accepted in time")
    wrapup_s: int | None = opt(None, min=0, max=3600, doc="wrap-up after a campaign call (default: agent's)")
    autostart: bool = opt(False, doc="start when the engine starts")


@dataclass(frozen=True, slots=True, kw_only=True)
class Extension:
    number: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    sip_ha1: str = opt(check=lambda v: None if re.fullmatch(r"[0-9a-f]{32}", v) else
                       "not an MD5 HA1 (32 lowercase hex digits: md5 of 'EXTENSION:REALM:PASSWORD')",
                       doc="device credential: MD5(extension:[sip] domain:password); the phone may "
                           "register before agent.login")
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallpathSection:
    sticky_wait_s: int = opt(15, min=0, max=3600,
                             doc="a returning caller waits this long for their last agent (0: off)")
    rejects_before_not_ready: int = opt(2, min=1, max=100,
                                        doc="consecutive rejected offers before the agent is set not ready")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScreeningList:
    name: str = opt(key=True)
    tenant: str = opt(DEFAULT_TENANT)
    kind: str = opt("block", choices=("block", "allow", "exempt"),
                    doc="block: listed callers are screened out; allow: only listed callers get through "
                        "(whitelist); exempt: listed callers skip block lists")
    numbers: tuple[str, ...] = opt((), check=_each(_check_number_pattern),
                                   doc="caller numbers (patterns); more can be added at run time")
    dialed_numbers: tuple[str, ...] = opt((), check=_each(_check_number_pattern),
                                          doc="applies to calls to these numbers (empty: every number)")
    windows: tuple[TimeRule, ...] = opt((), doc="active inside these windows only (empty: always)")
    time_zone: str = opt("", check=_check_zone, doc="zone of windows (default: engine.time_zone)")
    action: str = opt("reject", choices=("reject", "message"),
                      doc="reject: SIP final response; message: answer, play, hang up")
    reject_status: int = opt(603, min=400, max=699, doc="SIP status of action = 'reject'")
    reject_reason: str = opt("", doc="reason phrase (default: the status's standard phrase)")
    message: str = opt("", doc="text spoken (espeak-ng) for action = 'message'")
    message_file: str = opt("", doc="audio file played for action = 'message' (relative to the config)")
    description: str = opt("")


@dataclass(frozen=True, slots=True, kw_only=True)
class TollFraud:
    tenant: str = opt(key=True)
    allow: tuple[str, ...] = opt(("*",), check=_each(_check_number_pattern),
                                 doc="outbound / external-transfer targets allowed (patterns)")
    deny: tuple[str, ...] = opt((), check=_each(_check_number_pattern), doc="never allowed, checked first")
    roles: dict[str, tuple[str, ...]] = opt({}, doc="narrower allow lists per role (admin, supervisor, "
                                                    "agent, reporting, ivr, system)")
    max_concurrent_outbound: int = opt(0, min=0, max=100000, doc="0: unlimited")
    max_calls_per_day: int = opt(0, min=0, max=10_000_000, doc="0: unlimited (day in engine.time_zone)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    engine: EngineSection = _factory(EngineSection)
    sip: SipSection = _factory(SipSection)
    media: MediaSection = _factory(MediaSection)
    store: StoreSection = _factory(StoreSection)
    control: ControlSection = _factory(ControlSection)
    recording: RecordingSection = _factory(RecordingSection)
    reporting: ReportingSection = _factory(ReportingSection)
    tenants: dict[str, Tenant] = opt({})
    users: dict[str, User] = opt({})
    skills: dict[str, Skill] = opt({})
    groups: dict[str, Group] = opt({})
    departments: dict[str, Department] = opt({})
    teams: dict[str, Team] = opt({})
    agents: dict[str, Agent] = opt({})
    trunks: dict[str, Trunk] = opt({})
    queues: dict[str, Queue] = opt({})
    hours: dict[str, Hours] = opt({})
    routes: tuple[Route, ...] = opt(())
    flows: dict[str, Flow] = opt({})
    callpath: CallpathSection = _factory(CallpathSection)
    screening: dict[str, ScreeningList] = opt({})
    extensions: dict[str, Extension] = opt({})
    campaigns: dict[str, Campaign] = opt({})
    toll_fraud: dict[str, TollFraud] = opt({})
    source: str = field(default="", metadata={"internal": True})

    @property
    def base_dir(self) -> str:
        """Directory relative paths in the config are resolved against."""
        return os.path.dirname(os.path.abspath(self.source)) if self.source else os.getcwd()

    def resolve_path(self, path: str) -> str:
        """``path`` made absolute against the config file's directory."""
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.base_dir, path))

    def summary(self) -> str:
        """One line of counts, printed by ``ctiengine check``."""
        tenants = {DEFAULT_TENANT} | set(self.tenants)
        parts = [f"{len(tenants)} tenant(s)", f"{len(self.agents)} agent(s)", f"{len(self.groups)} group(s)",
                 f"{len(self.skills)} skill(s)", f"{len(self.queues)} queue(s)", f"{len(self.routes)} route(s)",
                 f"{len(self.trunks)} trunk(s)", f"{len(self.flows)} flow(s)", f"{len(self.users)} user(s)",
                 f"{len(self.control.listen)} control listener(s)"]
        return ", ".join(parts)


# ---------------------------------------------------------------- loader

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


class _Errors:
    def __init__(self, filename: str, index: LineIndex) -> None:
        self.filename = filename
        self.index = index
        self.items: list[tuple[int, str]] = []

    def add(self, path: Path, reason: str) -> None:
        line = self.index.line_of(path)
        self.items.append((line, f"{self.filename}:{line}: {format_path(path)}: {reason}"))

    def lines(self) -> list[str]:
        seen: set[str] = set()
        out = []
        for _, text in sorted(self.items, key=lambda item: item[0]):
            if text not in seen:
                seen.add(text)
                out.append(text)
        return out


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if origin is tuple:
        return f"array of {_type_name(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "table"
    if dataclasses.is_dataclass(tp):
        return "table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


_BAD = object()


def _convert(value: Any, tp: Any, path: Path, errors: _Errors, meta: dict[str, Any] | None = None) -> Any:
    """Convert a parsed TOML value to ``tp``; report problems, return ``_BAD`` on failure."""
    meta = meta or {}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, inner[0], path, errors, meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.add(path, f"expected a table, got {_describe(value)}")
            return _BAD
        return _build(tp, value, path, errors)
    if origin is tuple:
        if not isinstance(value, list):
            errors.add(path, f"expected {_type_name(tp)}, got {_describe(value)}")
            return _BAD
        item_tp = typing.get_args(tp)[0]
        item_meta = {k: v for k, v in meta.items() if k in ("min", "max", "choices")}
        items = [_convert(v, item_tp, path + (i,), errors, item_meta) for i, v in enumerate(value)]
        if any(i is _BAD for i in items):
            return _BAD
        result = tuple(items)
        return _post_check(result, path, errors, meta, check_only=True)
    if origin is dict:
        if not isinstance(value, dict):
            errors.add(path, f"expected a table, got {_describe(value)}")
            return _BAD
        val_tp = typing.get_args(tp)[1]
        out = {}
        for k, v in value.items():
            sub_meta = {kk: vv for kk, vv in meta.items() if kk in ("min", "max", "choices")}
            conv = _convert(v, val_tp, path + (k,), errors, sub_meta)
            if dataclasses.is_dataclass(val_tp) and conv is not _BAD:
                key_field = next((f.name for f in dataclasses.fields(val_tp) if f.metadata.get("key")), None)
                if key_field:
                    conv = dataclasses.replace(conv, **{key_field: k})
            if conv is not _BAD:
                out[k] = conv
        return out
    # scalars
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        errors.add(path, f"expected {_type_name(tp)}, got {_describe(value)}")
        return _BAD
    return _post_check(value, path, errors, meta)


def _post_check(value: Any, path: Path, errors: _Errors, meta: dict[str, Any], check_only: bool = False) -> Any:
    if not check_only:
        lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
        if lo is not None and value < lo:
            errors.add(path, f"{value} is below the minimum {lo}")
            return _BAD
        if hi is not None and value > hi:
            errors.add(path, f"{value} is above the maximum {hi}")
            return _BAD
        if choices is not None and value not in choices:
            errors.add(path, f"{value!r} is not one of: {', '.join(map(str, choices))}")
            return _BAD
    check = meta.get("check")
    if check is not None:
        reason = check(value)
        if reason:
            errors.add(path, reason)
            return _BAD
    return value


def _build(cls: type, data: dict[str, Any], path: Path, errors: _Errors) -> Any:
    # Values that fail fall back to their default so the cross checks can
    # still run on the rest; an entity missing a required value is dropped.
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)
              if not f.metadata.get("key") and not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(fields)})"
            errors.add(path + (key,), f"unknown key{hint}")
            continue
        conv = _convert(value, hints[key], path + (key,), errors, dict(fields[key].metadata))
        if conv is not _BAD:
            kwargs[key] = conv
    complete = True
    for name, f in fields.items():
        if name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            if name not in data:
                errors.add(path, f"missing required key {name!r}")
            complete = False
    return cls(**kwargs) if complete else _BAD


# ---------------------------------------------------------------- cross checks


def _check_references(cfg: Config, raw: dict[str, Any], errors: _Errors) -> None:
    tenants = {DEFAULT_TENANT} | set(raw.get("tenants") or {})

    def tenant_ok(path: Path, tenant: str, allow_global: bool = False) -> None:
        if tenant == GLOBAL_TENANT and allow_global:
            return
        if tenant not in tenants:
            errors.add(path + ("tenant",), f"unknown tenant {tenant!r} (define it under [tenants.{tenant}])")

    def same_tenant(path: Path, what: str, name: str, owner_tenant: str, target_tenant: str) -> None:
        if owner_tenant != target_tenant:
            errors.add(path, f"{what} {name!r} belongs to tenant {target_tenant!r}, not {owner_tenant!r}")

    def known(path: Path, what: str, name: str, table: dict[str, Any], section: str, tenant: str) -> bool:
        if name not in table:
            # An entity that failed its own checks is absent from the table
            # but present in the file: it is not a dangling reference.
            section_raw = raw.get(section)
            if not (isinstance(section_raw, dict) and name in section_raw):
                errors.add(path, f"unknown {what} {name!r} (no [{section}.{name}])")
            return False
        same_tenant(path, what, name, tenant, table[name].tenant)
        return True

    def skills_ok(path: Path, skills: dict[str, int], tenant: str) -> None:
        # Skills may be declared in [skills]; when that table is empty, any
        # skill name is accepted (small setups name skills only on agents).
        if not cfg.skills:
            return
        for s in skills:
            known(path + (s,), "skill", s, cfg.skills, "skills", tenant)

    def destination_ok(path: Path, text: str, tenant: str) -> None:
        try:
            d = parse_destination(text)
        except ValueError:
            return  # already reported by the field check
        if d.kind == "queue":
            known(path, "queue", d.target, cfg.queues, "queues", tenant)
        elif d.kind == "flow":
            known(path, "flow", d.target, cfg.flows, "flows", tenant)
        elif d.kind == "agent":
            known(path, "agent", d.target, cfg.agents, "agents", tenant)

    for name, sec in (("sip", cfg.sip), ):
        if sec.registration_min_expires_s > sec.registration_max_expires_s:
            errors.add((name, "registration_min_expires_s"), "is above registration_max_expires_s")
    if cfg.media.rtp_port_min >= cfg.media.rtp_port_max:
        errors.add(("media", "rtp_port_min"),
                   f"{cfg.media.rtp_port_min} is not below rtp_port_max {cfg.media.rtp_port_max}")
    for i, lst in enumerate(cfg.control.listen):
        p: Path = ("control", "listen", i)
        if lst.transport == "unix" and not lst.path:
            errors.add(p, "a unix listener needs 'path'")
        if lst.transport == "tcp" and lst.path:
            errors.add(p + ("path",), "'path' is only for transport = 'unix'")
        _check_listener_tls(cfg, p, lst, errors, tls_transport="tcp")
    seen_listeners: set[tuple[str, str, int]] = set()
    for i, sl in enumerate(cfg.sip.listen):
        k = (sl.transport, sl.host, sl.port)
        if k in seen_listeners and sl.port:
            errors.add(("sip", "listen", i), f"duplicate listener {sl.transport} {sl.host}:{sl.port}")
        seen_listeners.add(k)
        _check_listener_tls(cfg, ("sip", "listen", i), sl, errors, tls_transport="tls")
    if cfg.recording.min_length_s and cfg.recording.max_length_s and \
            cfg.recording.min_length_s > cfg.recording.max_length_s:
        errors.add(("recording", "min_length_s"), "is above max_length_s")
    for i, a in enumerate(cfg.recording.include_agents + cfg.recording.exclude_agents):
        if a not in cfg.agents:
            key = "include_agents" if i < len(cfg.recording.include_agents) else "exclude_agents"
            errors.add(("recording", key), f"unknown agent {a!r}")
    for g in cfg.recording.include_groups:
        if g not in cfg.groups:
            errors.add(("recording", "include_groups"), f"unknown group {g!r}")
    for q in cfg.recording.include_queues:
        if q not in cfg.queues:
            errors.add(("recording", "include_queues"), f"unknown queue {q!r}")
    for t in cfg.recording.include_trunks:
        if t not in cfg.trunks:
            errors.add(("recording", "include_trunks"), f"unknown trunk {t!r}")
    for name, s in cfg.skills.items():
        tenant_ok(("skills", name), s.tenant)
    for name, g in cfg.groups.items():
        tenant_ok(("groups", name), g.tenant)
    for number, a in cfg.agents.items():
        p = ("agents", number)
        if not re.fullmatch(r"[0-9]+", number):
            errors.add(p, f"agent number {number!r} must be digits")
        tenant_ok(p, a.tenant)
        for i, g in enumerate(a.groups):
            known(p + ("groups", i), "group", g, cfg.groups, "groups", a.tenant)
        skills_ok(p + ("skills",), a.skills, a.tenant)
    for name, u in cfg.users.items():
        p = ("users", name)
        tenant_ok(p, u.tenant, allow_global=u.role == "admin")
        if u.tenant == GLOBAL_TENANT and u.role != "admin":
            errors.add(p + ("tenant",), f"only admins may have tenant {GLOBAL_TENANT!r}")
        for i, g in enumerate(u.groups):
            if u.tenant == GLOBAL_TENANT:
                if g not in cfg.groups:
                    errors.add(p + ("groups", i), f"unknown group {g!r} (no [groups.{g}])")
            else:
                known(p + ("groups", i), "group", g, cfg.groups, "groups", u.tenant)
        if u.role == "supervisor" and not u.groups and u.scope in ("", "groups"):
            errors.add(p + ("groups",), "a supervisor needs at least one supervised group")
        if u.role == "agent":
            if not u.agent:
                errors.add(p, "missing required key 'agent' (role 'agent' acts as one agent number)")
            else:
                known(p + ("agent",), "agent", u.agent, cfg.agents, "agents", u.tenant)
        elif u.agent:
            errors.add(p + ("agent",), "only users of role 'agent' name an agent")
        if u.extension:
            _check_supervisor_extension(cfg, errors, p, u)
    for name, t in cfg.trunks.items():
        tenant_ok(("trunks", name), t.tenant)
        _check_trunk_tls(cfg, ("trunks", name), t, errors)
    for name, h in cfg.hours.items():
        p = ("hours", name)
        tenant_ok(p, h.tenant)
        for i, r in enumerate(h.rules):
            if _check_hhmm(r.start) is None and _check_hhmm(r.end) is None and r.start >= r.end:
                errors.add(p + ("rules", i, "start"), f"start {r.start} is not before end {r.end}")
    for name, f in cfg.flows.items():
        p = ("flows", name)
        tenant_ok(p, f.tenant)
        if not os.path.isfile(cfg.resolve_path(f.path)):
            errors.add(p + ("path",), f"flow file not found: {cfg.resolve_path(f.path)}")
    for name, q in cfg.queues.items():
        p = ("queues", name)
        tenant_ok(p, q.tenant)
        if not q.groups and not q.skills:
            errors.add(p, "a queue needs 'groups' or 'skills' (who may answer it)")
        for i, g in enumerate(q.groups):
            known(p + ("groups", i), "group", g, cfg.groups, "groups", q.tenant)
        skills_ok(p + ("skills",), q.skills, q.tenant)
        if q.timeout_destination:
            destination_ok(p + ("timeout_destination",), q.timeout_destination, q.tenant)
            if parse_destination_or_none(q.timeout_destination) == Destination("queue", name):
                errors.add(p + ("timeout_destination",), "a queue cannot time out into itself")
        last = -1
        for i, t in enumerate(q.tiers):
            tp = p + ("tiers", i)
            if t.after_s <= last:
                errors.add(tp + ("after_s",), f"tiers must widen over time: after_s {t.after_s} "
                                              f"is not above the previous tier's {last}")
            last = t.after_s
            for j, g in enumerate(t.groups):
                known(tp + ("groups", j), "group", g, cfg.groups, "groups", q.tenant)
            skills_ok(tp + ("skills",), t.skills, q.tenant)
    for name, q in cfg.queues.items():
        prompt = q.announcements.periodic_prompt
        if prompt and not prompt.startswith("tts:") and not os.path.isfile(cfg.resolve_path(prompt)):
            errors.add(("queues", name, "announcements", "periodic_prompt"),
                       f"prompt file not found: {cfg.resolve_path(prompt)} (or use 'tts:TEXT')")
        if q.full_destination:
            destination_ok(("queues", name, "full_destination"), q.full_destination, q.tenant)
            if parse_destination_or_none(q.full_destination) == Destination("queue", name):
                errors.add(("queues", name, "full_destination"), "a full queue cannot overflow into itself")
    for number, ext in cfg.extensions.items():
        tenant_ok(("extensions", number), ext.tenant)
        if _check_number(number) or not number:
            errors.add(("extensions", number), f"extension {number!r} must be digits")
    for name, sl in cfg.screening.items():
        p = ("screening", name)
        tenant_ok(p, sl.tenant)
        for i, r in enumerate(sl.windows):
            if _check_hhmm(r.start) is None and _check_hhmm(r.end) is None and r.start >= r.end:
                errors.add(p + ("windows", i, "start"), f"start {r.start} is not before end {r.end}")
        if sl.action == "message" and not (sl.message or sl.message_file):
            errors.add(p + ("action",), "action 'message' needs 'message' (text) or 'message_file'")
        if sl.message_file and not os.path.isfile(cfg.resolve_path(sl.message_file)):
            errors.add(p + ("message_file",), f"message file not found: {cfg.resolve_path(sl.message_file)}")
        if sl.action == "reject" and (sl.message or sl.message_file):
            errors.add(p + ("message" if sl.message else "message_file",),
                       "'message'/'message_file' are only played with action = 'message'")
    seen_routes: dict[tuple[str, str], int] = {}
    for i, r in enumerate(cfg.routes):
        p = ("routes", i)
        tenant_ok(p, r.tenant)
        k = (r.tenant, r.dialed_number)
        if k in seen_routes:
            errors.add(p + ("dialed_number",), f"dialed number {r.dialed_number!r} is already routed "
                                               f"by routes[{seen_routes[k]}]")
        seen_routes.setdefault(k, i)
        destination_ok(p + ("destination",), r.destination, r.tenant)
        if r.hours:
            known(p + ("hours",), "hours", r.hours, cfg.hours, "hours", r.tenant)
        elif r.after_hours:
            errors.add(p + ("after_hours",), "'after_hours' needs 'hours' (when business hours are)")
        for j, d in enumerate(r.after_hours):
            destination_ok(p + ("after_hours", j), d, r.tenant)
    for name, cp in cfg.campaigns.items():  # outbound campaigns (engine/campaign.py)
        p = ("campaigns", name)
        tenant_ok(p, cp.tenant)
        for i, g in enumerate(cp.groups):
            known(p + ("groups", i), "group", g, cfg.groups, "groups", cp.tenant)
        for i, a in enumerate(cp.agents):
            known(p + ("agents", i), "agent", a, cfg.agents, "agents", cp.tenant)
        if cp.trunk:
            known(p + ("trunk",), "trunk", cp.trunk, cfg.trunks, "trunks", cp.tenant)
        if cp.queue:
            known(p + ("queue",), "queue", cp.queue, cfg.queues, "queues", cp.tenant)
        for prefix, zone in cp.prefix_time_zones.items():
            reason = _check_number_pattern(prefix.rstrip("*")) or _check_zone(zone)
            if reason:
                errors.add(p + ("prefix_time_zones", prefix), reason)
        if cp.mode in ("preview", "progressive", "predictive") and not (cp.groups or cp.agents):
            errors.add(p, f"mode {cp.mode!r} needs 'groups' or 'agents' (who takes the calls)")
        if cp.mode == "survey":
            if not cp.flow:
                errors.add(p, "mode 'survey' needs 'flow'")
            else:
                known(p + ("flow",), "flow", cp.flow, cfg.flows, "flows", cp.tenant)
        if cp.mode == "notification" and not cp.message:
            errors.add(p, "mode 'notification' needs 'message'")
        if cp.confirm_digit and cp.confirm_digit not in "0123456789*#":
            errors.add(p + ("confirm_digit",), f"not a DTMF digit {cp.confirm_digit!r}")
    for name, tf in cfg.toll_fraud.items():
        _check_toll_fraud(("toll_fraud", name), tf, tenants, errors)
    from engine.orgscope import check_organisation
    check_organisation(cfg, errors.add, known, tenant_ok)


def _check_listener_tls(cfg: Config, p: Path, lst: Any, errors: _Errors, tls_transport: str) -> None:
    # Control listeners serve TLS on 'tcp' when given a certificate; SIP
    # listeners have their own transport 'tls', which needs one.
    if tls_transport == "tls" and lst.transport == "tls" and not (lst.tls_cert and lst.tls_key):
        errors.add(p, "a tls listener needs 'tls_cert' and 'tls_key'")
        return
    if not (lst.tls_cert or lst.tls_key or lst.tls_client_ca or getattr(lst, "tls_ca", "")):
        return
    if lst.transport != tls_transport and (lst.tls_cert or lst.tls_key or lst.tls_client_ca):
        errors.add(p + ("tls_cert",), f"TLS is only for transport = '{tls_transport}'")
    if bool(lst.tls_cert) != bool(lst.tls_key):
        errors.add(p + ("tls_key" if lst.tls_cert else "tls_cert",), "'tls_cert' and 'tls_key' go together")
    if lst.tls_client_ca and not lst.tls_cert:
        errors.add(p + ("tls_client_ca",), "'tls_client_ca' needs 'tls_cert' and 'tls_key'")
    for key in ("tls_cert", "tls_key", "tls_client_ca", "tls_ca"):
        value = getattr(lst, key, "")
        if value and not os.path.isfile(cfg.resolve_path(value)):
            errors.add(p + (key,), f"no such file: {cfg.resolve_path(value)}")


def _check_trunk_tls(cfg: Config, p: Path, t: Any, errors: _Errors) -> None:
    # Per-trunk TLS (engine/mediasec.py): keys only on a TLS trunk, files exist.
    if t.transport != "tls":
        for key in ("tls_ca", "tls_verify_name", "tls_cert", "tls_key"):
            if getattr(t, key):
                errors.add(p + (key,), f"'{key}' needs transport = 'tls'")
        if t.srtp == "required":
            errors.add(p + ("srtp",), "srtp = 'required' needs transport = 'tls' (SDES keys never travel in clear)")
        return
    if bool(t.tls_cert) != bool(t.tls_key):
        errors.add(p + ("tls_key" if t.tls_cert else "tls_cert",), "'tls_cert' and 'tls_key' go together")
    for key in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(t, key)
        if value and not os.path.isfile(cfg.resolve_path(value)):
            errors.add(p + (key,), f"no such file: {cfg.resolve_path(value)}")


def _check_toll_fraud(path: Path, tf: "TollFraud", tenants: set[str], errors: _Errors) -> None:
    if tf.tenant not in tenants:
        errors.add(path, f"unknown tenant {tf.tenant!r} (define it under [tenants.{tf.tenant}])")
    for role, patterns in tf.roles.items():
        if role not in ROLES + ("ivr", "system"):
            errors.add(path + ("roles", role), f"unknown role {role!r} (expected one of: "
                                               f"{', '.join(ROLES + ('ivr', 'system'))})")
        for i, pattern in enumerate(patterns):
            reason = _check_number_pattern(pattern)
            if reason:
                errors.add(path + ("roles", role, i), reason)


def parse_destination_or_none(text: str) -> Destination | None:
    try:
        return parse_destination(text)
    except ValueError:
        return None


# ---------------------------------------------------------------- entry points


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Validate TOML ``text``; raises :class:`ConfigError` listing every problem."""
    index = LineIndex(text)
    errors = _Errors(filename, index)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m[1]) if m else 1
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) or "invalid TOML"
        raise ConfigError([f"{filename}:{line}: (toml): {reason}"]) from None
    cfg = _build(Config, data, (), errors)
    if cfg is not _BAD:
        cfg = dataclasses.replace(cfg, source=filename)
        _check_references(cfg, data, errors)
    lines = errors.lines()
    if lines:
        raise ConfigError(lines)
    return cfg


def build_campaign(cfg: Config, name: str, data: dict[str, Any]) -> Campaign:
    """A campaign defined at run time (``campaign.create``), checked like a ``[campaigns.NAME]`` table.

    Raises :class:`ConfigError` listing every problem (``campaign.create:1: campaigns.NAME.KEY: reason``).
    """
    errors = _Errors("campaign.create", LineIndex(""))
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name or ""):
        errors.add(("campaigns", name), "campaign name must be 1 to 64 letters, digits, '_', '.' or '-'")
        raise ConfigError(errors.lines())
    built = _build(Campaign, data, ("campaigns", name), errors)
    if built is not _BAD:
        built = dataclasses.replace(built, name=name)
        raw = {"tenants": dict.fromkeys(cfg.tenants, {}), "groups": dict.fromkeys(cfg.groups, {}),
               "queues": dict.fromkeys(cfg.queues, {}),
               "agents": dict.fromkeys(cfg.agents, {}), "trunks": dict.fromkeys(cfg.trunks, {}),
               "flows": dict.fromkeys(cfg.flows, {})}
        _check_references(dataclasses.replace(cfg, campaigns={name: built}), raw, errors)
    lines = errors.lines()
    if lines:
        raise ConfigError(lines)
    return built


def load_config(path: str) -> Config:
    """Load and validate the file at ``path``.

    Raises :class:`ConfigError` (every problem, one line each) or ``OSError``
    when the file cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}:1: (file): cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: (file): not UTF-8 text"]) from None
    return parse_config(text, path)


def schema_fields(cls: type = Config) -> list[tuple[str, str, Any, str]]:
    """``(name, type name, default, doc)`` for every key of ``cls`` (docs and tests)."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("key") or f.metadata.get("internal"):
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = "(table)"
        else:
            default = MISSING
        out.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("doc", "")))
    return out
