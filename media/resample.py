"""Sample-rate conversion to the 8 kHz telephony rate, done once per file.

Theory of operation
-------------------
Prompts, music and synthesised speech arrive at any rate (8, 11.025, 16,
22.05, 44.1, 48 kHz ...) and any channel count.  They are converted once,
when loaded, to 8 kHz mono ``int16`` and cached, so the 20 ms media clock only
ever copies ready frames.

Conversion is band-limited interpolation: every output sample at input time
``t = n * rate_in / rate_out`` is the sum of nearby input samples weighted by
a Kaiser-windowed sinc whose cutoff is ``0.5 * min(rate_in, rate_out)``
scaled by ``rolloff``.  When decimating, the sinc is stretched by the rate
ratio, which makes it the anti-aliasing low-pass filter: content above the new
Nyquist frequency (4 kHz) is attenuated by about ``KAISER_BETA``-worth of
stop-band (≈ 80 dB for beta 8.6) before it can fold down.  The kernel is
evaluated for each output sample's exact fractional position, so any rate
ratio works (no rational factorisation, no polyphase table limits).  Work is
done in chunks of output samples to bound memory.

This module knows nothing about files; :mod:`media.player` reads them.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from media.errors import LocalMediaError

__all__ = ["resample", "to_mono", "to_int16", "TELEPHONY_RATE"]

TELEPHONY_RATE = 8000
#: Kaiser window shape: ~80 dB stop-band attenuation.
KAISER_BETA = 8.6
#: Half-width of the kernel in zero crossings of the (possibly stretched) sinc.
ZERO_CROSSINGS = 16
_CHUNK = 8192
# The Kaiser window sampled finely once; np.interp into it is far cheaper
# than evaluating Bessel I0 for every tap.
_WINDOW_U = np.linspace(0.0, 1.0, 8193)
_WINDOW = np.i0(KAISER_BETA * np.sqrt(1.0 - _WINDOW_U**2)) / np.i0(KAISER_BETA)


def to_mono(audio: np.ndarray) -> npt.NDArray[np.float64]:
    """Average channels: ``(frames,)`` or ``(frames, channels)`` → float64 ``(frames,)``."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio.astype(np.float64)
    if audio.ndim != 2:
        raise LocalMediaError(f"to_mono expects 1-D or 2-D (frames, channels) audio, got {audio.ndim}-D")
    return audio.astype(np.float64).mean(axis=1)


def to_int16(signal: np.ndarray) -> npt.NDArray[np.int16]:
    """Round and saturate a float signal (int16 scale) to ``int16``."""
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def resample(
    signal: npt.ArrayLike, rate_in: int, rate_out: int = TELEPHONY_RATE, rolloff: float = 0.92
) -> npt.NDArray[np.float64]:
    """Resample a 1-D float signal from ``rate_in`` to ``rate_out`` Hz.

    Args:
        signal: 1-D samples (any numeric dtype; returned in the same scale).
        rate_in: input sample rate in Hz.
        rate_out: output sample rate in Hz (default 8000).
        rolloff: cutoff as a fraction of the lower Nyquist frequency; 0.92
            keeps the telephone band up to ~3.7 kHz flat at 8 kHz.

    Returns:
        float64 samples, ``ceil(len * rate_out / rate_in)`` of them.

    Raises:
        LocalMediaError: rates not positive, or ``signal`` not 1-D.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise LocalMediaError(f"resample expects 1-D audio, got shape {x.shape}")
    if rate_in <= 0 or rate_out <= 0:
        raise LocalMediaError(f"resample rates must be positive, got {rate_in} -> {rate_out}")
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    ratio = rate_out / rate_in
    n_out = int(np.ceil(x.size * ratio))
    # Cutoff in cycles per input sample; < 0.5 when decimating (the anti-alias filter).
    cutoff = 0.5 * min(1.0, ratio) * rolloff
    half_width = int(np.ceil(ZERO_CROSSINGS / (2 * cutoff)))  # input samples each side
    offsets = np.arange(-half_width + 1, half_width + 1)
    padded = np.concatenate([np.zeros(half_width), x, np.zeros(half_width + 1)])
    out = np.empty(n_out)
    for start in range(0, n_out, _CHUNK):
        n = np.arange(start, min(start + _CHUNK, n_out))
        t = n / ratio  # exact input position of each output sample
        base = np.floor(t).astype(np.int64)
        taps = base[:, None] + offsets[None, :]  # input indices used
        dist = t[:, None] - taps  # distance in input samples
        kernel = 2 * cutoff * np.sinc(2 * cutoff * dist)
        kernel *= np.interp(np.abs(dist) / (half_width + 1), _WINDOW_U, _WINDOW)
        out[n] = np.einsum("ij,ij->i", padded[taps + half_width], kernel)
    return out
