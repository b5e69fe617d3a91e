"""Fixtures of the media DSP tests: real espeak-ng speech, SIPp's DTMF pcaps."""
from __future__ import annotations

import pathlib
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf

from media.resample import resample

SIPP_PCAP_DIR = pathlib.Path("/usr/share/sip-tester")

SPEECH = {
    "en": [
        "The quick brown fox jumps over the lazy dog while the telephone rings.",
        "Please hold, your call is important to us. An agent will be with you shortly.",
        "Press one for sales, two for support, or stay on the line for the operator.",
        "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    ],
    "en-us+f3": ["Beep beep, whistle and hum: eeeee ooooo aaaa, a high pitched singing voice."],
    "en+m7": ["Nine thousand four hundred and twelve dollars and sixty seven cents."],
    "cmn": [
        "您好，欢迎致电客户服务中心，请按一号键查询余额。",
        "我们的工作人员正在忙，请稍候，您的电话对我们很重要。",
        "今天天气很好，我们一起去公园散步吧。",
    ],
}


def espeak(text: str, voice: str, path: pathlib.Path) -> np.ndarray:
    """Speak ``text`` with espeak-ng; 8 kHz float samples on the int16 scale."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (Debian package espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, timeout=60)
    audio, rate = sf.read(str(path), dtype="float64")
    return resample(audio * 32767, rate)


@pytest.fixture(scope="session")
def speech_8k(tmp_path_factory) -> list[tuple[str, str, np.ndarray]]:
    """(voice, text, 8 kHz samples) for several English and Mandarin sentences."""
    tmp = tmp_path_factory.mktemp("speech")
    out = []
    for voice, texts in SPEECH.items():
        for i, text in enumerate(texts):
            out.append((voice, text, espeak(text, voice, tmp / f"{voice}-{i}.wav")))
    return out


def read_pcap_rtp(path: pathlib.Path) -> list[dict]:
    """RTP packets of a classic libpcap file (Ethernet/IPv4/UDP), header fields decoded."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic == 0xA1B2C3D4 else ">"
    off = 24
    packets = []
    while off + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from(endian + "IIII", data, off)
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        rtp = udp[8:]
        b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", rtp)
        cc = b0 & 0x0F
        packets.append(
            dict(time=sec + usec / 1e6, marker=bool(b1 & 0x80), payload_type=b1 & 0x7F,
                 sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=rtp[12 + 4 * cc :])
        )
    return packets


@pytest.fixture(scope="session")
def sipp_dtmf_pcaps() -> dict[str, list[dict]]:
    """SIPp's RFC 2833/4733 sample captures, digit -> packets."""
    names = {"0": "0", "1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "7",
             "8": "8", "9": "9", "*": "star", "#": "pound"}
    out = {}
    for digit, name in names.items():
        path = SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap"
        if not path.exists():
            pytest.fail(f"{path} missing (Debian package sip-tester)")
        out[digit] = read_pcap_rtp(path)
    return out
