"""Errors of the ``media`` package.

A small hierarchy after h11's ``ProtocolError`` split (STYLE.md §4):

* :class:`RemoteMediaError` -- a peer sent something we cannot use (a
  malformed RTP packet, a short RFC 4733 event payload).  The media loop
  drops the packet, counts it, and goes on; it never dies on bad input.
* :class:`LocalMediaError` -- our own code asked for something illegal
  (wrong array dtype or shape, a digit that has no DTMF event code).  It is
  a bug in the caller: tests should see it.
* :class:`MediaFormatError` -- an audio file or array is in a format we do not
  handle (unreadable WAV, unsupported container).
* :class:`PromptNotFoundError` -- a prompt, prompt-set word or music file is
  missing.
* :class:`TtsError` -- the espeak-ng synthesiser failed or is not installed.
* :class:`RecorderError` -- a recording could not be opened or written.

Messages name the thing and the place, e.g.
``"RFC 4733 event payload is 3 bytes, needs 4"``.
"""
from __future__ import annotations

__all__ = [
    "MediaError",
    "RemoteMediaError",
    "LocalMediaError",
    "MediaFormatError",
    "PromptNotFoundError",
    "TtsError",
    "RecorderError",
]


class MediaError(Exception):
    """Base class of every error raised by ``media``."""


class RemoteMediaError(MediaError, ValueError):
    """A peer sent media we cannot use; drop it and go on."""


class LocalMediaError(MediaError, ValueError):
    """Our own code asked for something illegal (a bug in the caller)."""


class MediaFormatError(MediaError, ValueError):
    """An audio file or array is in a format that is not handled."""


class PromptNotFoundError(MediaError, FileNotFoundError):
    """A prompt file, prompt-set word or music file does not exist."""


class TtsError(MediaError, RuntimeError):
    """Text-to-speech synthesis failed (espeak-ng missing or erroring)."""


class RecorderError(MediaError, OSError):
    """A recording file could not be opened or written."""
