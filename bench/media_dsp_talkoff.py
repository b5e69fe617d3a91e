"""Long talk-off run for the in-band DTMF detector (run: ``python -m bench.media_dsp_talkoff``).

Speaks many sentences with several espeak-ng voices (English variants and
Mandarin), at three levels, through G.711 μ-law, and counts the digits the
detector (default configuration) reports: every one is a false digit.
Writes ``bench/results/media_dsp_talkoff.json``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np
import soundfile

from media import g711
from media.dtmf import DtmfDetector
from media.tts import Tts

ENGLISH = [
    "Thank you for calling. Your call may be recorded for quality and training purposes.",
    "Please enter your account number followed by the pound key.",
    "I'm sorry, I didn't understand that. Please try again.",
    "All of our agents are currently busy. Your estimated wait time is four minutes.",
    "To hear these options again, press nine. To return to the main menu, press star.",
    "The meeting has been moved to Thursday afternoon at half past three.",
    "Whistling winds and squeaky wheels; eee, ooo, aaa, a high singing tone.",
    "Seven hundred and seventy seven, eight hundred and fifty two, nine forty one.",
    "Hello? Hello! Can you hear me? The line is very noisy today.",
    "She said the shipment would arrive early next week, weather permitting.",
]
MANDARIN = [
    "感谢您的来电，本次通话可能会被录音。",
    "请输入您的账号，并以井号键结束。",
    "对不起，我没有听清楚，请再说一遍。",
    "目前所有座席都在忙，预计等待时间为四分钟。",
    "重听请按九，返回主菜单请按星号键。",
    "会议改到星期四下午三点半。",
    "你好？你好！你能听到我吗？今天线路很吵。",
    "货物预计下周初到达，具体要看天气情况。",
]
VOICES = {"en": ENGLISH, "en-us": ENGLISH, "en+f3": ENGLISH, "en+m3": ENGLISH, "en-gb+f4": ENGLISH,
          "cmn": MANDARIN, "cmn+f3": MANDARIN}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help="TTS cache dir (default: a temporary one)")
    parser.add_argument("--out", default="bench/results/media_dsp_talkoff.json")
    args = parser.parse_args()
    cache = pathlib.Path(args.cache or tempfile.mkdtemp(prefix="talkoff-"))
    tts = Tts(cache)
    t0 = time.perf_counter()
    seconds = 0.0
    false: list[dict] = []
    for voice, texts in VOICES.items():
        for text in texts:
            pcm, _ = soundfile.read(str(tts.synthesize(text, voice=voice)), dtype="int16")
            for gain_db in (0.0, -10.0, -20.0):
                x = np.clip(np.rint(pcm * 10 ** (gain_db / 20)), -32768, 32767).astype(np.int16)
                x = g711.ulaw_decode(g711.ulaw_encode(x))
                x = np.concatenate([x, np.zeros(-x.size % 160 + 480, np.int16)])
                det = DtmfDetector(1)
                for frame in x.reshape(-1, 1, 160):
                    for d in det.process(frame):
                        false.append({"voice": voice, "text": text, "gain_db": gain_db, "digit": d.digit,
                                      "duration_ms": d.duration_ms})
                seconds += x.size / 8000
    result = {"speech_seconds": round(seconds, 1), "false_digits": len(false), "details": false,
              "voices": list(VOICES), "wall_s": round(time.perf_counter() - t0, 1)}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"{result['speech_seconds']} s of speech, {len(false)} false digits -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
