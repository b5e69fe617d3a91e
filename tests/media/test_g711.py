"""G.711 tables against the stdlib ``audioop`` reference, bit for bit."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from media import g711
from media.errors import LocalMediaError

ALL_LINEAR = np.arange(65536, dtype=np.uint16).view(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


@pytest.mark.parametrize(
    "encoder, reference",
    [(g711.ulaw_encode, audioop.lin2ulaw), (g711.alaw_encode, audioop.lin2alaw)],
    ids=["ulaw", "alaw"],
)
def test_encode_all_65536_values_match_audioop(encoder, reference):
    expected = np.frombuffer(reference(ALL_LINEAR.tobytes(), 2), dtype=np.uint8)
    got = encoder(ALL_LINEAR)
    mismatches = np.flatnonzero(got != expected)
    assert mismatches.size == 0, f"first mismatch at linear {ALL_LINEAR[mismatches[:5]]}"


@pytest.mark.parametrize(
    "decoder, reference",
    [(g711.ulaw_decode, audioop.ulaw2lin), (g711.alaw_decode, audioop.alaw2lin)],
    ids=["ulaw", "alaw"],
)
def test_decode_all_256_codes_match_audioop(decoder, reference):
    expected = np.frombuffer(reference(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(decoder(ALL_CODES), expected)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_round_trip_is_idempotent_on_codes(codec):
    # decode(encode(decode(c))) == decode(c): every code is a fixed point.
    lin = g711.decode(codec, ALL_CODES)
    assert np.array_equal(g711.decode(codec, g711.encode(codec, lin)), lin)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_quantisation_error_is_bounded_relative(codec):
    lin = ALL_LINEAR.astype(np.int32)
    back = g711.decode(codec, g711.encode(codec, ALL_LINEAR)).astype(np.int32)
    big = np.abs(lin) > 1024
    # Log companding: the step is 1/16 of a segment's base value, so the
    # relative error stays under ~3.6 % above the linear region (PCMU peaks at
    # 3.5 % just past a segment start, PCMA at 3.125 %).
    assert np.max(np.abs(back[big] - lin[big]) / np.abs(lin[big])) < 0.036
    assert np.max(np.abs(back[~big] - lin[~big])) <= 64


def test_batch_shapes_preserved_and_rows_independent():
    rng = np.random.default_rng(7)
    batch = rng.integers(-32768, 32768, size=(1000, 160), dtype=np.int16)
    for enc, dec, ref in [
        (g711.ulaw_encode, g711.ulaw_decode, audioop.lin2ulaw),
        (g711.alaw_encode, g711.alaw_decode, audioop.lin2alaw),
    ]:
        codes = enc(batch)
        assert codes.shape == (1000, 160) and codes.dtype == np.uint8
        assert codes[17].tobytes() == ref(batch[17].tobytes(), 2)
        assert dec(codes).shape == (1000, 160)
    # Higher dimensions, scalars and empty arrays too.
    assert g711.ulaw_encode(np.zeros((2, 3, 160), np.int16)).shape == (2, 3, 160)
    assert g711.ulaw_encode(np.zeros((0, 160), np.int16)).shape == (0, 160)
    assert int(g711.ulaw_encode(np.array(0, np.int16))) == g711.ULAW_SILENCE
    assert int(g711.alaw_encode(np.array(0, np.int16))) == g711.ALAW_SILENCE


@pytest.mark.parametrize("shape", [(256,), (2, 128), (255,), (5, 3), (0,), (1,)])
def test_decode_fast_and_slow_paths_agree(shape):
    codes = np.resize(ALL_CODES, shape).astype(np.uint8)
    for decoder, reference in [(g711.ulaw_decode, audioop.ulaw2lin), (g711.alaw_decode, audioop.alaw2lin)]:
        expected = np.frombuffer(reference(codes.tobytes(), 2), dtype=np.int16).reshape(shape)
        np.testing.assert_array_equal(decoder(codes), expected)
        # Non-contiguous input and non-contiguous out= take the slow path.
        wide = np.zeros(shape[:-1] + (shape[-1] * 2,), np.uint8) if shape else codes
        if shape and shape[-1]:
            wide[..., ::2] = codes
            np.testing.assert_array_equal(decoder(wide[..., ::2]), expected)
            out = np.zeros(shape[:-1] + (shape[-1] * 2,), np.int16)
            decoder(codes, out=out[..., ::2])
            np.testing.assert_array_equal(out[..., ::2], expected)


def test_non_contiguous_views_are_handled():
    batch = np.arange(-16000, 16000, 100, dtype=np.int16).reshape(20, 16)
    view = batch[::2, 1::3]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(g711.alaw_encode(view), g711.alaw_encode(view.copy()))


def test_out_parameter_writes_in_place():
    pcm = np.full((4, 160), 1000, np.int16)
    out = np.empty((4, 160), np.uint8)
    assert g711.ulaw_encode(pcm, out=out) is out
    dec = np.empty((4, 160), np.int16)
    assert g711.ulaw_decode(out, out=dec) is dec
    assert abs(int(dec[0, 0]) - 1000) < 40


def test_decode_accepts_rtp_payload_bytes():
    payload = audioop.lin2alaw(np.arange(160, dtype=np.int16).tobytes(), 2)
    np.testing.assert_array_equal(
        g711.decode("pcma", payload), np.frombuffer(audioop.alaw2lin(payload, 2), np.int16)
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: g711.ulaw_encode(np.zeros(160, np.float32)), "ulaw_encode expects dtype int16, got float32"),
        (lambda: g711.alaw_encode([0, 1]), "alaw_encode expects a numpy array, got list"),
        (lambda: g711.ulaw_decode(np.zeros(160, np.int16)), "ulaw_decode expects dtype uint8, got int16"),
        (lambda: g711.ulaw_encode(np.zeros(4, np.int16), out=np.zeros(4, np.int16)), "out= expects dtype uint8"),
        (lambda: g711.encode("G722", np.zeros(4, np.int16)), "G.711 codec 'G722' is not PCMU or PCMA"),
    ],
)
def test_wrong_input_raises_clear_error(call, message):
    with pytest.raises(LocalMediaError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call()
