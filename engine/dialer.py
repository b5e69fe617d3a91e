"""The dialer core of one campaign: pacing + records + call progress → actions, sans-IO.

Theory of operation
-------------------
:class:`DialerCore` joins a :class:`engine.campaign.CampaignBook` (which
records are due, retries, the log rows) and an :class:`engine.pacing.Pacer`
(how many calls now).  It is driven by method calls that say what happened,
each with ``now``, and returns :class:`Action` s for the asyncio glue
(:mod:`engine.campaign_service`) to carry out; it never touches SIP, media,
the store or a clock.

Life of an attempt::

    tick() ──PlaceCall(attempt row)──▶ glue writes + flushes the row, then sends the INVITE
    call_failed(outcome)  ──▶ result row (retry scheduled by the book)
    call_answered()       ──▶ StartAmd            (campaign.amd)
                          └─▶ as for a person:    amd_result(human)
    amd_result(machine)   ──▶ result row "machine", then Hangup or PlayMessage(drop/machine message)
    amd_result(person):
        agent modes       ──▶ ConnectAgent(deadline = now + connect_timeout_s)
                              agent_connected() ─▶ result row "answered" + "connected" row
                              connect_timeout() ─▶ result row "dropped" + PlayMessage(drop_message)+Hangup
        notification      ──▶ PlayMessage(text with record fields, confirm digit) → result "answered"
                              dtmf(confirm digit) ─▶ "confirmed" row + Hangup("confirmed")
                              call_ended() still awaiting the digit ─▶ "not_confirmed" row
        survey            ──▶ RunFlow(flow) → result "answered"
    call_ended()          ──▶ "ended" row (talk seconds), handle time to the pacer

Preview mode: :meth:`preview_next` hands an agent the next due record
(``PreviewOffered``, the record is held for ``preview_timeout_s``);
:meth:`preview_accept` places the call reserved for that agent,
:meth:`preview_skip` finishes the record as skipped, and a held record not
answered in time goes back to the list.

Agent availability comes in with every :meth:`tick` as an
:class:`AgentCounts` (idle ready agents of the campaign, agents busy on its
calls).  Calls placed for agents (progressive, preview) and answered calls
waiting for an agent are tracked here, so the counts need no reservations
from the ACD.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from engine.campaign import ANSWERED, CampaignBook, CampaignState, CampaignTrigger, render_message
from engine.config import Campaign
from engine.errors import Conflict
from engine.pacing import MODE_OF_CAMPAIGN, Pacer, PacingMode

logger = logging.getLogger(__name__)

AGENT_MODES = ("preview", "progressive", "predictive")


# ---------------------------------------------------------------- actions


class Action:
    """Base of what the core asks the glue to do."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PersistRows(Action):
    """Append rows to the store (``table`` → rows) without waiting."""

    table: str
    rows: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class PlaceCall(Action):
    """Write ``attempt_row`` durably, *then* dial ``number`` (the row must survive a crash first)."""

    call_id: str
    record_id: str
    number: str
    caller_number: str
    ring_timeout_s: float
    attempt_row: dict[str, Any]
    agent: str = ""          # preview: the agent the call is placed for
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StartAmd(Action):
    """Run the answering-machine detector on the answered call's audio."""

    call_id: str


@dataclass(frozen=True, slots=True)
class ConnectAgent(Action):
    """Connect the answered call to an agent of the campaign (``agent``: only that one) by ``deadline``."""

    call_id: str
    record_id: str
    deadline: float
    agent: str
    screen_pop: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlayMessage(Action):
    """Play ``prompt`` (file or ``tts:TEXT``) to the called party, then hang up when ``hangup``.

    With ``confirm_digit`` the port keeps the call up ``confirm_timeout_s``
    after the prompt and reports the called party's DTMF (progress ``dtmf``).
    """

    call_id: str
    prompt: str
    hangup: bool = True
    confirm_digit: str = ""
    confirm_timeout_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RunFlow(Action):
    """Run the IVR flow ``flow`` on the answered call with the record's fields as variables."""

    call_id: str
    flow: str
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Hangup(Action):
    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PreviewOffered(Action):
    """Show ``record`` to ``agent`` (preview mode); it is held for the agent until ``expires``."""

    agent: str
    record: dict[str, Any]
    expires: float


@dataclass(frozen=True, slots=True)
class CampaignCompleted(Action):
    """No record can come due any more; the campaign moved to ``completed``."""

    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AgentCounts:
    """The campaign's agents right now: idle (ready, no call) and busy (on or wrapping up its calls)."""

    idle: int
    busy: int
    idle_agents: tuple[str, ...] = ()


# ---------------------------------------------------------------- the core


@dataclass(slots=True)
class _Live:
    """A call of this campaign in progress."""

    call_id: str
    record_id: str
    placed_ts: float
    agent: str = ""            # preview: reserved agent; later: the connected agent
    answered_ts: float | None = None
    amd: str = ""
    connect_deadline: float | None = None
    connected_ts: float | None = None
    finished: bool = False     # the result row is written
    confirm: str = ""          # notification with confirm_digit: "pending" until "confirmed"


class DialerCore:
    """One campaign's dialling decisions (see the module docstring)."""

    def __init__(self, book: CampaignBook, *, call_id_prefix: str = "") -> None:
        c = book.campaign
        self.book = book
        self.campaign = c
        self.pacer = Pacer(MODE_OF_CAMPAIGN[c.mode], max_drop_rate=c.max_drop_rate,
                           drop_window_calls=c.drop_window_calls, connect_timeout_s=c.connect_timeout_s)
        self.live: dict[str, _Live] = {}
        self.preview_held: dict[str, tuple[str, float]] = {}   # record id -> (agent, expires)
        self._seq = 0
        self._prefix = call_id_prefix or f"{c.tenant}-{c.name}"

    def reconfigure(self, campaign: Campaign) -> None:
        """Use the edited definition from now on (``campaign.update``; checked by engine/campaign_edit.py).

        Calls in progress keep what they were given (an armed connect
        deadline, a reserved preview agent); new decisions use the new values.
        """
        self.book.reconfigure(campaign)
        self.campaign = campaign
        self.pacer.retune(MODE_OF_CAMPAIGN[campaign.mode], max_drop_rate=campaign.max_drop_rate,
                          drop_window_calls=campaign.drop_window_calls, connect_timeout_s=campaign.connect_timeout_s)

    # ------------------------------------------------------------ helpers

    def _new_call_id(self, now: float) -> str:
        self._seq += 1
        return f"ob-{self._prefix}-{int(now * 1000)}-{self._seq}"

    def _log(self, rows: list[dict[str, Any]]) -> list[Action]:
        return [PersistRows("campaign_log", tuple(rows))] if rows else []

    @property
    def in_flight(self) -> int:
        """Calls dialled and not yet answered."""
        return sum(1 for lv in self.live.values() if lv.answered_ts is None)

    @property
    def waiting_for_agent(self) -> int:
        return sum(1 for lv in self.live.values() if lv.connect_deadline is not None and lv.connected_ts is None)

    def screen(self, tenant: str, campaign: str, number: str) -> str | None:
        """Replaced by the service with the DNC list and the integrator's hooks."""
        return None

    # ------------------------------------------------------------ pacing

    def tick(self, now: float, agents: AgentCounts) -> list[Action]:
        """Place what pacing allows, expire preview holds, complete an exhausted campaign."""
        out: list[Action] = []
        for rid, (agent, expires) in list(self.preview_held.items()):
            if expires <= now:
                del self.preview_held[rid]
                logger.info("campaign %s: preview of %s by agent %s expired", self.book.name, rid, agent)
        if self.book.state is not CampaignState.RUNNING:
            return out
        c = self.campaign
        if c.mode in AGENT_MODES:
            # Answered calls waiting for an agent take the next free agents first.
            k = self.pacer.calls_to_place(agents.idle, agents.busy, self.in_flight, self._channels_left(),
                                          waiting=self.waiting_for_agent)
        else:  # agentless: a channel budget instead of agents
            limit = c.max_channels or 10
            k = max(0, limit - len(self.live))
        if k > 0 and self.pacer.mode is not PacingMode.PREVIEW:
            due, rows = self.book.due(now, k, self.screen)
            out += self._log(rows)
            for rec in due:
                if rec.record_id in self.preview_held:
                    continue
                out.append(self._place(rec.record_id, now))
        if not self.live and not self.preview_held and self.book.exhausted() and self.book.records:
            out.append(CampaignCompleted(self.book.transition(CampaignTrigger.COMPLETE, now)))
        return out

    def _channels_left(self) -> int | None:
        if not self.campaign.max_channels:
            return None
        return self.campaign.max_channels - len(self.live)

    def _place(self, record_id: str, now: float, agent: str = "") -> PlaceCall:
        rec = self.book.record(record_id)
        call_id = self._new_call_id(now)
        row = self.book.begin_attempt(record_id, call_id, now, agent=agent)
        self.live[call_id] = _Live(call_id, record_id, now, agent=agent)
        return PlaceCall(call_id=call_id, record_id=record_id, number=rec.number,
                         caller_number=self.campaign.caller_number, ring_timeout_s=float(self.campaign.ring_timeout_s),
                         attempt_row=row, agent=agent, fields=dict(rec.fields))

    def next_wakeup(self, now: float) -> float | None:
        """When :meth:`tick` may have something new to do without an event (retry or window time)."""
        times = [lv.connect_deadline for lv in self.live.values()
                 if lv.connect_deadline is not None and lv.connected_ts is None]
        times += [exp for _, exp in self.preview_held.values()]
        nxt = self.book.next_wakeup(now) if self.book.state is CampaignState.RUNNING else None
        if nxt is not None:
            times.append(nxt)
        return min(times) if times else None

    # ------------------------------------------------------------ preview

    def preview_next(self, agent: str, now: float) -> list[Action]:
        """Hold the next due record for ``agent`` and show it (preview mode)."""
        if self.campaign.mode != "preview":
            raise Conflict(f"campaign {self.book.name!r} is {self.campaign.mode}, not preview")
        for rid, (holder, _) in self.preview_held.items():
            if holder == agent:
                raise Conflict(f"agent {agent} already holds record {rid!r}")
        due, rows = self.book.due(now, 1 + len(self.preview_held), self.screen, agent=agent)
        out = self._log(rows)
        for rec in due:
            if rec.record_id not in self.preview_held:
                expires = now + self.campaign.preview_timeout_s
                self.preview_held[rec.record_id] = (agent, expires)
                out.append(PreviewOffered(agent, rec.describe(), expires))
                break
        return out

    def _held_by(self, record_id: str, agent: str) -> None:
        holder = self.preview_held.get(record_id)
        if holder is None or holder[0] != agent:
            raise Conflict(f"record {record_id!r} is not held for agent {agent}")
        del self.preview_held[record_id]

    def preview_accept(self, record_id: str, agent: str, now: float) -> list[Action]:
        """The agent accepted the shown record: dial it, reserved for that agent."""
        self._held_by(record_id, agent)
        return [self._place(record_id, now, agent=agent)]

    def preview_skip(self, record_id: str, agent: str, now: float) -> list[Action]:
        self._held_by(record_id, agent)
        return self._log([self.book.skip(record_id, now, agent=agent)])

    # ------------------------------------------------------------ call progress

    def _get(self, call_id: str) -> _Live:
        lv = self.live.get(call_id)
        if lv is None:
            raise Conflict(f"no live call {call_id!r} in campaign {self.book.name!r}")
        return lv

    def _finish(self, lv: _Live, outcome: str, now: float, **kw: Any) -> list[Action]:
        if lv.finished:
            return []
        lv.finished = True
        return self._log([self.book.finish_attempt(lv.call_id, outcome, now, amd=lv.amd, **kw)])

    def call_failed(self, call_id: str, outcome: str, now: float, *, status: int = 0) -> list[Action]:
        """The attempt was never answered (busy, no_answer, invalid_number, congestion, failed ...)."""
        lv = self._get(call_id)
        self.live.pop(call_id)
        self.pacer.attempt_finished(False, now - lv.placed_ts)
        return self._finish(lv, outcome, now, data={"sip_status": status} if status else None)

    def not_placed(self, call_id: str, now: float) -> list[Action]:
        """A :class:`PlaceCall` that was not carried out (see :meth:`CampaignBook.withdraw_attempt`)."""
        lv = self.live.pop(call_id, None)
        if lv is None or lv.finished:
            return []
        lv.finished = True
        return self._log([self.book.withdraw_attempt(call_id, now)])

    def call_answered(self, call_id: str, now: float) -> list[Action]:
        """The called party answered (2xx)."""
        lv = self._get(call_id)
        lv.answered_ts = now
        if self.campaign.amd:
            return [StartAmd(call_id)]
        return self._person(lv, now)

    def amd_result(self, call_id: str, result: str, now: float, detail: dict[str, Any] | None = None) -> list[Action]:
        """The detector decided: ``machine``, or ``human``/``silence``/``not_sure`` (treated as a person)."""
        lv = self._get(call_id)
        lv.amd = result
        if result != "machine":
            return self._person(lv, now)
        self.pacer.attempt_finished(False, now - lv.placed_ts)   # pacing counts persons only
        action = self.campaign.machine_action
        if action == "connect":
            return self._person(lv, now, count=False)
        out = self._finish(lv, "machine", now, data=detail)
        if action == "message" and (self.campaign.message or self.campaign.drop_message):
            text = render_message(self.campaign.message or self.campaign.drop_message,
                                  self.book.record(lv.record_id).fields)
            out.append(PlayMessage(call_id, text))
        else:
            out.append(Hangup(call_id, "answering_machine"))
        return out

    def _person(self, lv: _Live, now: float, count: bool = True) -> list[Action]:
        assert lv.answered_ts is not None
        if count:
            self.pacer.attempt_finished(True, lv.answered_ts - lv.placed_ts)
        c = self.campaign
        rec = self.book.record(lv.record_id)
        if c.mode == "notification":
            lv.confirm = "pending" if c.confirm_digit else ""
            return self._finish(lv, ANSWERED, now) + [
                PlayMessage(lv.call_id, render_message(c.message, rec.fields), hangup=True,
                            confirm_digit=c.confirm_digit, confirm_timeout_s=float(c.confirm_timeout_s))]
        if c.mode == "survey":
            return self._finish(lv, ANSWERED, now) + [RunFlow(lv.call_id, c.flow, dict(rec.fields))]
        lv.connect_deadline = now + c.connect_timeout_s
        pop = {"campaign": self.book.name, "tenant": self.book.tenant, "record": rec.describe(),
               "call_id": lv.call_id}
        return [ConnectAgent(lv.call_id, lv.record_id, lv.connect_deadline, lv.agent, pop)]

    def agent_connected(self, call_id: str, agent: str, now: float) -> list[Action]:
        """The answered call is bridged to ``agent`` (in time)."""
        lv = self._get(call_id)
        if lv.connected_ts is not None or lv.finished:
            raise Conflict(f"call {call_id!r} is already connected or finished")
        lv.connected_ts = now
        lv.agent = agent
        self.pacer.answered_call(dropped=False)
        wait = now - (lv.answered_ts or now)
        return self._finish(lv, ANSWERED, now, agent=agent, wait_s=round(wait, 3)) + self._log(
            [self.book.log_row(now, "connected", self.book.record(lv.record_id), call_id=call_id, agent=agent,
                            wait_s=round(wait, 3))])

    def connect_timeout(self, call_id: str, now: float) -> list[Action]:
        """``connect_timeout_s`` passed since the answer: drop unless connected meanwhile."""
        lv = self.live.get(call_id)
        if lv is None or lv.connected_ts is not None or lv.finished:
            return []
        self.pacer.answered_call(dropped=True)
        out = self._finish(lv, "dropped", now, wait_s=round(now - (lv.answered_ts or now), 3))
        logger.info("[%s] campaign %s: no agent within %.1f s: dropped", call_id, self.book.name,
                    self.campaign.connect_timeout_s)
        if self.campaign.drop_message:
            out.append(PlayMessage(call_id, self.campaign.drop_message, hangup=True))
        else:
            out.append(Hangup(call_id, "dropped"))
        return out

    def dtmf(self, call_id: str, digit: str, now: float) -> list[Action]:
        """The called party pressed ``digit`` (RFC 4733 on the callee leg).

        Only a notification awaiting its ``confirm_digit`` listens: the right
        digit writes the ``confirmed`` row and releases the call; any other
        digit is ignored (the message goes on, the callee may still confirm).
        """
        lv = self._get(call_id)
        if lv.confirm != "pending":
            return []
        if digit != self.campaign.confirm_digit:
            logger.info("[%s] campaign %s: digit %s is not the confirm digit", call_id, self.book.name, digit)
            return []
        lv.confirm = "confirmed"
        rec = self.book.record(lv.record_id)
        return self._log([self.book.log_row(now, "confirmed", rec, call_id=call_id, outcome="confirmed",
                                            data={"digit": digit, "after_s": round(now - (lv.answered_ts or now), 3)})]
                         ) + [Hangup(call_id, "confirmed")]

    def call_ended(self, call_id: str, now: float, *, wrapup_s: float = 0.0, reason: str = "") -> list[Action]:
        """The call is over (either side hung up).  Returns the ``ended`` row."""
        lv = self.live.pop(call_id, None)
        if lv is None:
            return []
        out: list[Action] = []
        if not lv.finished:  # hung up while AMD ran or while waiting for an agent
            if lv.answered_ts is not None and lv.connect_deadline is not None:
                self.pacer.answered_call(dropped=True)
                out += self._finish(lv, "dropped", now, data={"reason": reason or "hung_up_waiting"})
            else:
                out += self._finish(lv, ANSWERED if lv.answered_ts is not None else "failed", now,
                                    data={"reason": reason or "ended_early"})
        if lv.confirm == "pending":  # the message ended (or the callee hung up) without the digit
            out += self._log([self.book.log_row(now, "not_confirmed", self.book.record(lv.record_id),
                                                call_id=call_id, outcome="not_confirmed",
                                                data={"reason": reason} if reason else {})])
        talk = now - lv.connected_ts if lv.connected_ts is not None else 0.0
        if lv.connected_ts is not None:
            self.pacer.handle_finished(talk + wrapup_s)
        rec = self.book.record(lv.record_id)
        return out + self._log([self.book.log_row(now, "ended", rec, call_id=call_id, agent=lv.agent,
                                               talk_s=round(talk, 3), data={"reason": reason} if reason else {})])


__all__ = ["AGENT_MODES", "Action", "AgentCounts", "CampaignCompleted", "ConnectAgent", "DialerCore", "Hangup",
           "PersistRows", "PlaceCall", "PlayMessage", "PreviewOffered", "RunFlow", "StartAmd"]
