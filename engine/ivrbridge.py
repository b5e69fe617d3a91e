"""IVR ↔ engine adapter: runs a route's flow (``flow:NAME``) for a caller leg.

Theory of operation
-------------------
``ivr/runner.py`` drives the sans-IO interpreter and hands every action
except timers to :class:`IvrBridge.perform`; this module maps them onto the
call path:

* ``PlayPrompts`` → audio is prepared off the loop (files decoded, ``tts``
  and spelled ``digits``/``number``/``date`` items spoken by espeak-ng through
  :mod:`media.tts`, which caches by text) and kept decoded in
  :data:`prompt_cache` (a repeated prompt is served on the loop), then one
  :class:`media.player.ArraySource` of the concatenation is played to the
  caller leg; ``PlaybackFinished`` of that player feeds ``PromptFinished``.
  ``StopPlayback`` stops it (barge-in is decided by the interpreter).
* DTMF: the media engine's RFC 4733 ``DtmfReceived`` on the caller leg is
  fed as ``ivr.events.DtmfReceived``.
* ``Enqueue`` → the ACD (music on hold on the caller leg);
  ``QueueUpdated`` is fed with the position and ``expected_wait_s``
  whenever they change (every ``queue.stats``); when the agent answers the call path bridges at once and the flow
  task is cancelled (the flow's ``BridgeAgent`` would come too late for the
  media), ``Dequeue`` takes the caller out of the ACD, ACD timeouts feed
  ``QueueLeft("timeout")``.
* ``SetCallData`` → call variables (screen pop); ``HangUp`` ends the call;
  ``RequestLookup`` reads the store (or a CSV file); ``StoreSurveyResult``
  and ``RequestCallback`` write ``surveys`` / ``callbacks`` rows.
* ``RecordVoicemail`` → :mod:`engine.voicemail` (``#`` or ``max_length_s``
  ends it; ``RecordingFinished`` with the path and duration).
* Not yet supported, answered so the flow goes on: ``AttemptTransfer``
  (``TransferCompleted(answered=False, reason="not_supported")``).

Post-call flows
---------------
A flow may name another configured flow in the variable
``post_call_flow`` (a ``set`` node before the queue).  When the agent's
phone hangs up first (BYE from the agent leg) :func:`start_post_call_flow`
keeps the caller: the call moves TALKING → POST_CALL, the recording stops,
the agent leg and room go, the agent is released into wrap-up exactly as
after a normal hang-up, and the named flow (typically a satisfaction
``survey``) runs on the caller leg with the call's variables plus
``agent_number``, so ``StoreSurveyResult`` rows carry the agent who
answered.  The flow's ``hangup`` (or the caller's BYE) then ends the call;
its CDR is ``answered`` with talk time up to the agent's hang-up.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import TYPE_CHECKING

import numpy as np

from ivr import actions as A
from ivr import events as E
from media.player import ArraySource, load_prompt

POST_CALL_VARIABLE = "post_call_flow"
"""IVR variable naming the ``[flows.NAME]`` the caller goes to when the agent hangs up first."""

if TYPE_CHECKING:
    from engine.callpath import CallCentre
    from engine.calls import Call
    from ivr.runner import IvrCall

logger = logging.getLogger("engine.ivrbridge")


def prompt_audio(items: tuple[A.PromptItem, ...]) -> np.ndarray:
    """The samples of ``items`` one after the other (blocking: run in a worker thread)."""
    from media.tts import default_tts

    parts: list[np.ndarray] = []
    for item in items:
        try:
            if item.kind == "file":
                parts.append(load_prompt(item.value))
            else:
                text = item.value if item.kind == "tts" else (item.text or item.value)
                parts.append(default_tts().load(text, language=item.language))
        except Exception as exc:  # a missing file or TTS failure must not stop the flow
            logger.warning("prompt %s %r not playable: %s", item.kind, item.value[:60], exc)
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


class PromptCache:
    """Decoded prompt audio by prompt items, bounded by total samples (LRU).

    Every caller in a menu hears the same few prompts over and over; decoding
    the file (or the cached TTS WAV) again for each play costs a worker
    thread hop and GIL time that the 20 ms media tick then waits for
    (measured in docs/performance/ivr.md).  A hit is served on the loop.
    File items are re-read when their modification time changed.
    """

    def __init__(self, max_samples: int = 8_000_000) -> None:
        self.max_samples = max_samples
        self.samples = 0
        self.hits = 0
        self.misses = 0
        self._entries: "collections.OrderedDict[tuple, tuple[np.ndarray, tuple[float, ...]]]" = \
            collections.OrderedDict()

    @staticmethod
    def _mtimes(items: tuple[A.PromptItem, ...]) -> tuple[float, ...]:
        out = []
        for item in items:
            if item.kind == "file":
                try:
                    out.append(os.stat(item.value).st_mtime)
                except OSError:
                    out.append(-1.0)
        return tuple(out)

    def get(self, items: tuple[A.PromptItem, ...]) -> np.ndarray | None:
        entry = self._entries.get(items)
        if entry is None or entry[1] != self._mtimes(items):
            self.misses += 1
            return None
        self._entries.move_to_end(items)
        self.hits += 1
        return entry[0]

    def put(self, items: tuple[A.PromptItem, ...], audio: np.ndarray) -> None:
        if audio.size == 0 or audio.size > self.max_samples // 4:
            return
        audio.flags.writeable = False  # shared by every player of this prompt
        old = self._entries.pop(items, None)
        if old is not None:
            self.samples -= old[0].size
        self._entries[items] = (audio, self._mtimes(items))
        self.samples += audio.size
        while self.samples > self.max_samples:
            _, (dropped, _m) = self._entries.popitem(last=False)
            self.samples -= dropped.size


prompt_cache = PromptCache()
"""Process-wide: every call of every flow shares it."""


class IvrBridge:
    """The :class:`ivr.runner.IvrAdapter` of one call."""

    def __init__(self, centre: "CallCentre", call: "Call") -> None:
        self.centre = centre
        self.call = call
        self.players: dict[str, int] = {}  # media player id -> play id
        self.play_ids: dict[int, str] = {}
        self.enqueue_request: int | None = None
        self.last_place: tuple[int, int] | None = None
        self.ivr: "IvrCall | None" = None

    def prompt_finished(self, player_id: str) -> None:
        play_id = self.players.pop(player_id, None)
        if play_id is not None and self.ivr is not None:
            self.play_ids.pop(play_id, None)
            self.ivr.feed(E.PromptFinished(play_id))

    def dtmf(self, digit: str) -> None:
        if self.ivr is not None:
            self.ivr.feed(E.DtmfReceived(digit))

    def queue_updated(self, position: int, expected_wait_s: float) -> None:
        """Feed ``QueueUpdated`` when the caller's place changed (announcements use it)."""
        if self.ivr is None or self.enqueue_request is None:
            return
        if (position, round(expected_wait_s)) != self.last_place:
            self.last_place = (position, round(expected_wait_s))
            self.ivr.feed(E.QueueUpdated(self.enqueue_request, position, expected_wait_s))

    def queue_left(self, reason: str) -> None:
        if self.ivr is not None and self.enqueue_request is not None:
            self.ivr.feed(E.QueueLeft(self.enqueue_request, reason))
            self.enqueue_request = None

    async def perform(self, ivr: "IvrCall", action: A.Action) -> None:
        self.ivr = ivr
        centre, call = self.centre, self.call
        media = centre.media
        assert media is not None
        if isinstance(action, A.PlayPrompts):
            audio = prompt_cache.get(action.items)
            if audio is None:
                audio = await asyncio.get_running_loop().run_in_executor(None, prompt_audio, action.items)
                prompt_cache.put(action.items, audio)
            if call.caller is None or call.caller.leg_id not in media.legs:
                return
            if audio.size == 0:
                ivr.feed(E.PromptFinished(action.play_id))
                return
            player = media.play(ArraySource(audio), leg_id=call.caller.leg_id)
            self.players[player] = action.play_id
            self.play_ids[action.play_id] = player
        elif isinstance(action, A.StopPlayback):
            player = self.play_ids.pop(action.play_id, None)
            if player is not None and player in media.players:
                self.players.pop(player, None)
                media.stop_playback(player)
        elif isinstance(action, A.Enqueue):
            if action.queue not in centre.queue_ids:
                ivr.feed(E.QueueLeft(action.request_id, "closed"))
                return
            self.enqueue_request = action.request_id
            call.queue = action.queue
            centre.start_music(call)
            centre.enqueue_now(call)  # publishes queue.stats, which feeds QueueUpdated
        elif isinstance(action, A.Dequeue):
            self.enqueue_request = None
            centre.dequeue(call, action.reason)
        elif isinstance(action, A.ResumeMusic):
            centre.start_music(call)
        elif isinstance(action, A.SetCallData):
            call.variables[action.key] = action.value
        elif isinstance(action, A.HangUp):
            centre.hangup(call, f"ivr_{action.reason}" if action.reason else "ivr_hangup")
        elif isinstance(action, A.FlowFinished):
            if action.reason not in ("agent",) and call.state.value in ("routing", "post_call"):
                centre.hangup(call, "ivr_finished")
        elif isinstance(action, A.RequestLookup):
            await self._lookup(ivr, action)
        elif isinstance(action, A.StoreSurveyResult):
            centre._store("surveys", {"call_id": call.call_id, "tenant": call.tenant, "ts": time.time(),
                                      "agent": action.agent_number or call.agent, "queue": call.queue,
                                      "question": f"{action.survey}/{action.question}",
                                      "score": int(action.answer) if action.answer.isdigit() else 0})
        elif isinstance(action, A.RequestCallback):
            centre._store("callbacks", {"tenant": call.tenant, "call_id": call.call_id, "caller_number": action.number,
                                        "queue": action.queue or "", "requested_ts": time.time()})
        elif isinstance(action, A.AttemptTransfer):
            from engine.transfers import attempt_transfer

            attempt_transfer(centre, call, ivr, action)
        elif isinstance(action, A.RecordVoicemail):
            request_id = action.request_id
            centre.voicemail.start(call, action.mailbox, action.max_length_s,
                                   on_done=lambda path, s: ivr.feed(E.RecordingFinished(request_id, s, path)))
        elif isinstance(action, (A.SetLanguage, A.BridgeAgent)):
            pass
        else:
            logger.warning("[%s] IVR action %s not handled", call.call_id, type(action).__name__)

    async def _lookup(self, ivr: "IvrCall", action: A.RequestLookup) -> None:
        try:
            if action.source == "csv":
                from ivr.csvlookup import CsvLookup

                done = await asyncio.get_running_loop().run_in_executor(None, CsvLookup().lookup, action)
                ivr.feed(done)
                return
            else:
                store = self.centre.engine.store
                rows = await store.aselect(action.table, {action.column: action.key, "tenant": action.tenant})
                row = rows[-1] if rows else None
            ivr.feed(E.LookupCompleted(action.request_id, row))
        except Exception as exc:
            ivr.feed(E.LookupCompleted(action.request_id, None, str(exc)[:200]))


def start_post_call_flow(centre: "CallCentre", call: "Call") -> bool:
    """The agent hung up: run the call's ``post_call_flow`` for the caller (see the module docstring).

    Returns False (the caller is hung up as usual) when the call is not
    talking, names no flow, the flow is unknown or invalid, or the caller
    leg is gone.
    """
    from engine.calls import CallState, CallTrigger
    from ivr.events import CallStarted
    from ivr.interpreter import Interpreter
    from ivr.runner import start_call

    name = str(call.variables.get(POST_CALL_VARIABLE) or "")
    media = centre.media
    if not name or call.state is not CallState.TALKING or media is None or call.caller is None \
            or call.caller.ended or call.caller.leg_id not in media.legs:
        return False
    flow = centre._flow(name)
    if flow is None:
        logger.warning("[%s] post-call flow %r is not configured or invalid: hanging up", call.call_id, name)
        return False
    call.fire(CallTrigger.AGENT_LEFT)
    call.agent_left_ts = time.time()
    centre._stop_recording(call)
    if call.room and call.room in media.rooms:
        media.destroy_room(call.room)
    if call.agent_leg is not None:
        call.agent_leg.ended = True
        centre._drop_leg(call.agent_leg)
    rec = centre.agents.get(call.agent)
    if rec is not None:  # released exactly as by CallCentre.hangup: wrap-up, then ready
        centre.release_agent(rec, call)
    variables = {k: v for k, v in call.variables.items() if k != "history" and k != POST_CALL_VARIABLE}
    variables["agent_number"] = call.agent
    bridge = IvrBridge(centre, call)
    interpreter = Interpreter(flow, call.call_id, variables=variables)
    ivr, task = start_call(interpreter, bridge, CallStarted(call.caller_number, call.dialed_number, time.time()))
    bridge.ivr = ivr
    call.ivr = (ivr, task, bridge)
    centre._tasks.add(task)
    task.add_done_callback(centre._tasks.discard)
    logger.info("[%s] agent %s hung up: caller goes to post-call flow %s", call.call_id, call.agent, name)
    centre._pump()
    return True
