"""The IVR interpreter: one flow, one call, sans-IO (STYLE.md §1).

Theory of operation
-------------------
The engine creates one :class:`Interpreter` per call and feeds it events
(:mod:`ivr.events`) with ``now`` (the event loop's clock, seconds); each
:meth:`Interpreter.handle` returns the actions (:mod:`ivr.actions`) the
engine must perform.  The interpreter reads no clock, opens no file and
awaits nothing, so tests drive it with plain floats.

The call is always in one :class:`Phase`; :data:`TRANSITIONS` lists, per
phase, which event types it handles (an event type missing from the table
is a bug in the driver and raises :class:`IvrStateError`).  Answers carry
the id of the request they answer; the interpreter keeps only the ids it
still waits for, so a late ``PromptFinished`` after barge-in, a timer that
fired just as it was cancelled, or a queue result after the caller left
the queue are dropped (DEBUG log) instead of confusing the flow.

Nodes run as follows (keys in :mod:`ivr.nodes`):

* pass-through nodes (set, branch, goto, language, and lookup up to its
  request) run back to back inside one ``handle`` call;
* ``play`` / ``hangup`` prompts / ``transfer`` prompts / ``voicemail``
  greeting / agent announcement: phase PLAYING, the continuation runs when
  the prompt finishes (or when a digit stops a barge-in prompt);
* ``menu``, ``collect``, ``survey``, ``callback``: phase INPUT.  Input
  timers start when the prompt has finished (first-digit timeout) and after
  each digit (inter-digit timeout).  A wrong entry or a timeout counts one
  attempt, plays ``invalid_prompts``/``timeout_prompts`` and the prompt
  again; after ``retries`` attempts the node's failure edge is taken.

DTMF type-ahead: a digit that arrives when no input node can take it
(during a non-barge-in prompt, a lookup, a transfer) is kept in a small
buffer; the next input node consumes buffered digits before playing its
prompt, so an experienced caller can press "1 2" through the welcome and
land two menus deep.  Barge-in: a digit during a barge-in prompt stops it
(``StopPlayback``) and is used at once.  The buffer is cleared after a
wrong entry, so a caller who mistyped hears the prompt again.

Every variable set by the flow (collected digits, menu choices, lookup
columns, survey answers, language, agent number) is also emitted as
``SetCallData`` and kept in :attr:`Interpreter.call_data`, which the engine
puts in the screen pop.
"""
from __future__ import annotations

import enum
import logging
import math
from typing import Any, Callable

from ivr.actions import (Action, AttemptTransfer, BridgeAgent, CancelTimer, Dequeue, Enqueue,
                         FlowFinished, HangUp, PlayPrompts, RecordVoicemail, RequestCallback,
                         RequestLookup, ResumeMusic, SetCallData, SetLanguage, StartTimer,
                         StopPlayback, StoreSurveyResult)
from ivr.calendar import local_time
from ivr.errors import IvrStateError
from ivr.events import (CallDataAttached, CallHungUp, CallStarted, DtmfReceived, Event,
                        LookupCompleted, PromptFinished, QueueAgentReady, QueueLeft, QueueUpdated,
                        RecordingFinished, TimerFired, TransferCompleted)
from ivr.expr import Expression, render
from ivr.flow import Flow
from ivr.nodes import Node
from ivr.prompts import PromptSpec, resolve_items

logger = logging.getLogger(__name__)

TYPEAHEAD_MAX = 32
MAX_PASS_THROUGH_STEPS = 1000
GUARD_EXTRA_S = 10.0
"""Extra seconds the interpreter waits for the engine's own transfer/recording
time limit before giving up on its own (a lost answer must not strand the caller)."""


class CallLogger(logging.LoggerAdapter):
    """Prefixes every line with the call id (STYLE.md §9)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['call_id']}] {msg}", kwargs  # type: ignore[index]


class Phase(enum.Enum):
    IDLE = "idle"
    PLAYING = "playing"
    INPUT = "input"
    LOOKUP = "lookup"
    QUEUED = "queued"
    TRANSFERRING = "transferring"
    RECORDING = "recording"
    FINISHED = "finished"


TRANSITIONS: dict[Phase, dict[type[Event], str]] = {
    Phase.IDLE: {CallStarted: "_on_call_started"},
    Phase.PLAYING: {PromptFinished: "_on_play_finished"},
    Phase.INPUT: {PromptFinished: "_on_input_prompt_finished", TimerFired: "_on_input_timer"},
    Phase.LOOKUP: {LookupCompleted: "_on_lookup_completed", TimerFired: "_on_lookup_timer"},
    Phase.QUEUED: {QueueUpdated: "_on_queue_updated", QueueAgentReady: "_on_queue_agent_ready",
                   QueueLeft: "_on_queue_left", TimerFired: "_on_queue_timer",
                   PromptFinished: "_on_queue_announcement_finished"},
    Phase.TRANSFERRING: {TransferCompleted: "_on_transfer_completed", TimerFired: "_on_transfer_timer"},
    Phase.RECORDING: {RecordingFinished: "_on_recording_finished", TimerFired: "_on_recording_timer"},
    Phase.FINISHED: {},
}
"""Per phase, the event types it handles (DTMF, hang-up and attached data are
handled in every phase)."""


class Interpreter:
    """Runs one flow for one call.  Feed events to :meth:`handle`."""

    def __init__(self, flow: Flow, call_id: str, *, variables: dict[str, Any] | None = None,
                 language: str | None = None, start: str | None = None) -> None:
        """Args:
            flow: a validated flow (:func:`ivr.flow.load_flow`).
            call_id: used in every log line and in ``call_data``.
            variables: initial variables (e.g. carried over from another flow).
            language: initial language (default: the flow's ``language``).
            start: start node (default: the flow's ``start``).
        """
        self.flow = flow
        self.call_id = call_id
        self.log = CallLogger(logger, {"call_id": call_id})
        # Step logs are DEBUG; checking the level once per call keeps them
        # free when off (a level change applies to calls started after it).
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self.phase = Phase.IDLE
        self.language = language or flow.language
        self.variables: dict[str, Any] = dict(variables or {})
        self.node: Node | None = None
        self._start = start or flow.start
        self._now = 0.0
        self._start_now = 0.0
        self._start_wall = 0.0
        self._out: list[Action] = []
        self._ids = 0
        self._play_id: int | None = None
        self._play_barge_in = False
        self._timers: dict[str, int] = {}
        self._request_id: int | None = None
        self._continuation: Callable[[], None] | None = None
        self._typeahead: list[str] = []
        self._visit = 0
        # per-node input state
        self._attempts = 0
        self._digits = ""
        self._sub = ""          # callback: "confirm" or "enter"
        self._targets: list[tuple[str, str]] = []
        self._target_index = 0
        self.steps = 0
        """Events handled (for benchmarks and statistics)."""

    # ------------------------------------------------------------------ API
    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def call_data(self) -> dict[str, Any]:
        """The call's variables (screen pop data), a copy."""
        return dict(self.variables)

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to perform, in order.

        Raises:
            IvrStateError: the event cannot happen in the current phase (a
                bug in the driver), e.g. ``DtmfReceived`` before ``CallStarted``.
        """
        self._now = now
        self._out = []
        self.steps += 1
        etype = type(event)
        if self.phase is Phase.FINISHED:
            if etype is CallStarted:
                raise IvrStateError(f"call {self.call_id}: CallStarted after the flow finished")
            if self._debug:
                self.log.debug("flow finished; ignoring %s", event)
            return []
        if etype is CallHungUp:
            self._on_hangup(event)  # type: ignore[arg-type]
            return self._out
        if self.phase is Phase.IDLE and etype is not CallStarted:
            raise IvrStateError(f"call {self.call_id}: {etype.__name__} before CallStarted")
        if etype is DtmfReceived:
            self._on_dtmf(event.digit)  # type: ignore[attr-defined]
            return self._out
        if etype is CallDataAttached:
            for key, value in event.data.items():  # type: ignore[attr-defined]
                self.variables[key] = value
            return self._out
        if self._stale(event):
            if self._debug:
                self.log.debug("ignoring stale %s in phase %s", event, self.phase.value)
            return []
        method = TRANSITIONS[self.phase].get(etype)
        if method is None:
            raise IvrStateError(f"call {self.call_id}: {etype.__name__} is not expected in phase "
                                f"{self.phase.value} (node {self.node.id if self.node else None!r})")
        getattr(self, method)(event)
        return self._out

    def _stale(self, event: Event) -> bool:
        if isinstance(event, PromptFinished):
            return event.play_id != self._play_id
        if isinstance(event, TimerFired):
            return event.timer_id not in self._timers.values()
        if isinstance(event, LookupCompleted | QueueUpdated | QueueAgentReady | QueueLeft
                      | TransferCompleted | RecordingFinished):
            return event.request_id != self._request_id
        return False

    # ------------------------------------------------------------ helpers
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _set_var(self, key: str, value: Any, publish: bool = True) -> None:
        self.variables[key] = value
        if publish:
            self._out.append(SetCallData(key, value))

    def _play(self, specs: tuple[PromptSpec, ...], barge_in: bool) -> bool:
        """Emit PlayPrompts; False when there is nothing to play."""
        items, missing = resolve_items(specs, self.flow.catalog, self.language, self.variables)
        for name in missing:
            self.log.warning("prompt %r has no file for %s or %s; skipped", name, self.language,
                             self.flow.fallback_language)
        if not items:
            return False
        self._play_id = self._next_id()
        self._play_barge_in = barge_in
        self._out.append(PlayPrompts(self._play_id, items, barge_in))
        if self._debug:
            self.log.debug("play %d: %s", self._play_id, ", ".join(i.value for i in items))
        return True

    def _stop_playback(self) -> None:
        if self._play_id is not None:
            self._out.append(StopPlayback(self._play_id))
            self._play_id = None

    def _start_timer(self, name: str, delay_s: float) -> None:
        self._cancel_timer(name)
        timer_id = self._next_id()
        self._timers[name] = timer_id
        self._out.append(StartTimer(timer_id, name, self._now + delay_s))

    def _cancel_timer(self, name: str) -> None:
        timer_id = self._timers.pop(name, None)
        if timer_id is not None:
            self._out.append(CancelTimer(timer_id))

    def _cancel_all_timers(self) -> None:
        for name in list(self._timers):
            self._cancel_timer(name)

    def _timer_name(self, timer_id: int) -> str:
        for name, tid in self._timers.items():
            if tid == timer_id:
                del self._timers[name]
                return name
        raise IvrStateError(f"call {self.call_id}: unknown timer {timer_id}")  # _stale checked it

    def _then_play(self, specs: tuple[PromptSpec, ...], barge_in: bool, continuation: Callable[[], None]) -> None:
        """Play, then run ``continuation`` (at once when nothing is playable)."""
        if self._play(specs, barge_in):
            self.phase = Phase.PLAYING
            self._continuation = continuation
        else:
            continuation()

    def _finish(self, reason: str) -> None:
        self._stop_playback()
        self._cancel_all_timers()
        self._request_id = None
        self._continuation = None
        self.phase = Phase.FINISHED
        node_id = self.node.id if self.node else ""
        self._out.append(FlowFinished(reason, node_id))
        self.log.info("flow %s finished: %s at node %s", self.flow.name, reason, node_id)

    # ------------------------------------------------------------ walking
    def _goto(self, node_id: str | None) -> None:
        steps = 0
        while node_id is not None:
            steps += 1
            if steps > MAX_PASS_THROUGH_STEPS:
                self.log.error("more than %d steps without input at node %s; hanging up",
                               MAX_PASS_THROUGH_STEPS, node_id)
                self._out.append(HangUp("flow_loop"))
                self._finish("flow_loop")
                return
            node = self.flow.nodes[node_id]
            self.node = node
            self._visit += 1
            self._attempts = 0
            self._digits = ""
            if self._debug:
                self.log.debug("node %s (%s)", node.id, node.type)
            node_id = getattr(self, f"_enter_{node.type}")(node)

    def _enter_goto(self, node: Node) -> str:
        return node["next"]

    def _enter_set(self, node: Node) -> str:
        for name, value in node["variables"].items():
            if isinstance(value, Expression):
                try:
                    result = value.evaluate(self.variables)
                except (TypeError, ValueError, ZeroDivisionError) as exc:
                    self.log.warning("set %s: expression %r failed (%s); using \"\"", name, value.source, exc)
                    result = ""
            elif isinstance(value, str):
                result = render(value, self.variables)
            else:
                result = value
            self._set_var(name, result)
        return node["next"]

    def _enter_language(self, node: Node) -> str:
        self.language = node["language"]
        self._set_var("language", self.language)
        self._out.append(SetLanguage(self.language))
        self.log.info("language set to %s", self.language)
        return node["next"]

    def _local(self) -> Any:
        return local_time(self._start_wall + (self._now - self._start_now), self.flow.timezone)

    def _rule_matches(self, rule: dict[str, Any]) -> bool:
        caller = str(self.variables.get("caller_number", ""))
        if rule.get("caller_in") is not None and caller not in rule["caller_in"]:
            return False
        if rule.get("caller_prefix") is not None and not any(caller.startswith(p) for p in rule["caller_prefix"]):
            return False
        if rule.get("dialed_in") is not None and str(self.variables.get("dialed_number", "")) not in rule["dialed_in"]:
            return False
        if rule.get("time") is not None or rule.get("days") is not None or rule.get("holiday") is not None:
            local = self._local()
            if rule.get("time") is not None and not rule["time"].contains(local.hour * 60 + local.minute):
                return False
            if rule.get("days") is not None and local.weekday() not in rule["days"]:
                return False
            if rule.get("holiday") is not None and self.flow.holidays.is_holiday(local.date()) != rule["holiday"]:
                return False
        if rule.get("if") is not None:
            try:
                return bool(rule["if"].evaluate(self.variables))
            except (TypeError, ValueError, ZeroDivisionError) as exc:
                self.log.warning("branch rule %r failed (%s); treated as false", rule["if"].source, exc)
                return False
        return True

    def _enter_branch(self, node: Node) -> str:
        for rule in node["rules"]:
            if self._rule_matches(rule):
                if self._debug:
                    self.log.debug("branch %s: rule %r matched", node.id, rule["label"])
                return rule["next"]
        return node["default"]

    def _enter_play(self, node: Node) -> str | None:
        target = node["next"]
        if self._play(node["prompts"], node["barge_in"]):
            self.phase = Phase.PLAYING
            self._continuation = lambda: self._goto(target)
            return None
        return target  # nothing playable (files gone since load): go on, under the step guard

    def _enter_hangup(self, node: Node) -> None:
        reason = node["reason"]

        def done() -> None:
            self._out.append(HangUp(reason))
            self._finish("hangup")

        self._then_play(node["prompts"], False, done)

    # ---------------------------------------------------------- playing
    def _on_play_finished(self, event: PromptFinished) -> None:
        self._play_id = None
        self._run_continuation()

    def _run_continuation(self) -> None:
        continuation, self._continuation = self._continuation, None
        if continuation is None:
            raise IvrStateError(f"call {self.call_id}: prompt finished with nothing to continue")
        continuation()

    # ------------------------------------------------------------- DTMF
    def _on_dtmf(self, digit: str) -> None:
        if self._debug:
            self.log.debug("dtmf %s in phase %s", digit, self.phase.value)
        if self.phase is Phase.INPUT:
            if self._play_id is not None and not self._play_barge_in:
                self._buffer(digit)
                return
            self._stop_playback()
            self._input_digit(digit)
        elif self.phase is Phase.PLAYING:
            if self._play_id is not None and self._play_barge_in:
                self._stop_playback()
                self._buffer(digit)
                self._run_continuation()
            else:
                self._buffer(digit)
        elif self.phase is Phase.QUEUED:
            exits = self.node["exits"] if self.node else {}
            if digit in exits:
                self.log.info("caller pressed %s in queue: leaving for %s", digit, exits[digit])
                self._leave_queue("caller_exit")
                self._goto(exits[digit])
            else:
                if self._debug:
                    self.log.debug("digit %s ignored in queue", digit)
        elif self.phase is Phase.RECORDING:
            if self._debug:
                self.log.debug("digit %s during recording (the recorder handles #)", digit)
        else:
            self._buffer(digit)

    def _buffer(self, digit: str) -> None:
        if len(self._typeahead) < TYPEAHEAD_MAX:
            self._typeahead.append(digit)
        else:
            self.log.warning("type-ahead buffer full; digit %s dropped", digit)

    # ------------------------------------------------------------ input
    def _start_input(self, prompts: tuple[PromptSpec, ...]) -> None:
        """Enter phase INPUT: use type-ahead digits, else play the prompt."""
        self.phase = Phase.INPUT
        visit = self._visit
        consumed = False
        while self._typeahead and self._visit == visit and self.phase is Phase.INPUT:
            consumed = True
            self._input_digit(self._typeahead.pop(0))
        if consumed:
            return  # moved on, or the digit handler armed a timer / a retry prompt
        self._prompt(prompts)

    def _prompt(self, prompts: tuple[PromptSpec, ...]) -> None:
        node = self.node
        assert node is not None
        if not self._play(prompts, node["barge_in"]):
            self._start_timer("input", self._first_digit_s())

    def _first_digit_s(self) -> float:
        node = self.node
        assert node is not None
        return node.params.get("first_digit_timeout_s") or node["timeout_s"]

    def _inter_digit_s(self) -> float:
        node = self.node
        assert node is not None
        return node.params.get("inter_digit_timeout_s") or node["timeout_s"]

    def _on_input_prompt_finished(self, event: PromptFinished) -> None:
        self._play_id = None
        visit = self._visit
        while self._typeahead and self._visit == visit and self.phase is Phase.INPUT and self._play_id is None:
            self._input_digit(self._typeahead.pop(0))
        if self._visit == visit and self.phase is Phase.INPUT and self._play_id is None \
                and "input" not in self._timers:
            self._start_timer("input", self._inter_digit_s() if self._digits else self._first_digit_s())

    def _on_input_timer(self, event: TimerFired) -> None:
        self._timer_name(event.timer_id)
        node = self.node
        assert node is not None
        if node.type == "collect" or (node.type == "callback" and self._sub == "enter"):
            if not self._digits:
                self._input_failed("timeout")
            else:
                self._complete_entry()
        else:
            self._input_failed("timeout")

    def _input_digit(self, digit: str) -> None:
        node = self.node
        assert node is not None
        self._cancel_timer("input")
        t = node.type
        if t == "menu":
            choices = node["choices"]
            if digit in choices:
                self.log.info("menu %s: caller chose %s", node.id, digit)
                if node["variable"]:
                    self._set_var(node["variable"], digit)
                self._goto(choices[digit])
            else:
                self.log.info("menu %s: invalid digit %s", node.id, digit)
                self._input_failed("invalid")
        elif t == "survey":
            if digit in node["digits"]:
                self._survey_answer(node, digit)
            else:
                self._input_failed("invalid")
        elif t == "callback" and self._sub == "confirm":
            if digit == "1":
                self._callback_confirmed(node)
            elif digit == "2":
                self._sub = "enter"
                self._digits = ""
                self._prompt(node["enter_prompts"])
            else:
                self._input_failed("invalid")
        else:  # collect, callback entering a number
            terminator = node.params.get("terminator", "#")
            if terminator and digit == terminator:
                self._complete_entry()
                return
            self._digits += digit
            if len(self._digits) >= node["max_digits"]:
                self._complete_entry()
            elif self._play_id is None:
                self._start_timer("input", self._inter_digit_s())

    def _complete_entry(self) -> None:
        node = self.node
        assert node is not None
        self._cancel_timer("input")
        value = self._digits
        pattern = node.params.get("pattern")
        if len(value) < node["min_digits"] or (pattern is not None and not pattern.fullmatch(value)):
            self.log.info("%s %s: entry %r rejected", node.type, node.id, value)
            self._input_failed("invalid")
            return
        if node.type == "callback":
            self._set_var("callback_number", value)
            self._sub = "confirm"
            self._digits = ""
            self._prompt(node["prompts"])
            return
        self.log.info("collect %s: %s = %r", node.id, node["variable"], value)
        self._set_var(node["variable"], value)
        self._goto(node["next"])

    def _input_failed(self, kind: str) -> None:
        node = self.node
        assert node is not None
        self._attempts += 1
        self._digits = ""
        self._typeahead.clear()
        self._stop_playback()
        self._cancel_timer("input")
        if self._attempts >= node["retries"]:
            self.log.info("%s %s: %s, %d attempts used", node.type, node.id, kind, self._attempts)
            if node.type == "survey":
                self._set_var(f"survey_{node['question']}", "")
                self._goto(node["on_failure"] or node["next"])
                return
            if node.type == "menu":
                target = node["on_invalid"] if kind == "invalid" else node["on_timeout"]
                self._goto(target or node["on_failure"])
                return
            self._goto(node["on_failure"])
            return
        if self._debug:
            self.log.debug("%s %s: %s, attempt %d of %d", node.type, node.id, kind, self._attempts, node["retries"])
        extra = node["invalid_prompts"] if kind == "invalid" else node["timeout_prompts"]
        if node.type == "callback":
            prompts = node["enter_prompts"] if self._sub == "enter" else node["prompts"]
        else:
            prompts = node["prompts"]
        self._prompt(tuple(extra) + tuple(prompts))

    def _enter_menu(self, node: Node) -> None:
        self._start_input(node["prompts"])

    def _enter_collect(self, node: Node) -> None:
        self._start_input(node["prompts"])

    def _enter_survey(self, node: Node) -> None:
        self._start_input(node["prompts"])

    def _survey_answer(self, node: Node, digit: str) -> None:
        agent = self.variables.get("agent_number")
        self._set_var(f"survey_{node['question']}", digit)
        self._out.append(StoreSurveyResult(node["survey"], node["question"], digit,
                                           str(agent) if agent else None))
        self.log.info("survey %s/%s answered %s", node["survey"], node["question"], digit)
        self._goto(node["next"])

    def _enter_callback(self, node: Node) -> None:
        self._sub = "confirm"
        self.variables["callback_number"] = render(node["number"], self.variables)
        self._start_input(node["prompts"])

    def _callback_confirmed(self, node: Node) -> None:
        number = str(self.variables.get("callback_number", ""))
        queue = node["queue"] or self.variables.get("queue") or None
        self._set_var("callback_number", number)
        self._set_var("callback_requested", True)
        self._out.append(RequestCallback(number, queue, node["keep_place"]))
        self.log.info("callback requested to %s (queue %s)", number, queue)
        self._goto(node["next"])

    # ------------------------------------------------------------ lookup
    def _enter_lookup(self, node: Node) -> None:
        key = render(node["key"], self.variables)
        self._request_id = self._next_id()
        if node["csv"] is not None:
            source, table = "csv", str(node["csv_path"])
        else:
            source, table = "store", node["table"]
        self.phase = Phase.LOOKUP
        self._out.append(RequestLookup(self._request_id, source, table, node["column"], key, self.flow.tenant))
        self._start_timer("lookup", node["timeout_s"])
        if self._debug:
            self.log.debug("lookup %s %s where %s = %r", source, table, node["column"], key)

    def _on_lookup_completed(self, event: LookupCompleted) -> None:
        node = self.node
        assert node is not None
        self._request_id = None
        self._cancel_timer("lookup")
        if event.error is not None:
            self.log.warning("lookup %s failed: %s", node.id, event.error)
            self._goto(node["on_error"] or node["not_found"])
        elif event.row is None:
            self.log.info("lookup %s: no row", node.id)
            self._set_var(f"{node['into']}_found", False)
            self._goto(node["not_found"])
        else:
            for column, value in event.row.items():
                self._set_var(f"{node['into']}_{column}", value)
            self._set_var(f"{node['into']}_found", True)
            self._goto(node["found"])

    def _on_lookup_timer(self, event: TimerFired) -> None:
        node = self.node
        assert node is not None
        self._timer_name(event.timer_id)
        self._request_id = None
        self.log.warning("lookup %s timed out", node.id)
        self._goto(node["on_error"] or node["not_found"])

    # ------------------------------------------------------------- queue
    def _enter_queue(self, node: Node) -> None:
        self._request_id = self._next_id()
        self._set_var("queue", node["queue"])
        self.phase = Phase.QUEUED
        self._out.append(Enqueue(self._request_id, node["queue"], node["priority"], node["music_on_hold"],
                                 node["max_wait_s"], tuple(node["skills"])))
        self.log.info("queued in %s (priority %d)", node["queue"], node["priority"])
        if node["announce_interval_s"]:
            self._start_timer("announce", node["announce_interval_s"])
        if node["max_wait_s"] is not None:
            self._start_timer("max_wait", node["max_wait_s"])

    def _leave_queue(self, reason: str) -> None:
        self._stop_playback()
        self._cancel_all_timers()
        if self._request_id is not None:
            self._out.append(Dequeue(self._request_id, reason))
        self._request_id = None

    def _on_queue_updated(self, event: QueueUpdated) -> None:
        self.variables["queue_position"] = event.position
        self.variables["expected_wait_s"] = event.expected_wait_s
        self.variables["expected_wait_min"] = max(1, math.ceil(event.expected_wait_s / 60))

    def _on_queue_timer(self, event: TimerFired) -> None:
        node = self.node
        assert node is not None
        name = self._timer_name(event.timer_id)
        if name == "max_wait":
            self.log.info("queue %s: max wait %.0f s reached", node["queue"], node["max_wait_s"])
            self._leave_queue("max_wait")
            self._set_var("queue_result", "timeout")
            self._goto(node["on_timeout"] or node["on_failure"])
        elif "queue_position" in self.variables and self._play(node["announce_prompts"], False):
            pass  # announce timer restarts when the announcement ends
        else:
            self._start_timer("announce", node["announce_interval_s"])

    def _on_queue_announcement_finished(self, event: PromptFinished) -> None:
        node = self.node
        assert node is not None
        self._play_id = None
        self._out.append(ResumeMusic(node["music_on_hold"]))
        self._start_timer("announce", node["announce_interval_s"])

    def _on_queue_agent_ready(self, event: QueueAgentReady) -> None:
        node = self.node
        assert node is not None
        request_id = self._request_id
        assert request_id is not None
        self._stop_playback()
        self._cancel_all_timers()
        self._set_var("agent_number", event.agent_number)
        self.log.info("agent %s ready for the caller", event.agent_number)

        def bridge() -> None:
            self._out.append(BridgeAgent(request_id, event.agent_number))
            self._request_id = None
            self._finish("agent")

        if node["announce_agent"]:
            self._then_play(node["agent_prompts"], False, bridge)
        else:
            bridge()

    def _on_queue_left(self, event: QueueLeft) -> None:
        node = self.node
        assert node is not None
        self._request_id = None
        self._stop_playback()
        self._cancel_all_timers()
        self._set_var("queue_result", event.reason)
        self.log.info("left queue %s: %s", node["queue"], event.reason)
        if event.reason == "timeout":
            self._goto(node["on_timeout"] or node["on_failure"])
        else:
            self._goto(node["on_failure"])

    # ---------------------------------------------------------- transfer
    def _enter_transfer(self, node: Node) -> None:
        targets: list[tuple[str, str]] = []
        if node["numbers"] is not None:
            targets = [("number", n) for n in node["numbers"]]
        for kind in ("agent", "queue", "flow"):
            if node[kind] is not None:
                targets = [(kind, render(node[kind], self.variables))]
        self._targets = targets
        self._target_index = 0
        prompts = tuple(node["prompts"])
        if node["announce_agent"] and targets and targets[0][0] == "agent":
            self._set_var("agent_number", targets[0][1])
            prompts += tuple(node["agent_prompts"])
        self._then_play(prompts, False, self._attempt_transfer)

    def _attempt_transfer(self) -> None:
        node = self.node
        assert node is not None
        if self._target_index >= len(self._targets):
            self.log.info("transfer %s: every target failed", node.id)
            self._set_var("transfer_result", "failed")
            self._goto(node["on_failure"])
            return
        kind, target = self._targets[self._target_index]
        self._request_id = self._next_id()
        self.phase = Phase.TRANSFERRING
        self._out.append(AttemptTransfer(self._request_id, kind, target, node["timeout_s"], self._target_index + 1))
        self._start_timer("transfer", node["timeout_s"] + GUARD_EXTRA_S)
        self.log.info("transfer attempt %d: %s %s", self._target_index + 1, kind, target)

    def _on_transfer_completed(self, event: TransferCompleted) -> None:
        self._request_id = None
        self._cancel_timer("transfer")
        kind, target = self._targets[self._target_index]
        if event.answered:
            self._set_var("transfer_result", "answered")
            self._set_var("transfer_target", target)
            self._finish("transferred")
            return
        self.log.info("transfer to %s %s failed: %s", kind, target, event.reason or "no reason")
        self._target_index += 1
        self._attempt_transfer()

    def _on_transfer_timer(self, event: TimerFired) -> None:
        self._timer_name(event.timer_id)
        self.log.warning("transfer attempt %d: no result from the engine; trying the next target",
                         self._target_index + 1)
        self._request_id = None
        self._target_index += 1
        self._attempt_transfer()

    # --------------------------------------------------------- voicemail
    def _enter_voicemail(self, node: Node) -> None:
        mailbox = render(node["mailbox"], self.variables)

        def record() -> None:
            self._request_id = self._next_id()
            self.phase = Phase.RECORDING
            self._out.append(RecordVoicemail(self._request_id, mailbox, node["max_length_s"], node["beep"]))
            self._start_timer("recording", node["max_length_s"] + GUARD_EXTRA_S)
            self.log.info("recording voicemail for mailbox %s", mailbox)

        self._then_play(node["prompts"], False, record)

    def _voicemail_done(self, duration_s: float, path: str) -> None:
        node = self.node
        assert node is not None
        self._request_id = None
        self._cancel_timer("recording")
        self._set_var("voicemail_duration_s", duration_s)
        if path:
            self._set_var("voicemail_path", path)
        if node["next"] is not None:
            self._goto(node["next"])
        else:
            self._out.append(HangUp("voicemail"))
            self._finish("voicemail")

    def _on_recording_finished(self, event: RecordingFinished) -> None:
        self._voicemail_done(event.duration_s, event.path)

    def _on_recording_timer(self, event: TimerFired) -> None:
        self._timer_name(event.timer_id)
        self.log.warning("voicemail: no end of recording from the engine; going on")
        self._voicemail_done(0.0, "")

    # ----------------------------------------------------- start and end
    def _on_call_started(self, event: CallStarted) -> None:
        self._start_now = self._now
        self._start_wall = event.wall_time
        for key, value in (("call_id", self.call_id), ("caller_number", event.caller_number),
                           ("dialed_number", event.dialed_number), ("flow", self.flow.name),
                           ("language", self.language)):
            self.variables.setdefault(key, value)
        self.log.info("flow %s started: caller %s dialed %s", self.flow.name, event.caller_number,
                      event.dialed_number)
        self._goto(self._start)

    def _on_hangup(self, event: CallHungUp) -> None:
        self.log.info("caller hung up (%s) in phase %s", event.reason, self.phase.value)
        if self.phase is Phase.QUEUED:
            self._leave_queue("caller_hangup")
        if self.phase is Phase.RECORDING:
            # Hanging up is how most callers end a message: the engine's
            # recorder keeps what was said; the flow ended in voicemail.
            self._finish("voicemail")
            return
        self._finish("caller_hangup")
