"""The dialer's call port on the real call path: trunk legs, AMD on the media, the ACD for agents.

Theory of operation
-------------------
:class:`CentrePort` carries out :mod:`engine.dialer` actions with the
:class:`engine.callpath.CallCentre`:

* ``dial``: :meth:`engine.legs.Legs.dial_trunk` on the campaign's trunk (or
  the tenant's first) with the campaign's caller id and ring timeout,
  purpose ``dialer`` (so the toll-fraud policy sees it).  Leg events become
  progress: ``LegAnswered`` → ``answered``; ``LegFailed`` → ``failed`` with
  the leg's outcome (``busy``, ``no_answer``, ``invalid_number``,
  ``congestion``, ``rejected``, ``timeout``; ``cancelled``/``denied``/
  ``unreachable`` → ``failed``) and SIP status; ``LegEnded`` → the far end
  hung up.
* ``start_amd``: the answered leg joins a private room with a recorder
  member whose sink feeds :class:`media.amd.AmdDetector` frame by frame;
  its decision (``human``/``machine``/``silence``/``not_sure``) comes back
  on the loop, the room is removed.
* ``connect_agent``: the answered leg becomes the caller leg of an
  outbound :class:`engine.calls.Call` (``direction = "outbound"``, route
  ``campaign:NAME``) queued in the campaign's ``queue`` (else the first
  queue of the tenant whose groups meet the campaign's).  From there the
  inbound machinery does the rest: the ACD offers a free agent, the phone
  rings with the screen pop (``call.ringing`` carries ``variables.campaign``
  with the record and its fields), answer bridges both in a room, the
  recorder runs, BYE ends the call, the CDR is written, wrap-up applies.
  Preview calls prefer their agent (the ACD's sticky wait).  The port
  watches the bus (``call.answered`` → ``connected``, ``call.ended`` →
  ``ended`` with the agent's wrap-up seconds).
* ``play``: a prompt (a file, or ``tts:TEXT`` by espeak-ng) on the leg
  (taken out of the queue first when it was waiting: the drop message),
  then hang-up after its length.  A notification with a ``confirm_digit``
  stays up ``confirm_timeout_s`` longer, and the callee's digits reach the
  dialer: the port is a DTMF tap of the call path
  (:attr:`engine.callpath.CallCentre.dtmf_taps`), which the media engine's
  :class:`media.events.DtmfReceived` (RFC 4733 telephone-events, or
  in-band tones, on the callee leg ``CALL_ID/callee``) reaches before the
  call path's own routing; the port takes the digits of its legs that are
  not an engine call (survey calls are: their IVR gets the digits) and
  reports progress ``dtmf``.
* ``run_flow``: an IVR flow (survey) on the leg through the call path's
  flow runner, with the record's fields as call variables.
* ``agent_counts``: the campaign's agents (its ``agents`` plus members of
  its ``groups``) that are ``ready`` (idle) or on a call / in wrap-up.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from engine.app import CallLogger
from engine.config import Campaign
from engine.dialer import AgentCounts, ConnectAgent, PlaceCall, PlayMessage, RunFlow
from media.amd import AmdDecision, AmdDetector

logger = logging.getLogger(__name__)

_LEG_OUTCOMES = {"busy": "busy", "no_answer": "no_answer", "invalid_number": "invalid_number",
                 "congestion": "congestion", "rejected": "rejected", "timeout": "timeout"}
RATE = 8000

Progress = Callable[..., None]


class _AmdSink:
    """A :class:`media.engine.FrameSink` feeding the detector; reports once, on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Callable[[AmdDecision], None]) -> None:
        self.detector = AmdDetector()
        self.loop = loop
        self.done = done
        self.reported = False

    def write_frame(self, frame: np.ndarray) -> None:
        if self.reported:
            return
        decision = self.detector.feed(frame[0])
        if decision is not None:
            self.reported = True
            self.loop.call_soon_threadsafe(self.done, decision)

    def close(self) -> None:
        pass


@dataclass(slots=True)
class _Out:
    action: PlaceCall
    campaign: Campaign
    out: Any = None                  # engine.legs.OutgoingLeg
    call: Any = None                 # engine.calls.Call once handed to the ACD or a flow
    amd_room: str = ""
    player: str = ""
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    done: bool = False


class CentrePort:
    """:class:`engine.campaign_service.CallPort` over a running :class:`CallCentre`."""

    def __init__(self, centre: Any) -> None:
        self.centre = centre
        self.progress: Progress | None = None
        self.calls: dict[str, _Out] = {}
        centre.engine.bus.add(self)
        centre.dtmf_taps.append(self._dtmf)

    def bind(self, progress: Progress) -> None:
        self.progress = progress

    def close(self) -> None:
        self.centre.engine.bus.remove(self)
        if self._dtmf in self.centre.dtmf_taps:
            self.centre.dtmf_taps.remove(self._dtmf)
        for o in self.calls.values():
            for t in o.timers:
                t.cancel()

    def _report(self, call_id: str, kind: str, **info: Any) -> None:
        if self.progress is not None:
            self.progress(call_id, kind, **info)

    # ------------------------------------------------------------ dialling

    def _trunk(self, campaign: Campaign) -> str:
        trunks = self.centre.config.trunks
        if campaign.trunk:
            return campaign.trunk
        for name, t in sorted(trunks.items()):
            if t.tenant == campaign.tenant:
                return name
        raise LookupError(f"tenant {campaign.tenant} has no trunk to dial out")

    def _creator_role(self, campaign: Campaign) -> str:
        from engine.campaign_service import find_campaigns
        from engine.errors import Unavailable

        try:
            return find_campaigns(self.centre.engine).creator_role(campaign)
        except Unavailable:  # a port driven without the campaign service (tests, embedding)
            return ""

    def dial(self, action: PlaceCall, campaign: Campaign) -> None:
        o = _Out(action, campaign)
        self.calls[action.call_id] = o
        o.out = self.centre.legs.dial_trunk(
            self._trunk(campaign), action.number, call_id=action.call_id, tenant=campaign.tenant,
            caller_number=action.caller_number or None, ring_timeout_s=action.ring_timeout_s,
            leg_id=f"{action.call_id}/callee", agent=action.agent, purpose="dialer",
            on_event=lambda ev: self._leg_event(action.call_id, ev),
            role=self._creator_role(campaign))  # toll fraud: the role of the campaign's creator

    def _leg_event(self, call_id: str, ev: Any) -> None:
        from engine.legs import LegAnswered, LegEnded, LegFailed

        o = self.calls.get(call_id)
        if o is None or o.done:
            return
        if isinstance(ev, LegAnswered):
            self._report(call_id, "answered")
        elif isinstance(ev, LegFailed):
            self._finish(o)
            self._report(call_id, "failed", outcome=_LEG_OUTCOMES.get(ev.outcome.value, "failed"), status=ev.status)
        elif isinstance(ev, LegEnded):
            if o.call is not None and o.call.state.value != "ended":
                if o.call.caller is not None:
                    o.call.caller.ended = True
                self.centre.hangup(o.call, "caller_hangup")  # call.ended on the bus reports it
            else:
                self._finish(o)
                self._report(call_id, "ended", reason=ev.reason)

    def _finish(self, o: _Out) -> None:
        o.done = True
        self.calls.pop(o.action.call_id, None)
        for t in o.timers:
            t.cancel()
        self._stop_amd(o)
        media = self.centre.media
        if o.player and media is not None and o.player in media.players:
            media.stop_playback(o.player)

    # ------------------------------------------------------------ answering-machine detection

    def start_amd(self, call_id: str) -> None:
        o = self.calls[call_id]
        media = self.centre.media
        o.amd_room = f"amd-{call_id}"
        media.create_room(o.amd_room, o.campaign.tenant)
        media.join(o.amd_room, o.out.leg_id, hears=())
        sink = _AmdSink(asyncio.get_running_loop(), lambda d: self._amd_done(call_id, d))
        media.record(o.amd_room, "amd", sink, [[o.out.leg_id]])

    def _stop_amd(self, o: _Out) -> None:
        media = self.centre.media
        if o.amd_room and media is not None and o.amd_room in media.rooms:
            try:
                media.stop_recording(o.amd_room, "amd")
            except Exception:
                pass
            media.destroy_room(o.amd_room)
        o.amd_room = ""

    def _amd_done(self, call_id: str, decision: AmdDecision) -> None:
        o = self.calls.get(call_id)
        if o is None or o.done:
            return
        self._stop_amd(o)
        CallLogger(logger, {"call_id": call_id}).info("AMD: %s (%s, greeting %d ms, %d words)",
                                                      decision.result.value, decision.reason,
                                                      decision.greeting_ms, decision.words)
        self._report(call_id, "amd", result=decision.result.value, detail=decision.describe())

    # ------------------------------------------------------------ agents

    def _campaign_agents(self, campaign: Campaign) -> list[Any]:
        groups = set(campaign.groups)
        conf = self.centre.config.agents
        return [rec for number, rec in self.centre.agents.items()
                if number in campaign.agents or groups & set(conf[number].groups)]

    def agent_counts(self, campaign: Campaign) -> AgentCounts:
        idle, busy = [], 0
        for rec in self._campaign_agents(campaign):
            if rec.state == "ready":
                idle.append(rec.number)
            elif rec.state in ("reserved", "busy", "wrapup"):
                busy += 1
        return AgentCounts(idle=len(idle), busy=busy, idle_agents=tuple(idle))

    def _queue(self, campaign: Campaign) -> str:
        cfg = self.centre.config
        if campaign.queue:
            return campaign.queue
        groups = set(campaign.groups)
        for name, q in sorted(cfg.queues.items()):
            if q.tenant == campaign.tenant and groups & set(q.groups):
                return name
        raise LookupError(f"campaign {campaign.name}: no queue of tenant {campaign.tenant} serves its groups")

    def _engine_call(self, o: _Out, queue: str, route_flow: str = "") -> Any:
        from engine.calls import Call, CallLeg

        centre = self.centre
        a = o.action
        call = Call(a.call_id, o.campaign.tenant, o.campaign.caller_number or o.out.caller_number or "",
                    a.number, o.out.target.trunk, f"campaign:{o.campaign.name}", queue=queue,
                    acd_id=centre._next_caller, direction="outbound")
        centre._next_caller += 1
        call.caller = CallLeg(o.out.leg_id, "caller", sdp=o.out.sdp, media_open=True, out=o.out)
        call.caller.dialog = o.out.dialog
        call.answered_ts = None
        call.flow = route_flow
        centre.calls[call.call_id] = call
        from engine.recovery import journal_row
        centre._store("call_journal", journal_row(call))  # crash recovery (engine/recovery.py)
        centre.calls_by_acd[call.acd_id] = call
        o.call = call
        return call

    def connect_agent(self, action: ConnectAgent, campaign: Campaign) -> None:
        o = self.calls[action.call_id]
        call = self._engine_call(o, self._queue(campaign))
        call.variables["campaign"] = action.screen_pop
        # Preview: the agent the call was placed for is preferred (the ACD's sticky wait).
        call.variables["history"] = {"calls": 0, "last_agent": action.agent, "last_notes": ""}
        self.centre.enqueue_now(call)

    def deliver(self, event: Any) -> None:
        """Bus subscriber: campaign calls answered by an agent, and ended."""
        call_id = event.data.get("call_id") if isinstance(event.data, dict) else None
        o = self.calls.get(call_id) if call_id else None
        if o is None or o.call is None:
            return
        if event.name == "call.answered" and o.call.queue:
            self._report(call_id, "connected", agent=event.data.get("agent", ""))
        elif event.name == "call.ended":
            self._finish(o)
            wrapup = 0.0
            agent = event.data.get("agent") or ""
            if agent:
                conf = self.centre.config.agents.get(agent)
                q = self.centre.config.queues.get(o.call.queue) if o.call.queue else None
                wrapup = float(conf.wrapup_s if conf is not None and conf.wrapup_s is not None
                               else (q.wrapup_s if q is not None else 0))
            self._report(call_id, "ended", reason=event.data.get("reason", ""), wrapup_s=wrapup)

    # ------------------------------------------------------------ the callee's DTMF

    def _dtmf(self, ev: Any) -> bool:
        """Call-path DTMF tap: a digit on one of our legs outside an engine call goes to the dialer."""
        call_id = ev.leg_id.rsplit("/", 1)[0] if ev.leg_id else ""
        o = self.calls.get(call_id)
        if o is None or o.call is not None or o.out is None or ev.leg_id != o.out.leg_id:
            return False
        CallLogger(logger, {"call_id": call_id}).info("callee pressed %s (%.0f ms)", ev.digit, ev.duration_ms)
        if not o.done:
            self._report(call_id, "dtmf", digit=ev.digit)
        return True

    # ------------------------------------------------------------ prompts, flows, hang-up

    def play(self, action: PlayMessage) -> None:
        o = self.calls.get(action.call_id)
        if o is None:
            return
        if o.call is not None:
            self.centre.dequeue(o.call, "dropped")
        self.centre._spawn(self._play(o, action))

    async def _play(self, o: _Out, action: PlayMessage) -> None:
        from engine.ivrbridge import prompt_audio
        from ivr.actions import PromptItem

        text = action.prompt
        item = PromptItem("tts", text[4:], "en") if text.startswith("tts:") else PromptItem("file", text, "en")
        audio = await asyncio.get_running_loop().run_in_executor(None, prompt_audio, (item,))
        media = self.centre.media
        if o.done or media is None or o.out.leg_id not in media.legs:
            return
        from media.player import ArraySource

        if audio.size:
            o.player = media.play(ArraySource(audio), leg_id=o.out.leg_id)
        if action.hangup:
            # With a confirm digit the callee gets confirm_timeout_s after the message to press it.
            wait_s = audio.size / RATE + (action.confirm_timeout_s if action.confirm_digit else 0.3)
            o.timers.append(asyncio.get_running_loop().call_later(
                wait_s, self.hangup, action.call_id, "not_confirmed" if action.confirm_digit else "message_played"))

    def run_flow(self, action: RunFlow, campaign: Campaign) -> None:
        o = self.calls[action.call_id]
        flow = self.centre._flow(action.flow)
        if flow is None:  # not loadable (logged by the call path): end the call, the attempt counts
            CallLogger(logger, {"call_id": action.call_id}).error("survey flow %s cannot run", action.flow)
            self.hangup(action.call_id, "flow_unavailable")
            return
        call = self._engine_call(o, "", route_flow=action.flow)
        # The interpreter starts with the call's "ivr" data section as its variables.
        call.data["ivr"] = {f"campaign_{k}": v for k, v in action.variables.items()}
        self.centre._spawn(self.centre._route(call, flow))

    def hangup(self, call_id: str, reason: str) -> None:
        o = self.calls.get(call_id)
        if o is None:
            return
        if o.call is not None and o.call.state.value != "ended":
            self.centre.hangup(o.call, reason)   # call.ended on the bus reports the end
            return
        self._finish(o)
        if o.out is not None:
            o.out.hangup(reason)   # our own hang-up: the leg reports nothing back
        self._report(call_id, "ended", reason=reason)


__all__ = ["CentrePort"]
