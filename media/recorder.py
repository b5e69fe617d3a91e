"""Call recording: per-call files written by a worker thread behind a bounded queue.

Theory of operation
-------------------
The media clock must never wait for a disk.  So :class:`Recorder` splits the
work in two:

* the clock side (:meth:`Recorder.write_batch`, :meth:`Recorder.write`) puts
  one item per tick on a bounded :class:`queue.Queue` -- all recordings'
  frames of that tick in two ``(n, 160)`` int16 arrays (caller, agent) -- with
  ``put_nowait``.  If the queue is full (the disk stalled) the tick is
  dropped and counted per recording (``dropped_frames``); the number of
  frames lost travels with the recording's next accepted frame and the
  worker writes that much silence, so the file's timeline stays aligned with
  the call.
* one worker thread owns every open file: it mixes (mono: caller + agent,
  saturated to int16) or interleaves (stereo: caller left, agent right),
  encodes and writes.  It gathers up to ``write_batch_s`` (200 ms) of ticks
  and writes each recording's share of them in one call, so its Python work
  (and the GIL it holds against the media clock) is per recording per batch,
  not per recording per tick.

Files go to ``ROOT/YYYY/MM/DD/<call_id>.<ext>`` for the day the recording
started (the caller passes ``started_at``, so the layout is testable and
follows the engine's clock); characters outside ``[A-Za-z0-9._@+-]`` in the
call id become ``_`` and a second recording of the same call gets ``-2``.

Formats (``fmt``): ``wav`` (PCM16), ``wav-ulaw`` (G.711 μ-law, 8 bits, WAVE
format tag 7 with a ``fact`` chunk), both written by this module, and
``flac`` and ``mp3`` through libsndfile (``soundfile``; libsndfile 1.2.2 here
has FLAC and MPEG Layer III write support).

Readable after a crash.  For WAV we write a correct header up front and
*rewrite the RIFF and data sizes every* ``header_update_s`` *of audio*
(default 1 s), flushing the data to the kernel at the same time.  After a
SIGKILL the file is a valid WAV holding everything up to the last update
(at most ``header_update_s`` + ``write_batch_s`` of audio lost from the
header's view; the bytes after the last update are in the file and a
tolerant reader may recover them).  We do not
write a "maximum size" header: several readers reject a data size beyond the
end of file.  FLAC/MP3 files are flushed (``sf_write_sync``) at the same
interval.  MP3 frames are self-delimiting, so a killed MP3 recording reads
back up to its last flushed frame.  A FLAC stream cut by a kill is *not*
readable through libsndfile here (its STREAMINFO says "unknown length" and
reading fails with ``psf_fseek() failed``), so ``flac`` recordings are spooled
as crash-safe WAV (``<call_id>.spool.wav``, same header updates) and encoded
to FLAC when the recording stops; after a crash the spool is a valid WAV and
:func:`recover_spools` (run it at start-up) encodes leftovers to FLAC.  All
of this is checked with SIGKILL in tests/media/test_recorder.py.

Length limits: ``max_length_s`` stops writing at exactly that much audio (the
recording stays open so that :meth:`stop` reports it); a recording shorter
than ``min_length_s`` at :meth:`stop` is deleted and reported as discarded.

The end of each recording is reported by a :class:`RecordingResult` through
the future returned by :meth:`Recorder.stop` and ``on_finished`` (called on
the worker thread: hand it to the event loop with
``loop.call_soon_threadsafe``).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import os
import pathlib
import queue
import re
import struct
import threading
import time
from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt
import soundfile

from media.errors import LocalMediaError, RecorderError
from media.g711 import ulaw_encode

__all__ = ["Recorder", "RecordingResult", "FORMATS", "recording_path", "recover_spools"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
#: fmt name -> file extension
FORMATS = {"wav": "wav", "wav-ulaw": "wav", "flac": "flac", "mp3": "mp3"}
_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")
SPOOL_SUFFIX = ".spool.wav"


@dataclasses.dataclass(frozen=True, slots=True)
class RecordingResult:
    """How a recording ended."""

    recording_id: int
    call_id: str
    tenant: str
    path: pathlib.Path | None
    """The file, or ``None`` when discarded."""
    duration_s: float
    """Audio written (including silence for dropped frames)."""
    discarded: bool
    """Shorter than ``min_length_s``: the file was deleted."""
    max_length_reached: bool
    dropped_frames: int
    """Ticks lost because the queue was full (written as silence)."""
    error: str | None = None
    """Why writing failed, if it did (the file may be partial)."""


def recording_path(root: str | os.PathLike[str], call_id: str, started_at: datetime.datetime, fmt: str) -> pathlib.Path:
    """``ROOT/YYYY/MM/DD/<safe call id>.<ext>`` (without the ``-2`` de-duplication)."""
    if fmt not in FORMATS:
        raise LocalMediaError(f"recording format {fmt!r} is not one of {', '.join(FORMATS)}")
    safe = _SAFE.sub("_", call_id) or "call"
    day = pathlib.Path(root) / f"{started_at.year:04d}" / f"{started_at.month:02d}" / f"{started_at.day:02d}"
    return day / f"{safe}.{FORMATS[fmt]}"


# ---------------------------------------------------------------- writers (worker thread only)


class _WavWriter:
    """PCM16 or μ-law WAV with a header rewritten every ``update_frames`` samples."""

    def __init__(self, path: pathlib.Path, channels: int, ulaw: bool, update_samples: int) -> None:
        self.f = open(path, "xb")
        self.channels = channels
        self.ulaw = ulaw
        self.bytes_per_sample = 1 if ulaw else 2
        self.update_samples = update_samples
        self.data_bytes = 0
        self._since_update = 0
        self._write_header()
        self.f.flush()

    def _write_header(self) -> None:
        ch, bps = self.channels, self.bytes_per_sample
        if self.ulaw:
            # WAVE_FORMAT_MULAW (7): non-PCM, so fmt has cbSize and a fact chunk follows.
            fmt = struct.pack("<HHIIHHH", 7, ch, SAMPLE_RATE, SAMPLE_RATE * ch, ch, 8, 0)
            fact = b"fact" + struct.pack("<II", 4, self.data_bytes // ch)
        else:
            fmt = struct.pack("<HHIIHH", 1, ch, SAMPLE_RATE, SAMPLE_RATE * ch * bps, ch * bps, 16)
            fact = b""
        header = b"fmt " + struct.pack("<I", len(fmt)) + fmt + fact
        riff_size = 4 + len(header) + 8 + self.data_bytes
        self.header_len = 12 + len(header) + 8
        self.f.seek(0)
        self._at_end = False
        self.f.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + header + b"data" + struct.pack("<I", self.data_bytes))

    def write(self, samples: np.ndarray) -> None:
        """``samples``: int16, (n,) mono or (n, 2) stereo."""
        data = ulaw_encode(samples).tobytes() if self.ulaw else samples.astype("<i2", copy=False).tobytes()
        if not self._at_end:  # a seek flushes the buffer: only after a header rewrite
            self.f.seek(self.header_len + self.data_bytes)
            self._at_end = True
        self.f.write(data)
        self.data_bytes += len(data)
        self._since_update += samples.shape[0]
        if self._since_update >= self.update_samples:
            self.sync()

    def sync(self) -> None:
        self._since_update = 0
        self._write_header()
        self.f.flush()  # to the kernel: survives SIGKILL of this process

    def close(self) -> None:
        if self.ulaw and self.data_bytes % 2:
            # RIFF chunks are word aligned: pad byte after an odd-sized data chunk.
            self.f.seek(self.header_len + self.data_bytes)
            self.f.write(b"\0")
            self._at_end = False
        self._write_header()
        self.f.close()


class _FlacSpoolWriter(_WavWriter):
    """A crash-safe WAV spool encoded to FLAC at close."""

    def __init__(self, path: pathlib.Path, channels: int, update_samples: int) -> None:
        self.target = path
        self.spool = path.with_name(path.stem + SPOOL_SUFFIX)
        with open(path, "xb"):
            pass  # reserve the final name
        super().__init__(self.spool, channels, False, update_samples)

    def close(self) -> None:
        super().close()
        _spool_to_flac(self.spool, self.target)


def _spool_to_flac(spool: pathlib.Path, target: pathlib.Path) -> None:
    audio, rate = soundfile.read(str(spool), dtype="int16", always_2d=True)
    staged = target.with_name(target.name + ".tmp")
    soundfile.write(str(staged), audio, rate, subtype="PCM_16", format="FLAC")
    os.replace(staged, target)
    spool.unlink()


def recover_spools(root: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Encode FLAC spools left by a crash under ``root`` (returns the FLAC paths).

    A spool that cannot be read is left in place and logged.
    """
    done = []
    for spool in sorted(pathlib.Path(root).rglob("*" + SPOOL_SUFFIX)):
        target = spool.with_name(spool.name[: -len(SPOOL_SUFFIX)] + ".flac")
        try:
            _spool_to_flac(spool, target)
            done.append(target)
        except (OSError, RuntimeError) as exc:
            logger.warning("cannot recover recording spool %s: %s", spool, exc)
    return done


class _SoundFileWriter:
    def __init__(self, path: pathlib.Path, channels: int, fmt: str, update_samples: int) -> None:
        fmt_name, subtype = {"mp3": ("MP3", "MPEG_LAYER_III")}[fmt]
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        # Create exclusively first so two recordings never share a file.
        with open(path, "xb"):
            pass
        self.sf = soundfile.SoundFile(str(path), "w", SAMPLE_RATE, channels, subtype, format=fmt_name)
        self.update_samples = update_samples
        self._since_update = 0

    # libsndfile 1.2.2's MP3 (LAME) stereo output has variable channel
    # separation: 1000 Hz left / 600 Hz right came back 57 dB apart in some
    # runs and only 15-35 dB apart in others, changing with the write sizes
    # and even with what the process did before.  Small writes were best
    # in our measurements, so we feed it 160 frames (one tick) at a time; use WAV or
    # FLAC when the channels must stay exactly apart.
    _CHUNK = 160

    def write(self, samples: np.ndarray) -> None:
        for i in range(0, samples.shape[0], self._CHUNK):
            self.sf.write(samples[i : i + self._CHUNK])
        self._since_update += samples.shape[0]
        if self._since_update >= self.update_samples:
            self._since_update = 0
            self.sf.flush()

    def close(self) -> None:
        self.sf.close()


@dataclasses.dataclass(slots=True)
class _Open:
    recording_id: int
    call_id: str
    tenant: str
    path: pathlib.Path
    stereo: bool
    writer: _WavWriter | _FlacSpoolWriter | _SoundFileWriter | None
    max_samples: int | None
    min_samples: int
    on_finished: Callable[[RecordingResult], None] | None
    future: concurrent.futures.Future
    samples: int = 0
    max_reached: bool = False
    error: str | None = None


# ---------------------------------------------------------------- recorder


class Recorder:
    """Records many calls at once; see the module docstring.

    Args:
        root: recordings root directory.
        fmt: default format, one of :data:`FORMATS`.
        stereo: default channel layout (caller left, agent right) or mono mix.
        min_length_s / max_length_s: default length limits (``None`` = no max).
        queue_ticks: queue bound in ticks (250 = 5 s of audio).
        header_update_s: WAV header/flush interval in seconds of audio.
        on_finished: default end callback (worker thread).
        write_batch_s: the worker gathers up to this much audio (or until
            this long has passed) and writes each recording's share in one
            call: fewer Python operations per tick on the worker thread, so
            less GIL contention with the media clock.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        fmt: str = "wav",
        stereo: bool = False,
        min_length_s: float = 0.0,
        max_length_s: float | None = None,
        queue_ticks: int = 250,
        header_update_s: float = 1.0,
        on_finished: Callable[[RecordingResult], None] | None = None,
        write_batch_s: float = 0.2,
    ) -> None:
        if fmt not in FORMATS:
            raise LocalMediaError(f"recording format {fmt!r} is not one of {', '.join(FORMATS)}")
        self.root = pathlib.Path(root)
        self.fmt = fmt
        self.stereo = stereo
        self.min_length_s = min_length_s
        self.max_length_s = max_length_s
        self.header_update_samples = max(FRAME_SAMPLES, int(header_update_s * SAMPLE_RATE))
        self.write_batch_s = write_batch_s
        self._batch_ticks = max(1, int(round(write_batch_s * SAMPLE_RATE / FRAME_SAMPLES)))
        self.on_finished = on_finished
        self._queue: queue.Queue = queue.Queue(maxsize=queue_ticks)
        self._next_id = 1
        self._dropped: dict[int, int] = {}  # clock side: frames lost not yet reported to the worker
        self._dropped_total: dict[int, int] = {}
        self._open: dict[int, _Open] = {}  # worker side
        self._lock = threading.Lock()
        self.frames_written = 0  # worker side, for tests and stats
        self._thread = threading.Thread(target=self._run, name="ctiengine-recorder", daemon=True)
        self._closed = False
        self._thread.start()

    # ------------------------------------------------------------ clock side

    def start(
        self,
        call_id: str,
        started_at: datetime.datetime,
        tenant: str = "default",
        fmt: str | None = None,
        stereo: bool | None = None,
        min_length_s: float | None = None,
        max_length_s: float | None = None,
        on_finished: Callable[[RecordingResult], None] | None = None,
    ) -> int:
        """Open a recording; returns its id for :meth:`write_batch` / :meth:`stop`.

        The file is created by the worker; an error opening it is reported in
        the result (``error``), not raised here.

        Raises:
            LocalMediaError: unknown format.
        """
        fmt = fmt or self.fmt
        path = recording_path(self.root, call_id, started_at, fmt)
        with self._lock:
            rid = self._next_id
            self._next_id += 1
        max_s = self.max_length_s if max_length_s is None else max_length_s
        rec = _Open(
            recording_id=rid, call_id=call_id, tenant=tenant, path=path,
            stereo=self.stereo if stereo is None else stereo, writer=None,
            max_samples=None if max_s is None else int(max_s * SAMPLE_RATE),
            min_samples=int((self.min_length_s if min_length_s is None else min_length_s) * SAMPLE_RATE),
            on_finished=on_finished or self.on_finished, future=concurrent.futures.Future(),
        )
        self._dropped[rid] = 0
        self._dropped_total[rid] = 0
        self._control(("open", rec, fmt))
        return rid

    def write_batch(self, recording_ids: Sequence[int] | np.ndarray, caller: npt.NDArray[np.int16],
                    agent: npt.NDArray[np.int16]) -> bool:
        """Queue one tick of audio for many recordings; never blocks.

        Args:
            recording_ids: ``(n,)`` ids from :meth:`start`.
            caller, agent: ``(n, 160)`` int16 (copied before queueing).

        Returns:
            False when the queue was full and the tick was dropped (counted).
        """
        ids = list(recording_ids)
        pending = [self._dropped.get(r, 0) for r in ids]
        try:
            self._queue.put_nowait(("frames", ids, np.array(caller, np.int16), np.array(agent, np.int16), pending))
        except queue.Full:
            for r in ids:
                if r in self._dropped:
                    self._dropped[r] += 1
                    self._dropped_total[r] += 1
            return False
        for r in ids:
            if r in self._dropped:
                self._dropped[r] = 0
        return True

    def write(self, recording_id: int, caller: npt.NDArray[np.int16], agent: npt.NDArray[np.int16]) -> bool:
        """One recording's frame; same as a batch of one."""
        return self.write_batch([recording_id], np.asarray(caller)[None, :], np.asarray(agent)[None, :])

    def stop(self, recording_id: int) -> concurrent.futures.Future:
        """Close a recording after its queued audio; the future gives the :class:`RecordingResult`."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        pending = self._dropped.pop(recording_id, 0)
        self._control(("close", recording_id, fut, pending, self._dropped_total.pop(recording_id, 0)))
        return fut

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every open recording and the worker (blocks up to ``timeout_s``)."""
        if self._closed:
            return
        self._closed = True
        self._control(("shutdown",))
        self._thread.join(timeout_s)

    def _control(self, item: tuple) -> None:
        # Control messages must not be lost: block briefly if the queue is
        # full (only frames are droppable).  They are rare (per call, not per tick).
        if self._closed and item[0] != "shutdown":
            raise RecorderError("recorder is closed")
        self._queue.put(item, timeout=5.0)

    # ------------------------------------------------------------ worker

    def _run(self) -> None:
        pending: list[tuple] = []  # frame items not yet written
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._flush(pending)
                continue
            kind = item[0]
            if kind == "frames":
                if not pending:
                    deadline = time.monotonic() + self.write_batch_s
                pending.append(item[1:])
                if len(pending) >= self._batch_ticks:
                    self._flush(pending)
                continue
            self._flush(pending)  # control messages see all earlier audio written
            try:
                if kind == "open":
                    self._on_open(*item[1:])
                elif kind == "close":
                    self._on_close(*item[1:])
                elif kind == "shutdown":
                    for rid in list(self._open):
                        self._on_close(rid, concurrent.futures.Future(), 0, 0)
                    return
            except Exception:  # a bug: log it, keep recording the other calls
                logger.exception("recorder worker failed on %s", kind)

    def _flush(self, pending: list[tuple]) -> None:
        if not pending:
            return
        try:
            self._on_frames(list(pending))
        except Exception:  # a bug: log it, keep recording the other calls
            logger.exception("recorder worker failed writing %d ticks", len(pending))
        finally:
            pending.clear()

    def _on_open(self, rec: _Open, fmt: str) -> None:
        path = rec.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            n = 2
            while path.exists():
                path = rec.path.with_name(f"{rec.path.stem}-{n}{rec.path.suffix}")
                n += 1
            rec.path = path
            channels = 2 if rec.stereo else 1
            if fmt in ("wav", "wav-ulaw"):
                rec.writer = _WavWriter(path, channels, fmt == "wav-ulaw", self.header_update_samples)
            elif fmt == "flac":
                rec.writer = _FlacSpoolWriter(path, channels, self.header_update_samples)
            else:
                rec.writer = _SoundFileWriter(path, channels, fmt, self.header_update_samples)
            logger.info("[%s] recording to %s", rec.call_id, path)
        except (OSError, RuntimeError) as exc:
            rec.error = f"cannot open {path}: {exc}"
            logger.warning("[%s] %s", rec.call_id, rec.error)
        self._open[rec.recording_id] = rec

    def _on_frames(self, ticks: list[tuple]) -> None:
        """Write queued ticks: runs of ticks with the same recordings (the
        usual case) become one write per recording per run."""
        start = 0
        while start < len(ticks):
            ids = ticks[start][0]
            end = start + 1
            while end < len(ticks) and ticks[end][0] == ids:
                end += 1
            run = ticks[start:end]
            if any(any(t[3]) for t in run):  # silence for dropped ticks: tick by tick
                for t in run:
                    self._write_tick(*t)
            else:
                k = len(run)
                # (k, n, 160) -> (n, k*160): each recording's audio of the run, contiguous.
                caller = np.stack([t[1] for t in run]).transpose(1, 0, 2).reshape(len(ids), k * FRAME_SAMPLES)
                agent = np.stack([t[2] for t in run]).transpose(1, 0, 2).reshape(len(ids), k * FRAME_SAMPLES)
                for i, rid in enumerate(ids):
                    rec = self._open.get(rid)
                    if rec is None or rec.writer is None or rec.max_reached:
                        continue
                    self._write(rec, caller[i], agent[i])
                    self.frames_written += k
            start = end

    def _write_tick(self, ids: list[int], caller: np.ndarray, agent: np.ndarray, pending: list[int]) -> None:
        for i, rid in enumerate(ids):
            rec = self._open.get(rid)
            if rec is None or rec.writer is None or rec.max_reached:
                continue
            if pending[i]:
                silence = np.zeros(pending[i] * FRAME_SAMPLES, np.int16)
                self._write(rec, silence, silence)
            self._write(rec, caller[i], agent[i])
            self.frames_written += 1

    def _write(self, rec: _Open, caller: np.ndarray, agent: np.ndarray) -> None:
        n = caller.shape[0]
        if rec.max_samples is not None and rec.samples + n >= rec.max_samples:
            n = rec.max_samples - rec.samples
            rec.max_reached = True
            logger.info("[%s] recording reached its maximum length", rec.call_id)
        if n <= 0:
            return
        if rec.stereo:
            out = np.empty((n, 2), np.int16)
            out[:, 0] = caller[:n]
            out[:, 1] = agent[:n]
        else:
            out = np.clip(caller[:n].astype(np.int32) + agent[:n], -32768, 32767).astype(np.int16)
        try:
            assert rec.writer is not None
            rec.writer.write(out)
            rec.samples += n
        except (OSError, RuntimeError) as exc:
            rec.error = f"write failed: {exc}"
            logger.warning("[%s] recording %s", rec.call_id, rec.error)
            rec.writer = None

    def _on_close(self, rid: int, fut: concurrent.futures.Future, pending: int, dropped: int) -> None:
        rec = self._open.pop(rid, None)
        if rec is None:
            fut.set_exception(RecorderError(f"recording {rid} is not open"))
            return
        if pending and rec.writer is not None and not rec.max_reached:
            z = np.zeros(pending * FRAME_SAMPLES, np.int16)
            self._write(rec, z, z)
        if rec.writer is not None:
            try:
                rec.writer.close()
            except (OSError, RuntimeError) as exc:
                rec.error = f"close failed: {exc}"
        discarded = rec.samples < rec.min_samples
        path: pathlib.Path | None = rec.path
        if discarded:
            for p in (rec.path, rec.path.with_name(rec.path.stem + SPOOL_SUFFIX)):
                if p.exists():
                    p.unlink()
        if discarded or (rec.error and not rec.path.exists()):
            path = None
        result = RecordingResult(
            recording_id=rid, call_id=rec.call_id, tenant=rec.tenant, path=path,
            duration_s=rec.samples / SAMPLE_RATE, discarded=discarded,
            max_length_reached=rec.max_reached, dropped_frames=dropped, error=rec.error,
        )
        logger.info("[%s] recording finished: %.1f s%s", rec.call_id, result.duration_s,
                    " (discarded)" if discarded else "")
        for f in (fut, rec.future):
            if not f.done():
                f.set_result(result)
        if rec.on_finished is not None:
            try:
                rec.on_finished(result)
            except Exception:
                logger.exception("[%s] recording on_finished callback failed", rec.call_id)
