"""The inbound call path: SIP + media + ACD wired into one engine service.

Theory of operation
-------------------
:class:`CallCentre` is an :class:`engine.app.Service`.  ``start`` binds a
:class:`sip.useragent.SipEndpoint` on the configured listener (UDP and TCP
share the port of the first ``[[sip.listen]]`` entry) with a
:class:`sip.registrar.Registrar` doing digest auth (RFC 3261 §22.4), starts
a :class:`media.engine.MediaEngine` ticking on the loop and builds the ACD
(``engine.acd.Acd``) from ``[queues]``, ``[skills]`` and ``[groups]``.

Phone credentials (hot-desking): the configuration keeps only scrypt
hashes, and digest needs the clear password or HA1.  So an agent's phone
credentials come into being at ``agent.login``: the password is verified
against the agent's hash and HA1 = MD5(extension:realm:password) (and the
same for the agent number as user) is kept in memory until logout.  A
phone registers as ``sip:<extension>@<anything>`` with digest user
``<extension>`` and the agent's password.  An extension with a device
credential (``[extensions.N] sip_ha1``) registers with its own password at
any time; agent logins on it leave that credential alone.

A trunk INVITE (RFC 3261 §13.3) is routed like this:

1. source address → trunk (``host`` or ``accept_networks``), else 403;
2. Request-URI user → ``[[routes]]`` (exact number, or prefix ending in
   ``*``), else 404;
3. SDP offer → answer through :class:`sip.sdp.SdpSession` on a new media
   leg (RFC 3264 §6); nothing acceptable → 488;
4. 200 OK with the answer; music on hold on the caller leg; the caller's
   history is read from the store (screen pop) and the call enqueued in the
   ACD (destination ``queue:NAME``; other destinations answer 503 for now).

ACD decisions drive the rest: ``OFFER`` reserves an agent and sends an
INVITE (with our SDP offer) to the contact its phone registered, from the
address the REGISTER came from (RFC 3581); ``call.ringing`` goes to the
agent's desktop with the screen pop.  A 2xx bridges caller and agent in a
room (two-party hear set: each hears the other), records caller left /
agent right when ``[recording] mode = "all"``, and the ACD marks the agent
busy.  Ring no answer after the queue's ``ring_timeout_s``: CANCEL, the ACD
excludes that agent for the caller, sets it not ready and offers the next
one.  A BYE from either side ends the other leg; the agent goes to wrap-up
for ``wrapup_s`` (agent, else queue) and then ready.  Every call writes a
``cdr`` row, ``queue_log`` rows and ``agent_state_log`` rows (with the
duration of the state left).

Everything runs on the loop thread: SIP and media callbacks, ACD timers and
control ops.
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import time
from typing import Any

import numpy as np

from engine.acd import Acd
from engine.acd_types import AgentState, DecisionKind, QueueConfig, Strategy, Tier
from engine.app import CallLogger
from engine.calls import AgentRecord, Call, CallLeg, CallState, CallTrigger
from engine.config import Config
from engine.recovery import journal_row
from engine.routing import choose_destination, find_route, should_record
from engine.errors import Conflict, Forbidden, InvalidArgs, NotFound
from engine.legs import DialPolicy, LegAnswered, LegEnded, LegEvent, LegFailed, LegOutcome, Legs, OutgoingLeg
from media.engine import MediaConfig, MediaEngine
from media.events import DtmfReceived, MediaEvent, PlaybackFinished, RtpTimedOut
from media.player import MusicSource
from media.rtp import PayloadTypeMap
from sip.errors import NoCommonCodecError, SdpError
from sip.events import DialogTerminated, Event, RegistrationChanged, RequestReceived
from sip.events import SourceBanned
from sip.registrar import DigestAuthenticator, Registrar
from sip.sdp import SdpSession, SessionDescription
from sip.useragent import SipEndpoint

logger = logging.getLogger("engine.callpath")

_STATE_LABEL = {int(s): s.label for s in AgentState}

REJECTS_BEFORE_NOT_READY = 2
"""Default of ``[callpath] rejects_before_not_ready``: consecutive rejected offers before not ready."""

STICKY_WAIT_S = 15.0
"""Default of ``[callpath] sticky_wait_s``: how long a returning caller waits for their last agent."""


def music_on_hold_frames(seconds: float = 4.0) -> np.ndarray:
    """A quiet two-note loop (-24 dBFS, 392/523 Hz) used when no music file is configured."""
    t = np.arange(int(8000 * seconds)) / 8000.0
    note = np.where((t % 1.0) < 0.5, 392.0, 523.25)
    phase = 2 * np.pi * np.cumsum(note) / 8000.0
    return (2000 * np.sin(phase)).astype(np.int16)


def sdp_payload_types(sd: SessionDescription) -> PayloadTypeMap:
    """The payload map of the first audio stream of ``sd`` (for ``MediaEngine.create_leg``)."""
    m = next(m for m in sd.media if m.media == "audio")
    rtpmap = {pt: f"{name}/{rate}" for pt, (name, rate, _ch) in m.rtpmap.items()}
    return PayloadTypeMap.from_sdp([int(f) for f in m.formats if f.isdigit()], rtpmap)


def aor_user(aor: str) -> str:
    """``"sip:2001@host"`` → ``"2001"``."""
    rest = aor.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else ""


def auto_answer_headers(domain: str) -> list[tuple[str, str]]:
    """Headers asking a phone to answer an INVITE without ringing.

    ``Answer-Mode: Auto`` (RFC 5373 §4), ``Call-Info: <sip:domain>;answer-after=0``
    (Snom, Yealink, Grandstream, baresip, Linphone) and ``Alert-Info:
    <http://localhost>;info=alert-autoanswer;delay=0`` (Polycom, Yealink,
    Cisco SPA).  Phones honour them only when their intercom/auto-answer
    setting allows it.
    """
    return [("Answer-Mode", "Auto"), ("Call-Info", f"<sip:{domain}>;answer-after=0"),
            ("Alert-Info", "<http://localhost>;info=alert-autoanswer;delay=0")]


def contact_destination(binding: Any) -> tuple[str, int]:
    """Where an INVITE for a registered contact goes.

    The Contact URI's address when its host is the host the REGISTER came
    from (same machine, or a third-party registration from it); otherwise
    the REGISTER's source address (a phone behind NAT announcing a private
    address, RFC 3581).
    """
    from sip.dialog import uri_address

    if getattr(binding, "transport", "") == "TLS":
        return binding.source  # RFC 3261 §26 / RFC 5923: back over the phone's TLS connection
    found = uri_address(binding.contact)
    if found is not None and found[0][0] == binding.source[0]:
        return found[0]
    return binding.source


class CallCentre:
    """The SIP, media and call-path service (see the module docstring)."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.config: Config | None = None
        self.endpoint: SipEndpoint | None = None
        self.registrar: Registrar | None = None
        self.defence: Any = None  # engine.security.SipDefence
        self.media: MediaEngine | None = None
        self.acd: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.calls: dict[str, Call] = {}
        self.calls_by_acd: dict[int, Call] = {}
        self.agents: dict[str, AgentRecord] = {}
        self.agents_by_acd: dict[int, AgentRecord] = {}
        self.queue_ids: dict[str, int] = {}
        self.queue_names: dict[int, str] = {}
        self.credentials: dict[str, str] = {}
        self.recorder: Any = None
        self.legs = Legs(self)
        from engine.mediasec import MediaSecurity

        self.mediasec = MediaSecurity(self)
        """Per-trunk TLS and SDES-SRTP of TLS legs (engine/mediasec.py)."""
        self.dial_policy: Any = None  # toll-fraud guard for trunk legs (engine/tollfraud.py), set in start()
        """Every leg the engine places (engine/legs.py): agent offers, transfers, consults, dial-outs."""
        self.dial_policy: DialPolicy | None = None
        """Toll-fraud hook: ``f(DialCheck) -> refusal reason | None`` before a trunk INVITE (None: allow)."""
        self.leg_hook: Any = None
        """Call control (engine/callcontrol.py): ``f(call, LegEvent) -> handled`` for the agent leg's
        hold changes and far-end hang-up once the call is talking."""
        from engine.callcontrol import CallControl

        self.callcontrol = CallControl(self)
        """Hold, transfers, consult, conference, click-to-dial, phone hold and REFER (engine/callcontrol.py)."""
        self._acd_timer: asyncio.TimerHandle | None = None
        self._next_caller = 1
        self._session_seq = 0
        self._moh = music_on_hold_frames()
        self._tasks: set[asyncio.Task] = set()
        self._flows: dict[str, Any] = {}
        from engine.voicemail import Voicemail

        self.voicemail = Voicemail(self)
        from engine.supervision import Supervision

        self.supervision = Supervision(self)
        from engine.screening import ScreenedCalls

        self.screened = ScreenedCalls(self)
        # DTMF of legs outside a call-path call (campaign notifications): a tap returns True when it took it.
        self.dtmf_taps: list[Any] = []  # Callable[[DtmfReceived], bool]

    # ------------------------------------------------------------------ lifecycle
    async def start(self, engine: Any) -> None:
        self.engine = engine
        self.config = cfg = engine.config
        self.loop = asyncio.get_running_loop()
        self.supervision.attach(engine)
        store_path = getattr(engine.store, "path", ":memory:")
        if engine.store is not None and store_path != ":memory:":
            from engine.recovery import recover  # issue 12: close what a crash left open

            await self.loop.run_in_executor(None, recover, store_path)
        udp = next((lst for lst in cfg.sip.listen if lst.transport == "udp"), cfg.sip.listen[0])
        has_tcp = any(lst.transport == "tcp" for lst in cfg.sip.listen)
        auth = DigestAuthenticator(cfg.sip.domain, lookup_ha1=self._lookup_ha1)
        self.registrar = Registrar(auth, min_expires_s=cfg.sip.registration_min_expires_s,
                                   max_expires_s=cfg.sip.registration_max_expires_s)
        from engine.security import SipDefence  # issue 12: abuse defences

        self.defence = SipDefence(engine, cfg, self.loop.time)
        self.registrar.auth_observer = self.defence.auth_observed
        from engine.tollfraud import TollFraudPolicy, dial_policy

        self.toll_fraud = TollFraudPolicy(cfg.toll_fraud, cfg.engine.time_zone, live_outbound=lambda tenant: sum(
            1 for leg in self.legs._live.values() if leg.target.kind == "trunk" and leg.tenant == tenant))
        self.dial_policy = dial_policy(self.toll_fraud, time.time)
        if engine.store is not None and store_path != ":memory:":  # max_calls_per_day survives a restart
            from engine.tollfraud import seed_from_store
            await self.loop.run_in_executor(None, seed_from_store, self.toll_fraud, store_path, time.time())
        for tenant in self.toll_fraud.unguarded_tenants({"default"} | set(cfg.tenants)):
            if any(t.tenant == tenant for t in cfg.trunks.values()):
                logger.warning("tenant %s has no [toll_fraud.%s] policy: outbound calls are unrestricted",
                               tenant, tenant)
        self.endpoint = SipEndpoint(udp.host, udp.port, on_event=self._on_sip, tcp=has_tcp,
                                    registrar=self.registrar, user="ctiengine", user_agent=cfg.sip.user_agent,
                                    guard=self.defence.guard)
        await self.endpoint.start()
        logger.info("SIP listening on %s:%d (udp%s)", *self.endpoint.address, "+tcp" if has_tcp else "")
        for lst in cfg.sip.listen:
            if lst.transport == "tls":  # RFC 3261 §26 (sip/tls.py)
                from sip.tls import TlsSettings, client_context, enable_tls, server_context

                res = cfg.resolve_path
                await enable_tls(self.endpoint, host=lst.host, port=lst.port,
                                 server=server_context(res(lst.tls_cert), res(lst.tls_key),
                                                      res(lst.tls_client_ca) if lst.tls_client_ca else None),
                                 client=TlsSettings(client_context(res(lst.tls_ca) if lst.tls_ca else None)))
        self.mediasec.install()  # TLS trunks: their own CA, name and client certificate
        m = cfg.media
        self.media = MediaEngine(MediaConfig(host=m.host, port_range=(m.rtp_port_min, m.rtp_port_max),
                                             rtp_timeout_s=float(m.rtp_timeout_s),
                                             latch_window_s=float(m.rtp_latch_window_s),
                                             latch_packets=m.rtp_latch_packets),
                                 on_event=self._on_media)
        try:
            await self.media.start()
            self._build_acd()
            self.credentials.update({n: e.sip_ha1 for n, e in cfg.extensions.items()})  # device credentials
            await self.screened.start(cfg, engine.store)
            if cfg.recording.mode != "none":
                from media.recorder import Recorder

                self.recorder = Recorder(cfg.resolve_path(cfg.recording.path), fmt=cfg.recording.format,
                                         stereo=cfg.recording.stereo, min_length_s=cfg.recording.min_length_s,
                                         max_length_s=cfg.recording.max_length_s or None)
        except BaseException:
            await self.endpoint.stop()
            await self.media.stop()
            raise
        engine.add_counter("registrations", self.registration_count)
        engine.add_counter("legs", lambda: len(self.media.legs) if self.media else 0)
        engine.add_counter("calls", lambda: len(self.calls))
        # Media clock health (media/clock.py), e.g. under a SIP flood (issue 12).
        engine.add_counter("media_late_ticks", lambda: self.media.clock.late_ticks if self.media and self.media.clock else 0)
        engine.add_counter("media_skipped_ticks",
                           lambda: self.media.clock.skipped_ticks if self.media and self.media.clock else 0)
        engine.add_snapshot("agents", self._snapshot_agents)
        engine.add_snapshot("calls", self._snapshot_calls)
        engine.add_snapshot("queues", self._snapshot_queues)

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            self.hangup(call, "shutdown")
        if self._acd_timer is not None:
            self._acd_timer.cancel()
        for rec in self.agents.values():
            if rec.wrapup_timer is not None:
                rec.wrapup_timer.cancel()
        self.legs.hangup_all("shutdown")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0.05)  # let the BYEs leave
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self.media is not None:
            await self.media.stop()
        if self.recorder is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.recorder.close)
        await asyncio.get_running_loop().run_in_executor(None, self.voicemail.close)

    def registration_count(self) -> int:
        loc = self.registrar.location if self.registrar else None
        return sum(len(loc.lookup(a)) for a in loc.aors()) if loc else 0

    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    # ------------------------------------------------------------------ configuration → ACD
    def _build_acd(self) -> None:
        cfg = self.config
        assert cfg is not None
        self.acd = Acd()
        skills = {name: i for i, name in enumerate(sorted(cfg.skills))}
        groups = {name: i for i, name in enumerate(sorted(cfg.groups))}
        self._skill_ids, self._group_ids = skills, groups
        for qid, (name, q) in enumerate(sorted(cfg.queues.items())):
            tiers = [Tier(0.0, tuple((skills[s], lv) for s, lv in q.skills.items() if s in skills),
                          tuple(groups[g] for g in q.groups if g in groups))]
            for t in q.tiers:
                tiers.append(Tier(float(t.after_s), tuple((skills[s], lv) for s, lv in t.skills.items() if s in skills),
                                  tuple(groups[g] for g in t.groups if g in groups)))
            self.acd.add_queue(qid, QueueConfig(strategy=Strategy.from_name(q.strategy), tiers=tuple(tiers),
                                                timeout_s=float(q.timeout_s), max_length=q.max_length))
            self.queue_ids[name] = qid
            self.queue_names[qid] = name
        for aid, (number, a) in enumerate(sorted(cfg.agents.items())):
            rec = AgentRecord(number, a.tenant, aid)
            self.agents[number] = rec
            self.agents_by_acd[aid] = rec

    # ------------------------------------------------------------------ credentials
    def _lookup_ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        if algorithm.upper() != "MD5":
            return None
        return self.credentials.get(user)

    def _set_credentials(self, rec: AgentRecord, password: str) -> None:
        realm = self.config.sip.domain  # type: ignore[union-attr]
        for user in {rec.number, rec.extension} - {""} - set(self.config.extensions):  # type: ignore[union-attr]
            self.credentials[user] = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()

    # ------------------------------------------------------------------ agent operations
    def agent(self, number: str) -> AgentRecord:
        rec = self.agents.get(number)
        if rec is None:
            raise NotFound(f"no agent {number!r}")
        return rec

    async def login(self, number: str, password: str, extension: str) -> AgentRecord:
        from engine.passwords import verify_password

        cfg = self.config
        assert cfg is not None
        rec = self.agent(number)
        conf = cfg.agents[number]
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, conf.password)
        if not ok:
            raise Forbidden(f"wrong password for agent {number}")
        extension = extension or conf.extension
        if not extension:
            raise InvalidArgs(f"agent {number} has no default extension: give one")
        device = cfg.extensions.get(extension)
        if device is not None and device.tenant != rec.tenant:
            raise Forbidden(f"extension {extension} belongs to another tenant")  # never name the other tenant
        if any(a.extension == extension and a.tenant != rec.tenant for a in cfg.agents.values()):
            raise Forbidden(f"extension {extension} belongs to another tenant")  # another tenant's agent's phone
        for other in self.agents.values():
            if other is not rec and other.state != "logged_out" and other.extension == extension:
                who = f"agent {other.number}" if other.tenant == rec.tenant else "another tenant"
                raise Conflict(f"extension {extension} is in use by {who}")
        if rec.state != "logged_out":
            raise Conflict(f"agent {number} is already logged in on extension {rec.extension}")
        rec.extension = extension
        self._set_credentials(rec, password)
        self.acd.login(rec.acd_id, self.now(),
                       skills={self._skill_ids[s]: lv for s, lv in conf.skills.items() if s in self._skill_ids},
                       groups=[self._group_ids[g] for g in conf.groups if g in self._group_ids])
        self._sync_agent(rec)
        self._pump()
        return rec

    def logout(self, rec: AgentRecord) -> None:
        if rec.state == "logged_out":
            raise Conflict(f"agent {rec.number} is not logged in")
        if rec.state in ("busy",):
            raise Conflict(f"agent {rec.number} is on a call")
        self._cancel_wrapup(rec)
        self.acd.logout(rec.acd_id, self.now())
        for user in {rec.number, rec.extension} - set(self.config.extensions):  # type: ignore[union-attr]
            self.credentials.pop(user, None)
        self._pump()
        self._sync_agent(rec)
        rec.extension = ""

    def set_ready(self, rec: AgentRecord) -> None:
        if rec.state == "wrapup":
            return self.wrapup_done(rec)
        if rec.state != "not_ready":
            raise Conflict(f"agent {rec.number} is {rec.state}, not not_ready")
        rec.reason_code = ""
        self.acd.ready(rec.acd_id, self.now())
        self._sync_agent(rec)
        self._pump()

    def set_not_ready(self, rec: AgentRecord, reason_code: str) -> None:
        if rec.state not in ("ready", "wrapup", "not_ready"):
            raise Conflict(f"agent {rec.number} is {rec.state}")
        if rec.state == "wrapup":
            self._cancel_wrapup(rec)
            self.acd.wrapup_done(rec.acd_id, self.now())
            self._pump()
        if rec.state != "not_ready" and self.acd.agent_state(rec.acd_id) != AgentState.NOT_READY:
            self.acd.not_ready(rec.acd_id, self.now())
        rec.reason_code = reason_code
        self._sync_agent(rec, force=True)
        self._pump()

    def wrapup_done(self, rec: AgentRecord) -> None:
        if rec.state != "wrapup":
            raise Conflict(f"agent {rec.number} is {rec.state}, not in wrapup")
        self._cancel_wrapup(rec)
        self.acd.wrapup_done(rec.acd_id, self.now())
        self._sync_agent(rec)
        self._pump()

    def _cancel_wrapup(self, rec: AgentRecord) -> None:
        if rec.wrapup_timer is not None:
            rec.wrapup_timer.cancel()
            rec.wrapup_timer = None

    def _sync_agent(self, rec: AgentRecord, *, force: bool = False) -> None:
        """Mirror the ACD's agent state; log and publish a change."""
        state = _STATE_LABEL[self.acd.agent_state(rec.acd_id)]
        if state == rec.state and not force:
            return
        now = time.time()
        previous, duration = rec.state, now - rec.since
        rec.state, rec.since = state, now
        if state != "not_ready":
            rec.reason_code = ""
        if state not in ("reserved", "busy", "wrapup"):
            rec.call_id = ""
        self._store("agent_state_log", {"ts": now, "tenant": rec.tenant, "agent": rec.number, "state": state,
                                        "previous_state": previous, "duration_s": round(duration, 3),
                                        "reason_code": rec.reason_code, "call_id": rec.call_id,
                                        "extension": rec.extension})
        self.engine.bus.publish("agent.state", {**rec.describe(), "previous_state": previous},
                                tenant=rec.tenant, agent=rec.number,
                                groups=self.config.agents[rec.number].groups)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ store helpers
    def _store(self, table: str, row: dict[str, Any]) -> None:
        store = self.engine.store
        if store is not None:
            store.append(table, row)

    def _queue_log(self, call: Call, event: str, **extra: Any) -> None:
        import json

        agent = extra.pop("agent", "")
        self._store("queue_log", {"ts": time.time(), "tenant": call.tenant, "call_id": call.call_id,
                                  "queue": call.queue, "event": event, "agent": agent,
                                  "position": extra.pop("position", None), "wait_s": extra.pop("wait_s", None),
                                  "data": json.dumps(extra)})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ SIP events
    def _on_sip(self, ev: Event) -> None:
        try:
            if self.legs.handle(ev) or self.callcontrol.handle(ev):
                return
            if isinstance(ev, RequestReceived):
                if ev.request.method == "INVITE" and ev.dialog is None:
                    self._incoming_invite(ev)
                elif ev.dialog is not None and ev.request.method == "INVITE":
                    self._reinvite(ev)
                elif ev.dialog is not None:
                    self.endpoint.respond(ev.transaction, 200)  # INFO, UPDATE without SDP ...
                else:
                    self.endpoint.respond(ev.transaction, 405)
            elif isinstance(ev, DialogTerminated):
                self._dialog_ended(ev)
            elif isinstance(ev, RegistrationChanged):
                logger.info("registration %s: %s (%d contacts)", ev.aor, ev.reason, len(ev.contacts))
                if not ev.contacts:
                    self._phone_gone(aor_user(ev.aor))
            elif isinstance(ev, SourceBanned):
                self.defence.banned(ev)
        except Exception:
            logger.exception("call path failed handling %r", type(ev).__name__)

    def _reinvite(self, ev: RequestReceived) -> None:
        """A re-INVITE on a leg (session refresh, hold, new address): answer from that leg (RFC 3264 §8)."""
        ep, media = self.endpoint, self.media
        assert ep is not None and media is not None
        tag = getattr(ev.dialog, "data", None)
        call = self.calls.get(tag[0]) if isinstance(tag, tuple) else None
        leg = None if call is None else (call.caller if tag[1] == "caller" else call.agent_leg)  # type: ignore
        if leg is None or leg.sdp is None or leg.leg_id not in media.legs:
            ep.respond(ev.transaction, 481)
            return
        if not ev.request.body:  # offer in the ACK is not supported: re-offer our current session
            ep.respond(ev.transaction, 488)
            return
        try:
            offer = SessionDescription.parse(ev.request.body)
            answer, neg = self.mediasec.reanswer(leg.leg_id, ev.transport, leg.sdp, offer,
                                                 media.legs[leg.leg_id].local_port)
            media.update_leg(leg.leg_id, remote=(neg.remote_address, neg.remote_port) if neg.remote_address else None,
                             codec=neg.codec, payload_types=sdp_payload_types(offer))
        except Exception as exc:
            logger.info("[%s] re-INVITE on %s leg refused: %s", call.call_id, leg.role, exc)  # type: ignore
            ep.respond(ev.transaction, 488)
            return
        ep.respond(ev.transaction, 200, body=bytes(answer), content_type="application/sdp")

    def _phone_gone(self, extension: str) -> None:
        """Device reachability: a ready agent whose phone unregistered (or expired) is set not ready."""
        for rec in self.agents.values():
            if rec.extension == extension and rec.state == "ready":
                logger.info("agent %s: phone %s is no longer registered; not ready", rec.number, extension)
                self.set_not_ready(rec, "phone_unregistered")

    def _trunk_for(self, host: str) -> Any:
        import ipaddress

        for t in self.config.trunks.values():  # type: ignore[union-attr]
            if t.host == host:
                return t
            for net in t.accept_networks:
                try:
                    if ipaddress.ip_address(host) in ipaddress.ip_network(net, strict=False):
                        return t
                except ValueError:
                    continue
        return None

    def _incoming_invite(self, ev: RequestReceived) -> None:
        req, ep, cfg = ev.request, self.endpoint, self.config
        assert ep is not None and cfg is not None and self.media is not None
        log = CallLogger(logger, {"call_id": req.call_id})
        if self.callcontrol.phone_invite(ev):  # an agent's phone dialling (a consult of its call)
            return
        trunk = self._trunk_for(ev.source[0])
        if trunk is None:
            log.warning("INVITE from %s:%d: not a configured trunk", *ev.source)
            ep.respond(ev.transaction, 403, "Forbidden (not a trunk)")
            self.defence.not_a_trunk(ev.source)
            return
        refusal = self.mediasec.admit_trunk_invite(trunk, ev)  # TLS trunks (engine/mediasec.py)
        if refusal is not None:
            log.warning("INVITE from %s:%d over %s refused for trunk %s: %s", *ev.source, ev.transport,
                        trunk.name, refusal)
            ep.respond(ev.transaction, 403, f"Forbidden ({refusal})")
            return
        dialed = getattr(req.uri, "user", None) or ""
        caller_number = getattr(req.from_.uri, "user", None) or ""
        verdict = self.screened.check(trunk.tenant, caller_number, dialed)
        if verdict is not None:  # black/white lists (engine/screening.py)
            self.screened.screen_out(ev, trunk, caller_number, dialed, verdict)
            return
        route = find_route(cfg, trunk.tenant, dialed)
        if route is None:
            log.info("no route for dialed number %r from trunk %s: 404", dialed, trunk.name)
            ep.respond(ev.transaction, 404, "Not Found (no route for this number)")
            return
        dest, after_hours = choose_destination(cfg, route, time.time())
        flow = self._flow(dest.target) if dest is not None and dest.kind == "flow" else None
        if dest is None or (dest.kind == "flow" and flow is None):
            if after_hours:
                log.info("route %s is closed (hours %s) and has no servable after-hours destination: 480",
                         dialed, route.hours)
                ep.respond(ev.transaction, 480, "Temporarily Unavailable (closed)")
            else:
                log.warning("route %s → %s is not supported by the call path yet: 503", dialed, route.destination)
                ep.respond(ev.transaction, 503, "Service Unavailable (destination not supported)")
            return
        call = self.answer_caller(ev, trunk, caller_number, dialed, route=route.dialed_number,
                                  queue=dest.target if dest.kind == "queue" else "",
                                  mailbox=dest.target if dest.kind == "voicemail" else "")
        if call is None:
            return
        log.info("trunk %s: %s → %s answered, %s%s", trunk.name, caller_number, dialed, dest,
                 " (after hours)" if after_hours else "")
        if dest.kind == "number":  # duty numbers (engine/external.py)
            from engine.external import route_to_numbers

            route_to_numbers(self, call, route, dest, after_hours)
            return
        self._spawn(self._route(call, flow))

    def answer_caller(self, ev: RequestReceived, trunk: Any, caller_number: str, dialed: str, *, route: str,
                      **call_fields: Any) -> Call | None:
        """Answer a trunk INVITE (RFC 3264 answer on a new media leg, 200 OK) and register its :class:`Call`.

        None when the offer is unusable (400 bad SDP, 488 no common codec: already answered).
        """
        req, ep, cfg = ev.request, self.endpoint, self.config
        assert ep is not None and cfg is not None and self.media is not None
        log = CallLogger(logger, {"call_id": req.call_id})
        try:
            offer = SessionDescription.parse(req.body)
        except (SdpError, ValueError) as exc:
            ep.respond(ev.transaction, 400, f"Bad Request (SDP: {exc})"[:100])
            return None
        leg_id = f"{req.call_id}/caller"
        self._session_seq += 1
        sdp = SdpSession(cfg.media.host, int(time.time()) * 1000 + self._session_seq)
        try:
            pmap = sdp_payload_types(offer)
            leg = self.media.create_leg(leg_id, call_id=req.call_id, tenant=trunk.tenant, payload_types=pmap)
        except Exception as exc:  # no audio stream / no supported codec in the map
            log.info("no acceptable media in offer (%s): 488", exc)
            ep.respond(ev.transaction, 488, "Not Acceptable Here")
            return None
        try:
            answer, neg = self.mediasec.answer(leg_id, trunk.srtp_mode, ev.transport, sdp, offer, leg.local_port)
            self.media.update_leg(leg_id, remote=(neg.remote_address, neg.remote_port) if neg.remote_address else None,
                                  codec=neg.codec)
        except (NoCommonCodecError, SdpError, Exception) as exc:
            self.media.destroy_leg(leg_id)
            log.info("no common codec (%s): 488", exc)
            ep.respond(ev.transaction, 488, "Not Acceptable Here")
            return None
        dialog = ep.respond(ev.transaction, 200, body=bytes(answer), content_type="application/sdp")
        call = Call(req.call_id, trunk.tenant, caller_number, dialed, trunk.name, route, acd_id=self._next_caller,
                    **call_fields)
        self._next_caller += 1
        call.caller = CallLeg(leg_id, "caller", dialog=dialog, sdp=sdp, media_open=True)
        if dialog is not None:
            dialog.data = (call.call_id, "caller")
        self.calls[call.call_id] = call
        self.calls_by_acd[call.acd_id] = call
        self._store("call_journal", journal_row(call))  # crash recovery (engine/recovery.py)
        log.debug("caller leg answered (%s)", neg.codec)
        return call

    def _flow(self, name: str) -> Any:
        """The loaded flow ``name`` (loaded once; None when unknown or invalid)."""
        if name in self._flows:
            return self._flows[name]
        conf = self.config.flows.get(name)  # type: ignore[union-attr]
        flow = None
        if conf is not None:
            from ivr.flow import load_flow

            try:
                flow = load_flow(self.config.resolve_path(conf.path))  # type: ignore[union-attr]
            except Exception as exc:
                logger.error("flow %s (%s) cannot be loaded: %s", name, conf.path, exc)
        self._flows[name] = flow
        return flow

    def start_music(self, call: Call) -> None:
        """Music on hold on the caller leg (idempotent)."""
        media = self.media
        if media is None or call.caller is None or call.caller.leg_id not in media.legs:
            return
        if call.moh_player and call.moh_player in media.players:
            return
        call.moh_player = media.play(MusicSource(self._moh), leg_id=call.caller.leg_id)

    def stop_music(self, call: Call) -> None:
        media = self.media
        if media is not None and call.announce_player and call.announce_player in media.players:
            media.stop_playback(call.announce_player)
        call.announce_player = ""
        if media is not None and call.moh_player and call.moh_player in media.players:
            media.stop_playback(call.moh_player)
        call.moh_player = ""

    async def _route(self, call: Call, flow: Any, variables: dict[str, Any] | None = None) -> None:
        await self._history(call)
        if call.state is not CallState.ROUTING:
            return
        if call.mailbox:
            await self._voicemail_greeting(call)
            return
        if flow is None:
            self.start_music(call)
            self.enqueue_now(call)
            return
        from engine.ivrbridge import IvrBridge
        from ivr.events import CallStarted
        from ivr.interpreter import Interpreter
        from ivr.runner import start_call

        bridge = IvrBridge(self, call)
        interpreter = Interpreter(flow, call.call_id,
                                  variables=dict(call.data.get("ivr", {}) if variables is None else variables))
        ivr, task = start_call(interpreter, bridge, CallStarted(call.caller_number, call.dialed_number, time.time()))
        bridge.ivr = ivr
        call.ivr = (ivr, task, bridge)
        call.flow = flow.name if hasattr(flow, "name") else ""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _voicemail_greeting(self, call: Call) -> None:
        """``voicemail:`` route: greeting and beep on the caller leg, then the recording."""
        from engine.ivrbridge import prompt_audio
        from ivr.actions import PromptItem

        greeting = await asyncio.get_running_loop().run_in_executor(
            None, prompt_audio, (PromptItem("tts", "Please leave a message after the tone.", "en"),))
        beep = (8000 * np.sin(2 * np.pi * 440 * np.arange(2400) / 8000)).astype(np.int16)
        media = self.media
        if media is None or call.caller is None or call.caller.leg_id not in media.legs:
            return
        from media.player import ArraySource

        call.greeting_player = media.play(ArraySource(np.concatenate([greeting, beep])), leg_id=call.caller.leg_id)

    def _voicemail_done(self, call: Call) -> None:
        if call.state is not CallState.ENDED:
            self.hangup(call, "voicemail")

    async def _history(self, call: Call) -> None:
        store = self.engine.store
        if store is not None:
            try:
                rows = await store.aselect("cdr", {"tenant": call.tenant, "caller_number": call.caller_number})
            except Exception:
                logger.exception("[%s] history lookup failed", call.call_id)
                rows = []
            last = rows[-1] if rows else {}
            call.variables["history"] = {"calls": len(rows), "last_agent": last.get("agent", ""),
                                         "last_notes": last.get("notes", "")}

    def group_for(self, call: Call, agent: str = "") -> str:
        """The skill group a call counts for in ``cdr.grp`` and the group KPIs.

        Answered: the first of the queue's groups the answering agent belongs
        to (the group that served it); waiting or abandoned: the queue's first
        group; no queue (click-to-dial, direct transfers): the agent's first.
        """
        cfg = self.config
        queue = cfg.queues.get(call.queue) if call.queue else None  # type: ignore[union-attr]
        agent_groups = cfg.agents[agent].groups if agent in cfg.agents else ()  # type: ignore[union-attr]
        if queue is not None and queue.groups:
            return next((g for g in queue.groups if g in agent_groups), queue.groups[0])
        return agent_groups[0] if agent_groups else call.grp

    def enqueue_now(self, call: Call) -> None:
        """Put a routed call into its queue's ACD line."""
        if call.state is not CallState.ROUTING:
            return
        call.grp = self.group_for(call)
        call.fire(CallTrigger.QUEUE)
        call.queued_ts = time.time()
        qid = self.queue_ids[call.queue]
        last = self.agents.get(call.variables.get("history", {}).get("last_agent", ""))
        sticky_s = float(self.config.callpath.sticky_wait_s)  # type: ignore[union-attr]
        sticky = last is not None and last.state != "logged_out" and sticky_s > 0
        self.acd.enqueue(call.acd_id, qid, self.now(), sticky_agent=last.acd_id if sticky else -1,  # type: ignore
                         sticky_s=sticky_s if sticky else 0.0)
        self._queue_log(call, "enqueued", position=self.acd.queue_length(qid))
        self._schedule_announcement(call)
        self._pump()
        self._queue_stats(call.queue)

    def _schedule_announcement(self, call: Call) -> None:
        """``[queues.*.announcements]`` for callers without a flow (a flow announces itself)."""
        ann = self.config.queues[call.queue].announcements  # type: ignore[union-attr]
        if call.ivr is None and (ann.position or ann.expected_wait):
            self.loop.call_later(ann.interval_s, self._announce, call.call_id, call.queue)  # type: ignore
        if call.ivr is None and ann.periodic_prompt:
            self.loop.call_later(ann.periodic_interval_s or ann.interval_s, self._periodic_prompt,  # type: ignore
                                 call.call_id, call.queue)

    def _periodic_prompt(self, call_id: str, queue: str) -> None:
        """``announcements.periodic_prompt``: a file, or ``tts:TEXT``, every ``periodic_interval_s``."""
        from ivr.actions import PromptItem

        call = self.calls.get(call_id)
        if call is None or call.queue != queue or call.ivr is not None \
                or call.state not in (CallState.QUEUED, CallState.OFFERING):
            return
        ann = self.config.queues[queue].announcements  # type: ignore[union-attr]
        if not call.announce_player and call.state is CallState.QUEUED:
            prompt = ann.periodic_prompt
            item = (PromptItem("tts", prompt[4:], "en") if prompt.startswith("tts:")
                    else PromptItem("file", self.config.resolve_path(prompt), ""))  # type: ignore[union-attr]
            self._spawn(self._play_announcement(call, item))
        self.loop.call_later(ann.periodic_interval_s or ann.interval_s, self._periodic_prompt,  # type: ignore
                             call_id, queue)

    def _announce(self, call_id: str, queue: str) -> None:
        from ivr.actions import PromptItem

        call = self.calls.get(call_id)
        if call is None or call.queue != queue or call.state is not CallState.QUEUED or call.announce_player:
            return
        ann = self.config.queues[queue].announcements  # type: ignore[union-attr]
        parts = []
        if ann.position:
            parts.append(f"You are number {self.acd.position(call.acd_id)} in the queue.")
        if ann.expected_wait:
            minutes = max(1, round(self.acd.expected_wait_s(call.acd_id) / 60))
            parts.append(f"The expected wait is about {minutes} minute{'s' if minutes > 1 else ''}.")
        self._spawn(self._play_announcement(call, PromptItem("tts", " ".join(parts), "en")))
        self.loop.call_later(ann.interval_s, self._announce, call_id, queue)  # type: ignore[union-attr]

    async def _play_announcement(self, call: Call, item: Any) -> None:
        from engine.ivrbridge import prompt_audio
        from media.player import ArraySource

        audio = await asyncio.get_running_loop().run_in_executor(None, prompt_audio, (item,))
        media = self.media
        if audio.size == 0 or media is None or call.state is not CallState.QUEUED or call.caller is None \
                or call.caller.leg_id not in media.legs:
            return
        self.stop_music(call)
        call.announce_player = media.play(ArraySource(audio), leg_id=call.caller.leg_id)

    def dequeue(self, call: Call, reason: str) -> None:
        """The IVR takes the caller out of the queue (exit key, max wait): back to routing."""
        if call.state not in (CallState.QUEUED, CallState.OFFERING):
            return
        self._stop_ringing(call)
        self.acd.abandon(call.acd_id, self.now())
        call.fire(CallTrigger.DEQUEUE)
        self.stop_music(call)
        self._queue_log(call, f"dequeued_{reason}")
        self._pump()
        self._queue_stats(call.queue)

    def _queue_stats(self, queue: str) -> None:
        qid = self.queue_ids[queue]
        q = self.config.queues[queue]  # type: ignore[union-attr]
        waiting = [self.calls_by_acd[c] for c in self.acd.waiting_callers(qid) if c in self.calls_by_acd]
        for c in waiting:  # position / expected wait for the flows' announcements
            if c.ivr is not None:
                c.ivr[2].queue_updated(self.acd.position(c.acd_id), self.acd.expected_wait_s(c.acd_id))
        now = time.time()
        self.engine.bus.publish("queue.stats", {
            "queue": queue, "waiting": len(waiting),
            "longest_wait_s": round(max((now - c.queued_ts for c in waiting if c.queued_ts), default=0.0), 3),
            "free_agents": len(self.acd.free_agents(qid))}, tenant=q.tenant, queue=queue, groups=q.groups)

    # ------------------------------------------------------------------ ACD decisions
    def _pump(self) -> None:
        """Carry out every pending ACD decision, then re-arm the ACD timer."""
        for d in self.acd.pop_decisions():
            kind = d[0]
            try:
                if kind == DecisionKind.OFFER:
                    self._offer(self.calls_by_acd[d[1]], self.agents_by_acd[d[2]])
                elif kind == DecisionKind.OFFER_CANCELLED:
                    call = self.calls_by_acd.get(d[1])
                    if call is not None and call.offered_agent == self.agents_by_acd[d[2]].number:
                        self._stop_ringing(call)
                        self._queue_log(call, "offer_cancelled", agent=self.agents_by_acd[d[2]].number)
                        if call.state is CallState.OFFERING:
                            call.fire(CallTrigger.REQUEUE)
                    self._sync_agent(self.agents_by_acd[d[2]])
                elif kind == DecisionKind.AGENT_NOT_READY:
                    rec = self.agents_by_acd[d[1]]
                    rec.reason_code = "ring_no_answer"
                    self._sync_agent(rec, force=True)
                elif kind in (DecisionKind.TIMEOUT, DecisionKind.QUEUE_FULL):
                    call = self.calls_by_acd.get(d[1])
                    if call is not None:
                        reason = "queue_timeout" if kind == DecisionKind.TIMEOUT else "queue_full"
                        self._queue_log(call, reason)
                        if call.ivr is not None:
                            self.stop_music(call)
                            call.fire(CallTrigger.DEQUEUE)
                            call.ivr[2].queue_left("timeout" if kind == DecisionKind.TIMEOUT else "closed")
                        else:
                            self._queue_exit(call, reason)
            except Exception:
                logger.exception("ACD decision %r failed", d)
        if self._acd_timer is not None:
            self._acd_timer.cancel()
            self._acd_timer = None
        deadline = self.acd.next_deadline()
        if deadline != float("inf"):
            self._acd_timer = self.loop.call_at(deadline, self._acd_due)  # type: ignore[union-attr]

    def _queue_exit(self, call: Call, reason: str) -> None:
        """ACD timeout / queue full: the queue's ``timeout_destination`` (queue full: ``full_destination``,
        else ``timeout_destination``): voicemail, another queue or a flow; else hang up."""
        from engine.config import parse_destination_or_none

        q = self.config.queues[call.queue]  # type: ignore[union-attr]
        text = q.timeout_destination if reason == "queue_timeout" else (q.full_destination or q.timeout_destination)
        dest = parse_destination_or_none(text)
        flow = self._flow(dest.target) if dest is not None and dest.kind == "flow" else None
        if flow is not None:
            call.fire(CallTrigger.DEQUEUE)
            self.stop_music(call)
            CallLogger(logger, {"call_id": call.call_id}).info("%s: queue %s → flow %s", reason, call.queue,
                                                               dest.target)  # type: ignore[union-attr]
            self._spawn(self._route(call, flow))
        elif dest is not None and dest.kind == "number":
            from engine.external import connect_numbers, split_numbers

            call.fire(CallTrigger.DEQUEUE)
            connect_numbers(self, call, split_numbers(dest.target))
        elif dest is not None and dest.kind == "voicemail":
            call.fire(CallTrigger.DEQUEUE)
            self.stop_music(call)
            call.mailbox = dest.target
            self._spawn(self._voicemail_greeting(call))
        elif dest is not None and dest.kind == "queue" and dest.target in self.queue_ids:
            call.fire(CallTrigger.DEQUEUE)
            call.queue = dest.target
            self.enqueue_now(call)
        else:
            self.hangup(call, reason)

    def _acd_due(self) -> None:
        self._acd_timer = None
        self.acd.advance(self.now())
        self._pump()

    def _contact_of(self, extension: str) -> Any:
        loc = self.registrar.location if self.registrar else None
        if loc is None:
            return None
        for aor in loc.aors():
            if aor_user(aor) == extension:
                bindings = loc.lookup(aor)
                if bindings:
                    return bindings[0]
        return None

    def _offer(self, call: Call, rec: AgentRecord, *, auto_answer: bool = False) -> None:
        cfg, ep, media = self.config, self.endpoint, self.media
        assert cfg is not None and ep is not None and media is not None
        log = CallLogger(logger, {"call_id": call.call_id})
        call.fire(CallTrigger.OFFER)
        rec.call_id = call.call_id
        self._sync_agent(rec)
        binding = self._contact_of(rec.extension)
        if binding is None:
            log.warning("agent %s: extension %s is not registered; set not ready", rec.number, rec.extension)
            self.acd.decline(call.acd_id, rec.acd_id, self.now())
            self.acd.not_ready(rec.acd_id, self.now())
            rec.reason_code = "phone_unregistered"
            self._sync_agent(rec, force=True)
            call.fire(CallTrigger.REQUEUE)
            return
        call.offered_agent = rec.number
        call.ring_started_ts = time.time()
        q = cfg.queues[call.queue]
        out = self.legs.dial_extension(
            rec.extension, call_id=call.call_id, tenant=call.tenant, caller_number=call.caller_number,
            ring_timeout_s=q.ring_timeout_s, leg_id=f"{call.call_id}/agent-{rec.number}-{call.ring_no_answer_count}",
            agent=rec.number, purpose="offer", on_event=lambda ev: self._agent_leg_event(call, ev),
            headers=auto_answer_headers(cfg.sip.domain) if auto_answer or cfg.agents[rec.number].auto_answer else ())
        call.agent_leg = CallLeg(out.leg_id, "agent", invite_txn=out.invite_txn, sdp=out.sdp,
                                 media_open=out.media_open, out=out)
        self._queue_log(call, "offered", agent=rec.number)
        log.info("offering to agent %s at %s (%s)", rec.number, binding.contact, binding.source)
        self.engine.bus.publish("call.ringing", self._screen_pop(call, rec), tenant=call.tenant, agent=rec.number,
                                queue=call.queue, groups=q.groups)

    def request_answer(self, call: Call) -> None:
        """``call.answer``: re-send the ringing offer asking the phone to answer at once.

        The INVITE without auto-answer headers is CANCELled and the same agent
        (still reserved by the ACD) gets a new INVITE carrying them
        (:func:`auto_answer_headers`); a phone that ignores them simply rings again.
        """
        if call.state is not CallState.OFFERING or call.agent_leg is None or call.agent_leg.invite_txn is None:
            raise Conflict(f"call {call.call_id} is not ringing at an agent (state {call.state.value})")
        rec = self.agents[call.offered_agent]
        CallLogger(logger, {"call_id": call.call_id}).info("agent %s: re-offer with auto-answer", rec.number)
        self._stop_ringing(call)
        self._offer(call, rec, auto_answer=True)

    def _screen_pop(self, call: Call, rec: AgentRecord) -> dict[str, Any]:
        history = call.variables.get("history", {"calls": 0, "last_agent": "", "last_notes": ""})
        return {**call.describe(), "agent": rec.number, "extension": rec.extension,
                "variables": {k: v for k, v in call.variables.items() if k != "history"},
                "attached_data": call.data, "history": history}

    def _stop_ringing(self, call: Call) -> None:
        """CANCEL the INVITE to the offered agent (or BYE a late answer) and drop its media leg."""
        if call.ring_timer is not None:
            call.ring_timer.cancel()
            call.ring_timer = None
        leg = call.agent_leg
        if leg is None or call.state is CallState.TALKING:
            return
        call.agent_leg = None
        if call.ring_started_ts is not None:
            call.ring_s += time.time() - call.ring_started_ts
            call.ring_started_ts = None
        if leg.out is not None:
            leg.out.cancel("offer_stopped")
        self._drop_leg(leg)
        call.offered_agent = ""

    def _drop_leg(self, leg: CallLeg) -> None:
        if leg.media_open and self.media is not None and leg.leg_id in self.media.legs:
            self.media.destroy_leg(leg.leg_id)
        leg.media_open = False
        leg.ended = True

    def _agent_leg_event(self, call: Call, ev: LegEvent) -> None:
        """Progress of the offer to the agent's phone (engine/legs.py), and its end once answered."""
        leg = call.agent_leg
        if leg is None or leg.out is not ev.leg:
            return
        if isinstance(ev, LegAnswered) and call.state is CallState.OFFERING:
            self._answered(call, ev.leg)
        elif isinstance(ev, LegFailed) and call.state is CallState.OFFERING:
            leg.invite_txn = None
            rec = self.agents.get(call.offered_agent)
            if ev.outcome is LegOutcome.NO_ANSWER and rec is not None and self.callcontrol.forward(call, rec):
                return
            if ev.outcome in (LegOutcome.NO_ANSWER, LegOutcome.TIMEOUT):
                self._agent_failed(call, "ring_no_answer" if ev.outcome is LegOutcome.NO_ANSWER else "timeout",
                                   no_answer=True)
            elif ev.outcome is LegOutcome.UNREACHABLE:
                self._agent_failed(call, "phone_unregistered", no_answer=False)
            elif ev.status == 488 and ev.reason.startswith("unusable SDP"):
                self._agent_failed(call, "bad_sdp", no_answer=False)
            else:
                self._agent_failed(call, f"rejected_{ev.status}", no_answer=False)
        elif isinstance(ev, LegEnded):
            leg.ended = True
            if self.leg_hook is not None and self.leg_hook(call, ev):
                return
            reason = "agent_hangup" if ev.reason == "bye_received" else ev.reason
            from engine.ivrbridge import start_post_call_flow

            if reason == "agent_hangup" and start_post_call_flow(self, call):
                return  # the caller stays for the flow named by the post_call_flow variable
            self.hangup(call, reason)
        elif self.leg_hook is not None:
            self.leg_hook(call, ev)

    def _agent_failed(self, call: Call, why: str, *, no_answer: bool) -> None:
        rec = self.agents.get(call.offered_agent)
        if rec is None or call.state is not CallState.OFFERING:
            return
        CallLogger(logger, {"call_id": call.call_id}).info("agent %s: %s", rec.number, why)
        self._stop_ringing(call)
        call.fire(CallTrigger.REQUEUE)
        if no_answer:
            call.ring_no_answer_count += 1
        self._queue_log(call, why, agent=rec.number)
        if no_answer:
            self.acd.no_answer(call.acd_id, rec.acd_id, self.now())
        else:
            self.acd.decline(call.acd_id, rec.acd_id, self.now())
            rec.rejects += 1
            limit = self.config.callpath.rejects_before_not_ready  # type: ignore[union-attr]
            if rec.rejects >= limit and self.acd.agent_state(rec.acd_id) == AgentState.READY:
                self.acd.not_ready(rec.acd_id, self.now())
                rec.reason_code = "phone_rejects"
                rec.rejects = 0
                self._sync_agent(rec, force=True)
        self._sync_agent(rec)
        self._pump()

    def _answered(self, call: Call, out: OutgoingLeg) -> None:
        media, leg = self.media, call.agent_leg
        assert media is not None and leg is not None and call.caller is not None
        log = CallLogger(logger, {"call_id": call.call_id})
        rec = self.agents[call.offered_agent]
        leg.invite_txn = None
        leg.dialog = out.dialog
        if call.ring_timer is not None:
            call.ring_timer.cancel()
            call.ring_timer = None
        if call.ring_started_ts is not None:
            call.ring_s += time.time() - call.ring_started_ts
            call.ring_started_ts = None
        call.fire(CallTrigger.ANSWER)
        rec.rejects = 0
        call.agent = rec.number
        call.grp = self.group_for(call, rec.number)
        call.answered_ts = time.time()
        self.acd.accept(call.acd_id, rec.acd_id, self.now())
        self.stop_music(call)
        self._end_ivr(call)
        if call.room and call.room in media.rooms:  # back from a transfer to a queue: same room and recording
            self.callcontrol.rejoin(call)
        else:
            call.room = f"room-{call.call_id}"
            media.create_room(call.room, call.tenant)
            media.join(call.room, call.caller.leg_id)
            media.join(call.room, leg.leg_id)
            self._start_recording(call)
        wait_s = call.answered_ts - (call.queued_ts or call.answered_ts)
        self._queue_log(call, "answered", agent=rec.number, wait_s=round(wait_s, 3))
        self._sync_agent(rec)
        self._pump()
        log.info("agent %s answered after %.1f s in queue", rec.number, wait_s)
        q = self.config.queues[call.queue]  # type: ignore[union-attr]
        self.engine.bus.publish("call.answered", {**call.describe(), "agent": rec.number, "wait_s": round(wait_s, 3)},
                                tenant=call.tenant, agent=rec.number, queue=call.queue, groups=q.groups)
        self._queue_stats(call.queue)

    def _start_recording(self, call: Call) -> None:
        cfg = self.config
        if self.recorder is None or cfg is None or not should_record(
                cfg, agent=call.agent, queue=call.queue, trunk=call.trunk, caller_number=call.caller_number,
                dialed_number=call.dialed_number, wall_time=time.time()):
            return
        assert self.media is not None and call.caller is not None and call.agent_leg is not None
        rid = self.recorder.start(call.call_id, datetime.datetime.now(datetime.timezone.utc), call.tenant)
        self.media.record(call.room, "recorder", self.recorder, [[call.caller.leg_id], [call.agent_leg.leg_id]],
                          recording_id=rid)
        call.recorded = True

    def _stop_recording(self, call: Call) -> None:
        if not call.recorded or self.media is None or call.room not in self.media.rooms:
            return
        fut = self.media.stop_recording(call.room, "recorder")
        if fut is None:
            return
        loop = self.loop
        assert loop is not None

        def done(f: Any) -> None:
            try:
                res = f.result()
            except Exception:
                logger.exception("[%s] recording failed", call.call_id)
                return
            if res.path is None:
                return
            row = {"call_id": call.call_id, "tenant": call.tenant, "path": str(res.path),
                   "start_ts": call.answered_ts or call.start_ts, "duration_s": round(res.duration_s, 3),
                   "agent": call.agent, "grp": call.grp, "queue": call.queue,
                   "caller_number": call.caller_number,
                   "format": self.config.recording.format, "channels": 2}  # type: ignore[union-attr]
            loop.call_soon_threadsafe(self._store, "recordings", row)

        fut.add_done_callback(done)

    # ------------------------------------------------------------------ hang-up
    def _dialog_ended(self, ev: DialogTerminated) -> None:
        tag = getattr(ev.dialog, "data", None)
        if not isinstance(tag, tuple):
            return
        call = self.calls.get(tag[0])
        if call is None:
            return
        side = tag[1]
        leg = call.caller if side == "caller" else call.agent_leg
        if leg is not None:
            leg.ended = True
        if side == "caller":
            reason = "caller_hangup" if ev.reason == "bye_received" else ev.reason
        else:
            reason = "agent_hangup" if ev.reason == "bye_received" else ev.reason
            from engine.ivrbridge import start_post_call_flow

            if reason == "agent_hangup" and start_post_call_flow(self, call):
                return  # the caller stays for the flow named by the post_call_flow variable
        self.hangup(call, reason)

    def _end_ivr(self, call: Call) -> None:
        """Stop the flow (bridged or hung up): its prompts stop, its task is cancelled."""
        if call.ivr is None:
            return
        ivr, task, bridge = call.ivr
        call.ivr = None
        for player in list(bridge.players):
            if self.media is not None and player in self.media.players:
                self.media.stop_playback(player)
        bridge.players.clear()
        call.variables.update({k: v for k, v in ivr.interpreter.call_data.items() if k not in call.variables})
        task.cancel()

    def hangup(self, call: Call, reason: str) -> None:
        """End every leg of ``call`` (BYE where the dialog is still up) and write its records."""
        if call.state is CallState.ENDED:
            return
        log = CallLogger(logger, {"call_id": call.call_id})
        previous = call.state
        call.fire(CallTrigger.END)
        self.callcontrol.call_ending(call)
        in_voicemail = self.voicemail.recording(call) or reason == "voicemail"
        self.voicemail.stop(call, reason)
        self._end_ivr(call)
        self.supervision.call_ended(call)
        call.end_ts = time.time()
        call.end_reason = reason
        ep = self.endpoint
        if previous in (CallState.QUEUED, CallState.OFFERING):
            self._stop_ringing(call)
            try:
                self.acd.abandon(call.acd_id, self.now())
            except Exception:
                pass
            call.disposition = "abandoned" if reason == "caller_hangup" else reason
            self._queue_log(call, "abandoned" if reason == "caller_hangup" else reason,
                            wait_s=round(call.end_ts - (call.queued_ts or call.end_ts), 3))
        elif previous in (CallState.TALKING, CallState.POST_CALL):
            call.disposition = "answered"
        else:
            call.disposition = "voicemail" if in_voicemail else (call.disposition or reason)  # preset: "blocked"
        self._stop_recording(call)
        if self.media is not None and call.room and call.room in self.media.rooms:
            self.media.destroy_room(call.room)
        for leg in (call.caller, call.agent_leg):
            if leg is None:
                continue
            if leg.out is not None:
                leg.out.hangup(reason)
            elif not leg.ended and leg.dialog is not None and ep is not None and not leg.dialog.terminated:
                try:
                    ep.bye(leg.dialog)
                except Exception as exc:
                    log.debug("BYE on %s leg not sent: %s", leg.role, exc)
            self._drop_leg(leg)
        if previous is CallState.TALKING and call.agent:
            self.release_agent(self.agents[call.agent], call)
        self.calls.pop(call.call_id, None)
        self.calls_by_acd.pop(call.acd_id, None)
        self._store("cdr", call.cdr_row())
        log.info("call ended: %s (%s)", reason, call.disposition)
        groups = self.config.queues[call.queue].groups if call.queue else ()  # type: ignore[union-attr]
        self.engine.bus.publish("call.ended", {**call.describe(), "reason": reason, "disposition": call.disposition,
                                               "agent": call.agent},
                                tenant=call.tenant, agent=call.agent or None, queue=call.queue or None, groups=groups)
        self._pump()
        if call.queue:
            self._queue_stats(call.queue)

    def release_agent(self, rec: AgentRecord, call: Call) -> None:
        """The agent's part of ``call`` is over: busy → wrapup for its ``wrapup_s`` (else the queue's, else 0).

        No-op unless the agent is busy on this very call (it may have left it by a transfer).
        """
        if rec.call_id != call.call_id or self.acd.agent_state(rec.acd_id) != AgentState.BUSY:
            return
        self.acd.call_ended(rec.acd_id, self.now())
        self._sync_agent(rec)
        conf = self.config.agents[rec.number]  # type: ignore[union-attr]
        queue = self.config.queues.get(call.queue) if call.queue else None  # type: ignore[union-attr]
        wrapup_s = conf.wrapup_s if conf.wrapup_s is not None else (queue.wrapup_s if queue is not None else 0)
        self._cancel_wrapup(rec)
        rec.wrapup_timer = self.loop.call_later(wrapup_s, self._wrapup_expired, rec.number)  # type: ignore

    def return_agent(self, rec: AgentRecord, call: Call) -> None:
        """The agent was held busy for ``call`` but never talked on it (a transfer or consult target that
        did not answer): straight back to ready, no wrap-up, and the ACD may offer it the next caller.

        No-op unless the agent is busy on this very call.
        """
        if rec.call_id != call.call_id or self.acd.agent_state(rec.acd_id) != AgentState.BUSY:
            return
        self.acd.call_ended(rec.acd_id, self.now())
        self.acd.wrapup_done(rec.acd_id, self.now())
        self._sync_agent(rec)
        self._pump()

    def _wrapup_expired(self, number: str) -> None:
        rec = self.agents[number]
        rec.wrapup_timer = None
        if rec.state == "wrapup":
            self.acd.wrapup_done(rec.acd_id, self.now())
            self._sync_agent(rec)
            self._pump()

    # ------------------------------------------------------------------ media events
    def _on_media(self, ev: MediaEvent) -> None:
        if isinstance(ev, PlaybackFinished) and self.screened.playback_finished(ev.player_id):
            return
        if isinstance(ev, RtpTimedOut):
            call = self._call_of_leg(ev.leg_id)
            watched = call is not None and (
                (call.caller is not None and ev.leg_id == call.caller.leg_id)
                or (call.state is CallState.TALKING and call.agent_leg is not None
                    and ev.leg_id == call.agent_leg.leg_id))  # not a phone still ringing, not a consult leg
            if call is not None and watched:
                CallLogger(logger, {"call_id": call.call_id}).warning(
                    "no RTP on leg %s for %.1f s: hanging up", ev.leg_id, ev.silent_s)
                self.hangup(call, "rtp_timeout")
            return
        if isinstance(ev, PlaybackFinished):
            call = self._call_of_leg(ev.leg_id)
            if call is not None and call.announce_player == ev.player_id:
                call.announce_player = ""
                if call.state is CallState.QUEUED:
                    self.start_music(call)
            elif call is not None and call.greeting_player == ev.player_id:
                call.greeting_player = ""
                if ev.reason == "completed" and call.state is not CallState.ENDED:
                    self.voicemail.start(call, call.mailbox, on_done=lambda path, s: self._voicemail_done(call))
            elif call is not None and call.ivr is not None:
                call.ivr[2].prompt_finished(ev.player_id)
        elif isinstance(ev, DtmfReceived):
            if any(tap(ev) for tap in self.dtmf_taps):
                return
            call = self._call_of_leg(ev.leg_id)
            if call is not None and self.voicemail.recording(call):
                if ev.digit == "#":
                    self.voicemail.stop(call, "#")
            elif call is not None and call.ivr is not None and call.caller is not None \
                    and ev.leg_id == call.caller.leg_id:
                call.ivr[2].dtmf(ev.digit)
        else:
            logger.debug("media event %r", ev)

    def _call_of_leg(self, leg_id: str | None) -> Call | None:
        if not leg_id:
            return None
        return self.calls.get(leg_id.rsplit("/", 1)[0])

    # ------------------------------------------------------------------ snapshots
    def _snapshot_agents(self, session: Any) -> list[dict[str, Any]]:
        out = []
        for number, rec in sorted(self.agents.items()):
            conf = self.config.agents[number]  # type: ignore[union-attr]
            if session.sees(tenant=rec.tenant, groups=set(conf.groups), agent=number):
                out.append({**rec.describe(), "name": conf.name, "groups": list(conf.groups),
                            "skills": dict(conf.skills)})
        return out

    def _snapshot_calls(self, session: Any) -> list[dict[str, Any]]:
        out = []
        for call in self.calls.values():
            groups = set(self.config.queues[call.queue].groups) if call.queue else set()  # type: ignore
            agent = call.agent or call.offered_agent or None
            if session.role == "agent" and agent != session.agent:
                continue
            if session.sees(tenant=call.tenant, groups=groups, agent=agent or ""):
                out.append(call.describe())
        return out

    def _snapshot_queues(self, session: Any) -> list[dict[str, Any]]:
        out = []
        now = time.time()
        for name, qid in sorted(self.queue_ids.items()):
            q = self.config.queues[name]  # type: ignore[union-attr]
            if not session.sees(tenant=q.tenant, groups=set(q.groups)):
                continue
            waiting = [self.calls_by_acd[c] for c in self.acd.waiting_callers(qid) if c in self.calls_by_acd]
            out.append({"queue": name, "tenant": q.tenant, "groups": list(q.groups), "strategy": q.strategy,
                        "waiting": len(waiting), "free_agents": len(self.acd.free_agents(qid)),
                        "longest_wait_s": round(max((now - c.queued_ts for c in waiting if c.queued_ts),
                                                    default=0.0), 3)})
        return out


def find_centre(engine: Any) -> CallCentre:
    """The engine's :class:`CallCentre` service (for control ops)."""
    from engine.errors import Unavailable

    for s in engine.services:
        if isinstance(s, CallCentre):
            return s
    raise Unavailable("the call path is not running (no SIP/media service)")
