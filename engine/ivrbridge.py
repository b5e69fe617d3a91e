"""IVR ↔ engine adapter: runs a route's flow (``flow:NAME``) for a caller leg.

Theory of operation
-------------------
``ivr/runner.py`` drives the sans-IO interpreter and hands every action
except timers to :class:`IvrBridge.perform`; this module maps them onto the
call path:

* ``PlayPrompts`` → audio is prepared off the loop (files decoded, ``tts``
  and spelled ``digits``/``number``/``date`` items spoken by espeak-ng through
  :mod:`media.tts`, which caches by text), then one
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
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from ivr import actions as A
from ivr import events as E
from media.player import ArraySource, load_prompt

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
            loop = asyncio.get_running_loop()
            audio = await loop.run_in_executor(None, prompt_audio, action.items)
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
            if action.reason not in ("agent",) and call.state.value == "routing":
                centre.hangup(call, "ivr_finished")
        elif isinstance(action, A.RequestLookup):
            await self._lookup(ivr, action)
        elif isinstance(action, A.StoreSurveyResult):
            centre._store("surveys", {"call_id": call.call_id, "tenant": call.tenant, "ts": time.time(),
                                      "agent": action.agent_number or "", "queue": call.queue,
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
