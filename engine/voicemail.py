"""Voicemail: record what a caller says into a mailbox (file + ``voicemail`` row + event).

Theory of operation
-------------------
A message is a mono recording of the caller leg: the leg joins a private
room ``vm-<call id>`` whose only other member is a recorder (channels
``[[caller], []]``, mixed to mono by :class:`media.recorder.Recorder`, one
recorder per mailbox writing under ``<[recording] path>/voicemail/<mailbox>/``).
It ends on ``#`` (RFC 4733 digit), after ``max_length_s``, or when the
caller hangs up.  When the recorder's worker has closed the file, a
``voicemail`` row is written (tenant, mailbox, caller number, duration,
path), ``voicemail.new`` is published and the caller of :meth:`start` is
told (the IVR gets ``RecordingFinished``; a ``voicemail:`` route hangs up).
"""
from __future__ import annotations

import datetime
import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Any, Callable

logger = logging.getLogger("engine.voicemail")

DEFAULT_MAX_LENGTH_S = 120.0
MEMBER = "voicemail"


@dataclass(slots=True)
class Message:
    """A message being recorded."""

    mailbox: str
    room: str
    started: float
    timer: Any
    on_done: Callable[[str, float], None] | None


class Voicemail:
    """Mailbox recorders of one engine (created on first use)."""

    def __init__(self, centre: Any) -> None:
        self.centre = centre
        self.recorders: dict[str, Any] = {}
        self.active: dict[str, Message] = {}  # call id -> message

    def _recorder(self, mailbox: str) -> Any:
        from media.recorder import Recorder

        rec = self.recorders.get(mailbox)
        if rec is None:
            cfg = self.centre.config
            root = pathlib.Path(cfg.resolve_path(cfg.recording.path)) / "voicemail" / mailbox
            rec = self.recorders[mailbox] = Recorder(root, fmt="wav", stereo=False)
        return rec

    def start(self, call: Any, mailbox: str, max_length_s: float = DEFAULT_MAX_LENGTH_S,
              on_done: Callable[[str, float], None] | None = None) -> None:
        """Start recording ``call``'s caller leg into ``mailbox``."""
        media, loop = self.centre.media, self.centre.loop
        if call.call_id in self.active or call.caller is None or call.caller.leg_id not in media.legs:
            return
        recorder = self._recorder(mailbox)
        rid = recorder.start(call.call_id, datetime.datetime.now(datetime.timezone.utc), call.tenant, stereo=False)
        room = f"vm-{call.call_id}"
        media.create_room(room, call.tenant)
        media.join(room, call.caller.leg_id)
        media.record(room, MEMBER, recorder, [[call.caller.leg_id], []], recording_id=rid)
        timer = loop.call_later(max_length_s, self.stop, call, "max_length")
        self.active[call.call_id] = Message(mailbox, room, time.time(), timer, on_done)
        logger.info("[%s] recording voicemail for mailbox %s (max %.0f s)", call.call_id, mailbox, max_length_s)

    def recording(self, call: Any) -> bool:
        return call.call_id in self.active

    def stop(self, call: Any, reason: str) -> None:
        """End the message (``#``, max length, hang-up); the row is written when the file is closed."""
        msg = self.active.pop(call.call_id, None)
        if msg is None:
            return
        msg.timer.cancel()
        media, loop = self.centre.media, self.centre.loop
        fut = media.stop_recording(msg.room, MEMBER)
        media.destroy_room(msg.room)
        logger.info("[%s] voicemail for %s ended: %s", call.call_id, msg.mailbox, reason)

        def done(f: Any) -> None:
            try:
                res = f.result()
            except Exception:
                logger.exception("[%s] voicemail recording failed", call.call_id)
                return
            loop.call_soon_threadsafe(self._finished, call, msg, res)

        fut.add_done_callback(done)

    def _finished(self, call: Any, msg: Message, res: Any) -> None:
        path = str(res.path) if res.path is not None else ""
        if path:
            self.centre._store("voicemail", {"call_id": call.call_id, "tenant": call.tenant, "mailbox": msg.mailbox,
                                             "caller_number": call.caller_number, "ts": msg.started,
                                             "duration_s": round(res.duration_s, 3), "path": path})
            self.centre.engine.bus.publish("voicemail.new", {
                "call_id": call.call_id, "mailbox": msg.mailbox, "caller_number": call.caller_number,
                "duration_s": round(res.duration_s, 3), "path": path}, tenant=call.tenant)
        if msg.on_done is not None:
            msg.on_done(path, res.duration_s)

    def close(self) -> None:
        for rec in self.recorders.values():
            rec.close()
        self.recorders.clear()
