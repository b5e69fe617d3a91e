"""``MediaWorker``: a :class:`media.engine.MediaEngine` in its own process.

Theory of operation
-------------------
ARCHITECTURE.md lets the media clock run in worker processes "when
measurement shows it pays" so that signalling and media each get a core
(docs/performance/media.md: at 1,000 calls the tick needs about one core on
its own).  :class:`MediaWorker` starts a child process (``spawn``), runs a
``MediaEngine`` on that process's own asyncio loop, and proxies the engine's
methods over a pipe:

* ``await worker.call("create_leg", "leg-1", remote=(host, port))`` sends
  ``(request_id, method, args, kwargs)``; the child runs the method between
  ticks and answers ``(request_id, ok, result)``.  Results are made
  picklable: a :class:`media.leg.Leg` becomes ``{"leg_id", "local_port"}``;
  :class:`LegStatistics` and events are frozen dataclasses and cross as they are.
  A :class:`media.errors.MediaError` raised in the child is raised again in
  the parent (same class and message).
* every engine event is forwarded and delivered to ``on_event`` (or queued
  for :meth:`MediaWorker.next_event`) on the parent's loop.
* players cross the pipe as picklable sources (``ArraySource``,
  ``MusicSource``, ``PromptSource``, ``ToneSource`` -- numpy arrays inside);
  recordings are made by a :class:`media.recorder.Recorder` that lives in
  the child: ``call("start_recording", room_id, member_id, call_id,
  started_at, channels, fmt=..., stereo=...)``; ``stop_recording`` answers
  with the ``RecordingResult`` once the file is closed.

Only the methods in :data:`ALLOWED` may be called.  The child exits when the
pipe closes, so a parent that dies takes its media process with it.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import multiprocessing
import os
from collections import deque
from typing import Any, Callable

from media.errors import LocalMediaError, MediaError

__all__ = ["MediaWorker", "ALLOWED"]

logger = logging.getLogger(__name__)

ALLOWED = frozenset({
    "create_leg", "update_leg", "destroy_leg", "leg_statistics",
    "create_room", "destroy_room", "join", "leave", "set_hearing", "apply_hear_set",
    "play", "stop_playback", "send_dtmf", "start_recording", "stop_recording", "set_channels",
    "tick_figures",
})


def _plain(result: Any) -> Any:
    from media.leg import Leg

    if isinstance(result, Leg):
        return {"leg_id": result.leg_id, "local_port": result.local_port}
    return result


def _child(config: Any, conn: Any) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_child_async(config, conn))


async def _child_async(config: Any, conn: Any) -> None:
    from media.engine import MediaEngine
    from media.recorder import Recorder

    loop = asyncio.get_running_loop()
    engine = MediaEngine(config, on_event=lambda ev: conn.send(("event", ev)))
    recorders: dict[tuple[str, str, bool], Recorder] = {}
    done = loop.create_future()

    def start_recording(room_id: str, member_id: str, call_id: str, started_at: datetime.datetime,
                        channels: list, root_dir: str, fmt: str = "wav", stereo: bool = True,
                        tenant: str = "default") -> int:
        key = (root_dir, fmt, stereo)
        rec = recorders.get(key)
        if rec is None:
            rec = recorders[key] = Recorder(root_dir, fmt=fmt, stereo=stereo)
        rid = rec.start(call_id, started_at, tenant=tenant)
        engine.record(room_id, member_id, rec, channels, recording_id=rid)
        return rid

    def tick_figures() -> dict:
        ts = engine.tick_stats
        return {"ticks": ts.count, "tick_p99_ms": ts.percentile_ms(99), "tick_cpu_p99_ms": ts.percentile_ms(99, "cpu"),
                "pid": os.getpid()}

    extra = {"start_recording": start_recording, "tick_figures": tick_figures}

    def on_readable() -> None:
        try:
            while conn.poll():
                msg = conn.recv()
                if msg is None:
                    raise EOFError
                rid, method, args, kwargs = msg
                try:
                    if method not in ALLOWED:
                        raise LocalMediaError(f"media worker: method {method!r} is not allowed")
                    fn = extra.get(method) or getattr(engine, method)
                    result = fn(*args, **kwargs)
                    if method == "stop_recording" and result is not None:
                        result.add_done_callback(lambda f, rid=rid: conn.send(
                            ("reply", rid, f.exception() is None, f.result() if f.exception() is None else str(f.exception()))))
                        continue
                    conn.send(("reply", rid, True, _plain(result)))
                except MediaError as exc:
                    conn.send(("reply", rid, False, (type(exc).__name__, str(exc))))
                except Exception as exc:  # a bug: report it, keep the media running
                    logger.exception("media worker: %s failed", method)
                    conn.send(("reply", rid, False, ("LocalMediaError", f"{method}: {type(exc).__name__}: {exc}")))
        except (EOFError, OSError):
            if not done.done():
                done.set_result(None)

    loop.add_reader(conn.fileno(), on_readable)
    await engine.start()
    conn.send(("ready", os.getpid()))
    await done
    loop.remove_reader(conn.fileno())
    await engine.stop()
    for rec in recorders.values():
        rec.close()


class MediaWorker:
    """Parent-side proxy of a media engine in a child process.

    Args:
        config: :class:`media.engine.MediaConfig` for the child's engine.
        on_event: called on the parent's loop with each forwarded event.
    """

    def __init__(self, config: Any = None, on_event: Callable[[Any], None] | None = None) -> None:
        from media.engine import MediaConfig

        self.config = config or MediaConfig()
        self.on_event = on_event
        self.events: deque = deque()
        self.pid: int | None = None
        self._conn: Any = None
        self._proc: Any = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future | None = None

    async def start(self, app: object | None = None, timeout_s: float = 30.0) -> None:
        """Start the child process and wait until its media clock runs."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(self.config, child), name="ctiengine-media", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._loop.add_reader(parent.fileno(), self._on_readable)
        self.pid = await asyncio.wait_for(self._ready, timeout_s)
        logger.info("media worker running as pid %d", self.pid)

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                msg = self._conn.recv()
                if msg[0] == "event":
                    if self.on_event is not None:
                        try:
                            self.on_event(msg[1])
                        except Exception:
                            logger.exception("media worker on_event failed for %r", msg[1])
                    else:
                        self.events.append(msg[1])
                elif msg[0] == "reply":
                    _, rid, ok, result = msg
                    fut = self._pending.pop(rid, None)
                    if fut is None or fut.done():
                        continue
                    if ok:
                        fut.set_result(result)
                    else:
                        import media.errors as errors

                        name, text = result if isinstance(result, tuple) else ("LocalMediaError", str(result))
                        fut.set_exception(getattr(errors, name, LocalMediaError)(text))
                elif msg[0] == "ready" and self._ready is not None and not self._ready.done():
                    self._ready.set_result(msg[1])
        except (EOFError, OSError):
            self._fail_all("media worker process ended")

    def _fail_all(self, why: str) -> None:
        if self._loop is not None and self._conn is not None:
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (OSError, ValueError):
                pass
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MediaError(why))
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(MediaError(why))

    async def call(self, method: str, *args: Any, timeout_s: float = 10.0, **kwargs: Any) -> Any:
        """Run ``MediaEngine.<method>(*args, **kwargs)`` in the child and return its (picklable) result.

        Raises:
            LocalMediaError: the method is not in :data:`ALLOWED` or the
                engine refused the call (the child's error, re-raised).
            MediaError: the worker process is gone.
        """
        if method not in ALLOWED:
            raise LocalMediaError(f"media worker: method {method!r} is not allowed")
        if self._conn is None or self._loop is None:
            raise LocalMediaError("media worker is not started")
        self._next += 1
        fut = self._loop.create_future()
        self._pending[self._next] = fut
        self._conn.send((self._next, method, args, kwargs))
        return await asyncio.wait_for(fut, timeout_s)

    def next_event(self) -> Any:
        """The oldest forwarded event (when no ``on_event`` is set), or None."""
        return self.events.popleft() if self.events else None

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close the pipe (the child stops its engine and recorders) and wait for it."""
        if self._conn is None:
            return
        try:
            self._conn.send(None)
        except OSError:
            pass
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (OSError, ValueError):
                pass
        await asyncio.get_running_loop().run_in_executor(None, self._proc.join, timeout_s)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()
        self._conn = None
        self._fail_all("media worker stopped")
