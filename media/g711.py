"""G.711 μ-law and A-law (ITU-T G.711, RFC 3551 §4.5.14 PCMU/PCMA) on numpy arrays.

Theory of operation
-------------------
G.711 maps every 16-bit linear sample to one 8-bit code and back.  Both
directions are pure functions of a small integer, so we compute them once at
import into lookup tables and convert whole batches with one gather:

* encode: a 65,536-entry ``uint8`` table indexed by the ``uint16`` view of the
  ``int16`` samples (the two's-complement bit pattern), so a (n_legs, 160)
  batch is encoded by ``table[pcm.view(uint16)]`` with no Python loop;
* decode: a 256-entry ``int16`` table indexed by the code byte; for
  contiguous arrays with an even last dimension (every 160-sample frame) a
  65,536-entry table decodes two codes per gather (the byte pair viewed as
  ``uint16`` → both samples viewed as one ``uint32``), halving the gathers.

The tables are built with the segment/quantisation algorithm of G.711
(μ-law: 14-bit magnitude, bias 33 in that scale, eight segments of 16 steps,
all bits inverted; A-law: 13-bit magnitude, eight segments, even bits
inverted by XOR 0x55).  The result is bit-exact with the classic Sun/CCITT
reference code that the stdlib ``audioop`` module also uses; the tests check
every one of the 65,536 linear and 256 coded values against ``audioop``.

Every function works on any shape (a single frame of 160 samples, a batch
of frames, an empty array) and returns an array of the same shape.  An
``out=`` array may be passed to avoid allocating in the 20 ms media clock.
The functions refuse (``LocalMediaError``) arrays of the wrong dtype instead
of silently casting them: a float or int32 array here is a bug upstream.

What this module does not know: RTP, payload types, packetisation time.
``encode``/``decode`` take the RTP encoding name (``"PCMU"``/``"PCMA"``) only
to pick the table.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from media.errors import LocalMediaError

__all__ = [
    "ulaw_encode",
    "ulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "encode",
    "decode",
    "ULAW_SILENCE",
    "ALAW_SILENCE",
    "CODECS",
]

#: The code of linear 0 (μ-law 0xFF, A-law 0xD5): fill for silence frames.
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

# G.711 μ-law: bias 0x84 on the 16-bit scale (33 on the 14-bit scale), clip
# the 14-bit magnitude at 8159 so that magnitude + bias stays in 13 bits.
_ULAW_BIAS = 0x84
_ULAW_CLIP_14 = 8159


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    value = pcm >> 2  # 14-bit linear
    negative = value < 0
    value = np.where(negative, -value, value)
    value = np.minimum(value, _ULAW_CLIP_14) + (_ULAW_BIAS >> 2)
    # Segment = position of the highest set bit above bit 5 (0..7):
    # segment s covers biased magnitudes [2**(s+5), 2**(s+6)).
    seg = np.zeros_like(value)
    for s in range(1, 8):
        seg += value >= (1 << (s + 5))
    mantissa = (value >> (seg + 1)) & 0x0F
    code = (seg << 4) | mantissa
    # The clipped maximum 8159 + 33 = 8192 falls past segment 7: the
    # reference code returns the top code 0x7F there.
    code = np.where(value >= (1 << 13), 0x7F, code)
    mask = np.where(negative, 0x7F, 0xFF)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    value = pcm >> 3  # 13-bit linear
    negative = value < 0
    # A-law is symmetric around -0.5: magnitude of a negative sample is -v-1.
    value = np.where(negative, -value - 1, value)
    mask = np.where(negative, 0x55, 0xD5)
    # Segment s >= 1 covers [2**(s+4), 2**(s+5)); segment 0 covers [0, 32).
    seg = np.zeros_like(value)
    for s in range(1, 8):
        seg += value >= (1 << (s + 4))
    overflow = value >= (1 << 12)
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((value >> shift) & 0x0F)
    code = np.where(overflow, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _pair_table(decode: npt.NDArray[np.int16]) -> npt.NDArray[np.uint32]:
    # Two codes at once: index = the native uint16 view of a byte pair, value =
    # the two decoded int16 samples viewed as one uint32.  Half the gathers.
    pairs = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    return np.ascontiguousarray(decode[pairs]).reshape(-1).view(np.uint32)


_ULAW_ENCODE = _build_ulaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _build_alaw_encode()
_ALAW_DECODE = _build_alaw_decode()
_ULAW_DECODE2 = _pair_table(_ULAW_DECODE)
_ALAW_DECODE2 = _pair_table(_ALAW_DECODE)
for _t in (_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE, _ULAW_DECODE2, _ALAW_DECODE2):
    _t.setflags(write=False)
del _t


def _check(array: np.ndarray, dtype: type, what: str) -> None:
    if not isinstance(array, np.ndarray):
        raise LocalMediaError(f"{what} expects a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise LocalMediaError(f"{what} expects dtype {np.dtype(dtype).name}, got {array.dtype.name}")


def _encode(table: np.ndarray, pcm: np.ndarray, out: np.ndarray | None, what: str) -> np.ndarray:
    _check(pcm, np.int16, what)
    if out is not None:
        _check(out, np.uint8, f"{what} out=")
    return np.take(table, pcm.view(np.uint16), out=out)


def _decode(table: np.ndarray, pairs: np.ndarray, code: np.ndarray, out: np.ndarray | None, what: str) -> np.ndarray:
    _check(code, np.uint8, what)
    if out is not None:
        _check(out, np.int16, f"{what} out=")
    if code.ndim and code.shape[-1] % 2 == 0 and code.flags.c_contiguous:
        # Fast path (every RTP frame: 160 codes): gather byte pairs.
        if out is None:
            out = np.empty(code.shape, np.int16)
        if out.flags.c_contiguous and out.shape == code.shape:
            np.take(pairs, code.view(np.uint16), out=out.view(np.uint32))
            return out
    return np.take(table, code, out=out)


def ulaw_encode(pcm: npt.NDArray[np.int16], out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
    """Encode linear PCM to μ-law.

    Args:
        pcm: ``int16`` samples of any shape, e.g. ``(n_legs, 160)``.
        out: optional ``uint8`` array of the same shape to write into.

    Returns:
        ``uint8`` codes of the same shape (``out`` if given).

    Raises:
        LocalMediaError: ``pcm`` is not an ``int16`` array or ``out`` is not ``uint8``.
    """
    return _encode(_ULAW_ENCODE, pcm, out, "ulaw_encode")


def ulaw_decode(code: npt.NDArray[np.uint8], out: npt.NDArray[np.int16] | None = None) -> npt.NDArray[np.int16]:
    """Decode μ-law codes (``uint8``, any shape) to ``int16`` linear PCM.

    Raises:
        LocalMediaError: ``code`` is not a ``uint8`` array or ``out`` is not ``int16``.
    """
    return _decode(_ULAW_DECODE, _ULAW_DECODE2, code, out, "ulaw_decode")


def alaw_encode(pcm: npt.NDArray[np.int16], out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
    """Encode linear PCM to A-law; same contract as :func:`ulaw_encode`."""
    return _encode(_ALAW_ENCODE, pcm, out, "alaw_encode")


def alaw_decode(code: npt.NDArray[np.uint8], out: npt.NDArray[np.int16] | None = None) -> npt.NDArray[np.int16]:
    """Decode A-law codes to ``int16``; same contract as :func:`ulaw_decode`."""
    return _decode(_ALAW_DECODE, _ALAW_DECODE2, code, out, "alaw_decode")


#: RTP encoding name (RFC 3551 §6, static payload types 0 and 8) -> (encode, decode).
CODECS = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}


def _codec(name: str) -> tuple:
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise LocalMediaError(f"G.711 codec {name!r} is not PCMU or PCMA") from None


def encode(codec: str, pcm: npt.NDArray[np.int16], out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
    """Encode with the codec named by its RTP encoding name (``"PCMU"`` or ``"PCMA"``)."""
    return _codec(codec)[0](pcm, out)


def decode(codec: str, code: npt.NDArray[np.uint8] | bytes, out: npt.NDArray[np.int16] | None = None) -> npt.NDArray[np.int16]:
    """Decode with the codec named by its RTP encoding name.

    ``code`` may also be ``bytes`` (an RTP payload); it is viewed, not copied.
    """
    if isinstance(code, (bytes, bytearray, memoryview)):
        code = np.frombuffer(code, dtype=np.uint8)
    return _codec(codec)[1](code, out)
